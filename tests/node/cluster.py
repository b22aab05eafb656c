"""A real one-node Kubernetes cluster on this machine, for running the chart's own pods.

What runs (every binary from the pinned Kubernetes version of scripts/versions.env, built by
``scripts/setup-tools.sh kube-node``; containerd, runc and the CNI plugins from Debian):

- etcd on loopback; kube-apiserver on the address of a Linux bridge this harness creates
  (Node,RBAC authorization, ServiceAccount admission, ``--enable-aggregator-routing`` so that webhook
  calls go straight to the endpoints' pod addresses: no kube-proxy is needed for them);
- kube-controller-manager (``--use-service-account-credentials``) and kube-scheduler;
- containerd with its own root, state and socket under the work directory (no system containerd
  is touched), the bridge CNI plugin (host-local IPAM, ``isGateway``, no masquerade): pods live in
  network namespaces on that bridge, and no route or NAT leads off the machine;
- a kubelet (cgroupfs driver, its cgroups under a root of its own) registering one node;
- one DNAT rule, in a chain of its own, that sends the ``kubernetes`` Service address to the API
  server, so that in-cluster clients (the webhook in cluster mode, the chart's hooks) reach it.

Images cannot be pulled here: the ones the chart runs are built by ``scripts/build-images.sh`` and
imported into containerd; workloads pull from the test world's registry (plain HTTP on the bridge).

Teardown leaves the host as it was found: pods removed through the kubelet, then anything left
killed; mounts under the work directory unmounted; network namespaces the run made removed; the
cgroups removed deepest first; the bridge, the NAT chain and the sysctls the kubelet changes
restored. ``Node.stop`` runs even when a test fails (pytest fixture finalizer and atexit).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization

from tests.e2e.cluster import REPO, Process, api_client_from, free_port, start_process, tool, write_kubeconfig
from tests.support import pki

IMAGES_DIR = Path(os.environ.get("OSTIARY_TOOLS_DIR", REPO / ".tools")) / "images"
NODE_NAME = "ostiary-node"
# Sysctls the kubelet is known to change (real-cluster.md), and those the bridge plugin and the
# NAT rule depend on: recorded before the node starts, put back after it stops.
WATCHED_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/netfilter/nf_conntrack_max",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")


class NodeError(RuntimeError):
    pass


def run(argv: list[str], *, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and cp.returncode != 0:
        raise NodeError(
            f"{' '.join(argv)} failed (rc={cp.returncode}): {cp.stderr.strip() or cp.stdout.strip()}"
        )
    return cp


def _read_sysctl(name: str) -> str | None:
    try:
        return (Path("/proc/sys") / name).read_text().strip()
    except OSError:
        return None


def _write_sysctl(name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        (Path("/proc/sys") / name).write_text(value + "\n")


def _pick_subnet(prefix: str) -> str:
    """A /24 under `prefix` (e.g. "10.244") that no route of this machine uses."""
    routes = run(["ip", "-4", "route", "show", "table", "all"]).stdout
    for third in range(101, 250):
        net = f"{prefix}.{third}."
        if net not in routes:
            return f"{net}0/24"
    raise NodeError(f"no free /24 under {prefix}")


def image_archive(name: str) -> Path:
    """A docker-archive made by scripts/build-images.sh; fails (never skips) with the command to run."""
    path = IMAGES_DIR / f"{name}.tar"
    if not path.is_file():
        raise NodeError(f"{path} is missing: run `scripts/build-images.sh` (scripts/setup.sh does)")
    return path


def image_name(name: str) -> str:
    """The image reference scripts/build-images.sh recorded for `name` (IMAGES_DIR/images.env)."""
    env = IMAGES_DIR / "images.env"
    key = f"{name.upper()}_IMAGE="
    if env.is_file():
        for line in env.read_text().splitlines():
            if line.startswith(key):
                return line[len(key) :].strip()
    raise NodeError(f"no {key[:-1]} in {env}: run `scripts/build-images.sh` (scripts/setup.sh does)")


@dataclass(eq=False)
class Node:
    workdir: Path
    registries: tuple[str, ...] = ()  # plain-HTTP registries (host:port) the node may pull from
    images: tuple[str, ...] = ("pause", "ostiary", "opa", "kubectl")
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    processes: list[Process] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)
    url: str = ""
    startup_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.bridge = f"ostbr{self.run_id[:5]}"
        self.chain = f"OSTIARY-NODE-{self.run_id.upper()}"
        self.pod_subnet = _pick_subnet("10.244")
        self.bridge_ip = self.pod_subnet.rsplit(".", 1)[0] + ".1"
        self.service_subnet = _pick_subnet("10.96")
        self.service_ip = self.service_subnet.rsplit(".", 1)[0] + ".1"
        self.cgroup_parent = f"ostiary-node-{self.run_id}"
        self._sysctls: dict[str, str] = {}
        self._netns_before: set[str] = set()
        self._created: list[str] = []  # what to undo, in order of creation
        self.ca = pki.CA.create("Ostiary node CA")
        self.api_port = 0

    # ------------------------------------------------------------------ paths

    @property
    def pause_image(self) -> str:
        return image_name("pause")

    @property
    def socket(self) -> Path:
        return self.workdir / "containerd" / "containerd.sock"

    def kubeconfig(self, user: str = "admin") -> Path:
        return write_kubeconfig(
            self.workdir / f"kubeconfig-{user}.yaml", self.url, self.ca_file, self.tokens[user]
        )

    def api_client(self, user: str = "admin"):
        return api_client_from(self.kubeconfig(user))

    def kubectl(self, *args: str, check: bool = True, timeout: float = 60, input: str | None = None):
        return run(
            [tool("kubectl"), f"--kubeconfig={self.kubeconfig()}", *args],
            check=check,
            timeout=timeout,
            input=input,
        )

    # ------------------------------------------------------------------ start

    def start(self, timeout: float = 120.0) -> Node:
        begin = time.monotonic()
        binaries = {
            n: tool(n)
            for n in (
                "etcd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kubelet",
                "kube-proxy",
            )
        }
        archives = [image_archive(name) for name in self.images]
        self.workdir.mkdir(parents=True, exist_ok=True)
        _LIVE.add(self)
        try:
            self._record_host()
            self._network()
            self._control_plane(binaries)
            self._containerd()
            for archive in archives:
                run(
                    [
                        "ctr",
                        "-a",
                        str(self.socket),
                        "-n",
                        "k8s.io",
                        "images",
                        "import",
                        "--no-unpack",
                        str(archive),
                    ],
                    timeout=180,
                )
            self._kubelet(binaries["kubelet"])
            self._controllers(binaries)
            self._kube_proxy(binaries["kube-proxy"])
            self._wait_node_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - begin
        return self

    def _record_host(self) -> None:
        for name in WATCHED_SYSCTLS:
            value = _read_sysctl(name)
            if value is not None:
                self._sysctls[name] = value
        self._netns_before = set(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else set()
        self._chains_before = {key: _chains(*key) for key in _TABLES}

    def _network(self) -> None:
        run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self._created.append("bridge")
        run(["ip", "addr", "add", f"{self.bridge_ip}/24", "dev", self.bridge])
        run(["ip", "link", "set", self.bridge, "up"])
        _write_sysctl("net/ipv4/ip_forward", "1")  # the bridge plugin's gateway routes pod <-> host

    def _control_plane(self, binaries: dict[str, str]) -> None:
        certs = self.workdir / "certs"
        certs.mkdir(exist_ok=True)
        self.ca_file = pki.write(certs / "ca.crt", pki.cert_pem(self.ca.cert), 0o644)
        pki.write(certs / "ca.key", pki.private_key_pem(self.ca.key))
        key, cert = self.ca.issue_server(
            (
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ("127.0.0.1", self.bridge_ip, self.service_ip),
        )
        pki.write(certs / "apiserver.crt", pki.cert_pem(cert))
        pki.write(certs / "apiserver.key", pki.private_key_pem(key))
        sa_key = pki.new_ec_key()
        pki.write(
            certs / "sa.key",
            sa_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            ),
        )
        pki.write(certs / "sa.pub", pki.public_key_pem(sa_key))
        users = {
            "admin": ("admin", "system:masters"),
            "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
            "controller-manager": ("system:kube-controller-manager", ""),
            "scheduler": ("system:kube-scheduler", ""),
            "kube-proxy": ("system:kube-proxy", ""),
        }
        self.tokens = {user: secrets.token_hex(16) for user in users}
        pki.write(
            certs / "tokens.csv",
            "".join(f'{self.tokens[u]},{name},{u}-uid,"{group}"\n' for u, (name, group) in users.items()),
        )
        client_port, peer_port = free_port(), free_port()
        self.processes.append(
            start_process(
                "etcd",
                [
                    binaries["etcd"],
                    "--name=node",
                    f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls=http://127.0.0.1:{client_port}",
                    f"--advertise-client-urls=http://127.0.0.1:{client_port}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-cluster=node=http://127.0.0.1:{peer_port}",
                    "--unsafe-no-fsync",
                    "--log-level=warn",
                ],
                self.workdir,
            )
        )
        self.api_port = free_port()
        self.processes.append(
            start_process(
                "kube-apiserver",
                [
                    binaries["kube-apiserver"],
                    f"--etcd-servers=http://127.0.0.1:{client_port}",
                    f"--bind-address={self.bridge_ip}",
                    f"--advertise-address={self.bridge_ip}",
                    f"--secure-port={self.api_port}",
                    f"--cert-dir={certs}",
                    f"--tls-cert-file={certs / 'apiserver.crt'}",
                    f"--tls-private-key-file={certs / 'apiserver.key'}",
                    f"--client-ca-file={self.ca_file}",
                    f"--token-auth-file={certs / 'tokens.csv'}",
                    f"--service-account-key-file={certs / 'sa.pub'}",
                    f"--service-account-signing-key-file={certs / 'sa.key'}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-cluster-ip-range={self.service_subnet}",
                    "--authorization-mode=Node,RBAC",
                    "--enable-admission-plugins=NodeRestriction",
                    "--enable-aggregator-routing=true",
                    "--enable-priority-and-fairness=false",
                    "--v=1",
                ],
                self.workdir,
            )
        )
        self.url = f"https://{self.bridge_ip}:{self.api_port}"
        self._wait(lambda: self._api_ok(), 90, "kube-apiserver /readyz")
        # In-cluster clients dial the `kubernetes` Service: one DNAT rule, in a chain of our own.
        run(["iptables", "-t", "nat", "-N", self.chain])
        self._created.append("chain")
        run(["iptables", "-t", "nat", "-I", "PREROUTING", "-j", self.chain])
        run(["iptables", "-t", "nat", "-I", "OUTPUT", "-j", self.chain])
        run(
            [
                "iptables",
                "-t",
                "nat",
                "-A",
                self.chain,
                "-d",
                self.service_ip,
                "-p",
                "tcp",
                "--dport",
                "443",
                "-j",
                "DNAT",
                "--to-destination",
                f"{self.bridge_ip}:{self.api_port}",
            ]
        )

    def _api_ok(self) -> str | None:
        import ssl
        import urllib.request

        request = urllib.request.Request(
            f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.tokens['admin']}"}
        )
        try:
            with urllib.request.urlopen(
                request, context=ssl.create_default_context(cafile=str(self.ca_file)), timeout=5
            ):
                return None
        except Exception as exc:  # noqa: BLE001 - not up yet
            return str(exc)

    def _containerd(self) -> None:
        d = self.workdir / "containerd"
        (d / "certs.d").mkdir(parents=True, exist_ok=True)
        cni = self.workdir / "cni"
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        (cni / "net.d" / "10-ostiary.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": f"ostiary-{self.run_id}",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": self.bridge,
                            "isGateway": True,
                            "ipMasq": False,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": self.pod_subnet, "gateway": self.bridge_ip}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(cni / "ipam"),
                            },
                        },
                        {"type": "loopback"},
                    ],
                }
            )
        )
        for host in self.registries:
            self.add_registry(host)
        pause = image_name("pause")
        (d / "config.toml").write_text(
            f"""version = 2
root = "{d / "root"}"
state = "{d / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{d / "containerd-ttrpc.sock"}"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d / "opt"}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni / "net.d"}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d / "certs.d"}"
"""
        )
        self.processes.append(
            start_process("containerd", ["containerd", "--config", str(d / "config.toml")], self.workdir)
        )
        self._wait(
            lambda: (
                None
                if run(["ctr", "-a", str(self.socket), "version"], check=False, timeout=10).returncode == 0
                else "not answering"
            ),
            30,
            "containerd",
        )

    def add_registry(self, host: str) -> None:
        """Let the node pull from a plain-HTTP registry (containerd reads certs.d at each pull)."""
        folder = self.workdir / "containerd" / "certs.d" / host
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "hosts.toml").write_text(
            f'server = "http://{host}"\n\n[host."http://{host}"]\n  capabilities = ["pull", "resolve"]\n'
        )

    def _kubelet(self, kubelet: str) -> None:
        for controller in self._cgroup_controllers():
            (controller / self.cgroup_parent).mkdir(exist_ok=True)
        self._created.append("cgroups")
        k = self.workdir / "kubelet"
        k.mkdir(exist_ok=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_parent}",
            "failCgroupV1": False,
            "failSwapOn": False,
            "makeIPTablesUtilChains": False,
            "readOnlyPort": 0,
            "healthzPort": 0,
            "port": free_port(),
            "address": self.bridge_ip,
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}},
            "authorization": {"mode": "AlwaysAllow"},
            "podLogsDir": str(self.workdir / "pod-logs"),
            "serializeImagePulls": False,
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "resolvConf": "/etc/resolv.conf",
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
            "nodeStatusUpdateFrequency": "4s",
            "registerNode": True,
            "localStorageCapacityIsolation": False,
        }
        (k / "config.yaml").write_text(yaml.safe_dump(config))
        self.processes.append(
            start_process(
                "kubelet",
                [
                    kubelet,
                    f"--config={k / 'config.yaml'}",
                    f"--kubeconfig={self.kubeconfig('kubelet')}",
                    f"--root-dir={k / 'root'}",
                    f"--cert-dir={k / 'pki'}",
                    f"--hostname-override={NODE_NAME}",
                    f"--node-ip={self.bridge_ip}",
                    "--v=1",
                ],
                self.workdir,
            )
        )

    def _controllers(self, binaries: dict[str, str]) -> None:
        certs = self.workdir / "certs"
        self.processes.append(
            start_process(
                "kube-controller-manager",
                [
                    binaries["kube-controller-manager"],
                    f"--kubeconfig={self.kubeconfig('controller-manager')}",
                    "--use-service-account-credentials=true",
                    f"--service-account-private-key-file={certs / 'sa.key'}",
                    f"--root-ca-file={self.ca_file}",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service,-route",
                    "--v=1",
                ],
                self.workdir,
            )
        )
        self.processes.append(
            start_process(
                "kube-scheduler",
                [
                    binaries["kube-scheduler"],
                    f"--kubeconfig={self.kubeconfig('scheduler')}",
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    f"--secure-port={free_port()}",
                    "--v=1",
                ],
                self.workdir,
            )
        )

    def _kube_proxy(self, binary: str) -> None:
        """Services for pods (e.g. the chart's `helm test` Pod calling the webhook's Service).
        --masquerade-all: without br_netfilter a pod's reply to another pod on the same bridge would
        bypass the un-DNAT; conntrack limits and timeouts are left as they are (0)."""
        self._created.append("kube-proxy")
        self.processes.append(
            start_process(
                "kube-proxy",
                [
                    binary,
                    f"--kubeconfig={self.kubeconfig('kube-proxy')}",
                    "--proxy-mode=iptables",
                    f"--hostname-override={NODE_NAME}",
                    f"--cluster-cidr={self.pod_subnet}",
                    "--masquerade-all",
                    "--conntrack-max-per-core=0",
                    "--conntrack-tcp-timeout-established=0",
                    "--conntrack-tcp-timeout-close-wait=0",
                    f"--metrics-bind-address=127.0.0.1:{free_port()}",
                    f"--healthz-bind-address=127.0.0.1:{free_port()}",
                    "--v=1",
                ],
                self.workdir,
            )
        )

    def _wait_node_ready(self, timeout: float) -> None:
        def ready() -> str | None:
            out = self.kubectl("get", "node", NODE_NAME, "-o", "json", check=False)
            if out.returncode != 0:
                return out.stderr.strip()
            node = json.loads(out.stdout)
            conditions = {c["type"]: c["status"] for c in node["status"].get("conditions", [])}
            if conditions.get("Ready") != "True":
                return f"conditions {conditions}"
            if any(t.get("key") == "node.kubernetes.io/not-ready" for t in node["spec"].get("taints", [])):
                return "still tainted not-ready"
            sa = self.kubectl("get", "serviceaccount", "default", "-n", "default", check=False)
            return None if sa.returncode == 0 else "no default ServiceAccount yet"

        self._wait(ready, timeout, "node Ready")

    def _wait(self, check, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        last: str | None = "not tried"
        while time.monotonic() < deadline:
            for proc in self.processes:
                if proc.popen.poll() is not None:
                    raise NodeError(
                        f"{proc.name} exited with {proc.popen.returncode} while waiting for {what}:\n{proc.tail()}"
                    )
            last = check()
            if last is None:
                return
            time.sleep(0.5)
        raise NodeError(
            f"{what}: not after {timeout:.0f}s ({last})\n"
            + "\n".join(f"--- {p.name}\n{p.tail(15)}" for p in self.processes)
        )

    # ------------------------------------------------------------------ pods

    def containerd_tasks(self) -> list[str]:
        out = run(
            ["ctr", "-a", str(self.socket), "-n", "k8s.io", "tasks", "ls", "-q"], check=False, timeout=20
        )
        return out.stdout.split() if out.returncode == 0 else []

    def describe(self, namespace: str) -> str:
        """Pods, events and the tail of every container log of a namespace: what a failed wait shows."""
        parts = [
            self.kubectl("get", "pods", "-n", namespace, "-o", "wide", check=False).stdout,
            self.kubectl("get", "events", "-n", namespace, "--sort-by=.lastTimestamp", check=False).stdout[
                -4000:
            ],
        ]
        for folder in sorted((self.workdir / "pod-logs").glob(f"{namespace}_*")):
            for container in sorted(p for p in folder.iterdir() if p.is_dir()):
                for log in sorted(container.glob("*.log")):
                    lines = log.read_text(errors="replace").splitlines()[-15:]
                    parts.append(
                        f"--- {folder.name.split('_')[1]}/{container.name}/{log.name}\n" + "\n".join(lines)
                    )
        return "\n".join(parts)

    def kill_container(self, namespace: str, pod: str, container: str) -> None:
        """SIGKILL a container's process through containerd, as a crash would: the kubelet restarts
        it in the same pod (its emptyDir volumes kept)."""
        labels = (
            f'labels."io.kubernetes.pod.namespace"=={namespace},labels."io.kubernetes.pod.name"=={pod},'
            f'labels."io.kubernetes.container.name"=={container}'
        )
        ids = run(
            ["ctr", "-a", str(self.socket), "-n", "k8s.io", "containers", "ls", "-q", labels]
        ).stdout.split()
        running = set(self.containerd_tasks())
        targets = [i for i in ids if i in running]
        if not targets:
            raise NodeError(f"no running container {container} of {namespace}/{pod} in containerd")
        for container_id in targets:
            run(
                [
                    "ctr",
                    "-a",
                    str(self.socket),
                    "-n",
                    "k8s.io",
                    "tasks",
                    "kill",
                    "-s",
                    "SIGKILL",
                    container_id,
                ]
            )

    def emptydir_files(self, pod_uid: str) -> list[str]:
        """Files in a pod's emptyDir volumes, read on the node (volume/relative path)."""
        base = self.workdir / "kubelet" / "root" / "pods" / pod_uid / "volumes" / "kubernetes.io~empty-dir"
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())

    def logs(self, namespace: str, pod: str, container: str | None = None, previous: bool = False) -> str:
        """A container's log, read from the kubelet's log files (the API's log endpoint would need
        kubelet serving authentication, which this node does not set up)."""
        base = self.workdir / "pod-logs"
        texts = []
        for folder in sorted(base.glob(f"{namespace}_{pod}_*")):
            for sub in sorted(folder.iterdir()):
                if container and sub.name != container:
                    continue
                files = sorted(sub.glob("*.log"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
                if previous and len(files) > 1:
                    files = files[-2:-1]
                elif files:
                    files = files[-1:]
                texts.extend(f.read_text(errors="replace") for f in files)
        return "".join(texts)

    # ------------------------------------------------------------------ stop

    def stop(self) -> None:
        """Every step runs whatever failed before it: the host must be left as it was found."""
        steps = [
            self._remove_pods,
            self._stop_processes,
            self._kill_leftover_containers,
            self._unmount,
            self._remove_netns,
            self._remove_cgroups,
            self._remove_network,
            self._restore_sysctls,
        ]
        errors = []
        for step in steps:
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - teardown goes on; report all at the end
                errors.append(f"{step.__name__}: {exc}")
        _LIVE.discard(self)
        shutil.rmtree(self.workdir, ignore_errors=True)
        if errors:
            raise NodeError("teardown: " + "; ".join(errors))

    def _remove_pods(self) -> None:
        """Delete every pod through the API so that the kubelet tears sandboxes down the normal way
        (CNI DEL, network namespace removal, unmounts)."""
        if not self.url or not any(p.name == "kubelet" and p.popen.poll() is None for p in self.processes):
            return
        for name in ("kube-controller-manager", "kube-scheduler"):  # nothing recreates what is deleted
            for proc in [p for p in self.processes if p.name == name]:
                proc.stop(grace=5)
                self.processes.remove(proc)
        self.kubectl(
            "delete", "validatingwebhookconfigurations,mutatingwebhookconfigurations", "--all", check=False
        )
        self.kubectl(
            "delete",
            "pods",
            "--all",
            "--all-namespaces",
            "--grace-period=0",
            "--force",
            "--wait=false",
            check=False,
        )
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and self.containerd_tasks():
            time.sleep(0.5)

    def _stop_processes(self) -> None:
        for proc in reversed(self.processes):
            proc.stop(grace=10)
        self.processes.clear()

    def _kill_leftover_containers(self) -> None:
        """Shims and container processes outlive containerd: kill every process in our cgroups and
        every shim started for our socket."""
        for controller in self._cgroup_controllers():
            base = controller / self.cgroup_parent
            for procs in base.rglob("cgroup.procs") if base.is_dir() else []:
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
        marker = str(self.workdir)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if "containerd-shim" in cmdline and marker in cmdline:
                    os.kill(int(entry.name), signal.SIGKILL)
        time.sleep(0.5)

    def _mounts_under(self, prefixes: tuple[str, ...]) -> list[str]:
        points = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefixes):
                points.append(point)
        return points

    def _unmount(self) -> None:
        prefixes = (str(self.workdir),)
        for _ in range(5):
            points = self._mounts_under(prefixes)
            if not points:
                return
            for point in sorted(points, key=lambda p: p.count("/"), reverse=True):
                run(["umount", "-l", point], check=False)
        left = self._mounts_under(prefixes)
        if left:
            raise NodeError(f"still mounted: {left[:5]}")

    def _remove_netns(self) -> None:
        folder = Path("/var/run/netns")
        if not folder.is_dir():
            return
        for name in set(os.listdir(folder)) - self._netns_before:
            path = folder / name
            run(["umount", "-l", str(path)], check=False)
            with contextlib.suppress(OSError):
                path.unlink()

    @staticmethod
    def _cgroup_controllers() -> list[Path]:
        if not CGROUP_ROOT.is_dir():
            return []
        return [
            p
            for p in CGROUP_ROOT.iterdir()
            if p.is_dir() and not p.is_symlink() and (p / "cgroup.procs").exists()
        ]

    def _remove_cgroups(self) -> None:
        if "cgroups" not in self._created:
            return
        left = []
        for controller in self._cgroup_controllers():
            base = controller / self.cgroup_parent
            if not base.is_dir():
                continue
            folders = sorted(
                (p for p in base.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
            )
            for folder in [*folders, base]:
                for _ in range(20):
                    try:
                        folder.rmdir()
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.1)
                else:
                    left.append(str(folder))
        if left:
            raise NodeError(f"cgroups left: {left[:5]}")

    def _remove_network(self) -> None:
        if "chain" in self._created:
            for hook in ("PREROUTING", "OUTPUT"):
                run(["iptables", "-t", "nat", "-D", hook, "-j", self.chain], check=False)
            run(["iptables", "-t", "nat", "-F", self.chain], check=False)
            run(["iptables", "-t", "nat", "-X", self.chain], check=False)
        if "kube-proxy" in self._created:
            run([tool("kube-proxy"), "--cleanup"], check=False, timeout=60)
            for key in _TABLES:  # what --cleanup leaves (canary and hint chains): ours only
                _remove_chains(*key, _chains(*key) - self._chains_before.get(key, set()))
        if "bridge" in self._created:
            run(["ip", "link", "del", self.bridge], check=False)
        # veth ends of pods the kubelet could not tear down go with their namespaces; nothing else.

    def _restore_sysctls(self) -> None:
        for name, value in self._sysctls.items():
            if _read_sysctl(name) != value:
                _write_sysctl(name, value)


_TABLES = [(cmd, table) for cmd in ("iptables", "ip6tables") for table in ("filter", "nat", "mangle")]


def _chains(command: str, table: str) -> set[str]:
    out = run([f"{command}-save", "-t", table], check=False).stdout
    return {line[1:].split()[0] for line in out.splitlines() if line.startswith(":")}


def _remove_chains(command: str, table: str, chains: set[str]) -> None:
    """Delete every rule that jumps to one of `chains`, then the chains themselves."""
    if not chains:
        return
    import shlex

    for line in run([f"{command}-save", "-t", table], check=False).stdout.splitlines():
        if line.startswith("-A "):
            words = shlex.split(line)
            if words[1] not in chains and "-j" in words and words[words.index("-j") + 1] in chains:
                run([command, "-t", table, "-D", *words[1:]], check=False)
    for chain in chains:
        run([command, "-t", table, "-F", chain], check=False)
    for chain in chains:
        run([command, "-t", table, "-X", chain], check=False)


_LIVE: set[Node] = set()


@atexit.register
def _stop_all_at_exit() -> None:
    for node in list(_LIVE):
        with contextlib.suppress(Exception):
            node.stop()


def host_snapshot() -> dict[str, object]:
    """What a node run must leave unchanged (compared by the teardown test)."""
    return {
        "sysctls": {name: _read_sysctl(name) for name in WATCHED_SYSCTLS},
        "links": sorted(
            line.split(":")[1].strip().split("@")[0] for line in run(["ip", "-o", "link"]).stdout.splitlines()
        ),
        "nat": sorted(
            line
            for line in run(["iptables-save", "-t", "nat"]).stdout.splitlines()
            if not line.startswith(("#", ":"))
        ),
        "chains": {f"{cmd} {table}": sorted(_chains(cmd, table)) for cmd, table in _TABLES},
        "netns": sorted(os.listdir("/var/run/netns")) if os.path.isdir("/var/run/netns") else [],
        "kubepods_cgroups": sorted(str(p) for p in CGROUP_ROOT.glob("*/ostiary-node-*"))
        + sorted(str(p) for p in CGROUP_ROOT.glob("*/kubepods*")),
        "processes": sorted(
            name
            for name in (
                "kubelet",
                "containerd",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kube-proxy",
                "etcd",
            )
            if subprocess.run(["pgrep", "-x", name], capture_output=True).returncode == 0
        ),
    }
