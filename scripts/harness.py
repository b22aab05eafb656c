"""What the benchmark and soak scripts share: ports, process trees and /proc figures, starting a
server and waiting for it, the Notary test world, policy documents and AdmissionReview bodies.

Scripts put the repository on sys.path and import it as `scripts.harness`. Nothing here asserts:
a server that does not come up ends the script with its log's tail (SystemExit), never a hang.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypedDict

import requests

from app.admission.input import input_config, read_request
from app.admission.input import opa_input as opa_input_of
from tests.support.procs import die_with_parent
from tests.support.serve import cluster_policy
from tests.support.world import NotaryWorld, PushedImage, Scenario, build_scenario, free_port

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_NS = "ostiary-system"
OSTIARY = Path(sys.executable).parent / "ostiary"  # the console script of the running virtualenv
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Every Ostiary under load runs as the chart runs it: OPA beside it, guarded by a token, with the
# chart's GOGC; this is the token.
OPA_TOKEN = secrets.token_urlsafe(24)
OPA_AUTH = {"Authorization": f"Bearer {OPA_TOKEN}"}
OPA_GOGC = "400"  # helm/ostiary/values.yaml opa.gogc

__all__ = ["cluster_policy", "free_port"]  # re-exported: the tests' one policy builder and free-port helper

Doc = dict[str, Any]  # a JSON document: a policy, an AdmissionReview, OPA's input


# ---------------------------------------------------------------------- /proc


class ProcStats(TypedDict):
    pid: int
    name: str
    rss_mib: float
    threads: int
    fds: int


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (from /proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                todo.extend(int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split())
        except OSError:
            pass
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def rss_mib(pid: int) -> float:
    """Resident memory in MiB; 0 when the process is gone."""
    try:
        return int(_status(pid)["VmRSS"].split()[0]) / 1024
    except (OSError, KeyError):
        return 0.0


def is_opa(pid: int) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except OSError:
        return False
    return Path(argv0.decode(errors="replace")).name == "opa"


def proc_name(pid: int) -> str:
    """`opa`, or the process's comm for the Python servers (gunicorn names its master and worker)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        exe = Path(argv[0].decode(errors="replace")).name
        if exe == "opa":
            return "opa"
        text = b" ".join(argv).decode(errors="replace")
        if "gunicorn" in text or "ostiary" in text or "bench_floor_app" in text:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        return exe
    except OSError:
        return "?"


def proc_stats(pid: int) -> ProcStats | None:
    """RSS, threads and open files of one process, `name` "opa" or "ostiary"; None when it is gone."""
    try:
        fields = _status(pid)
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    return {
        "pid": pid,
        "name": "opa" if is_opa(pid) else "ostiary",
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
        "fds": fds,
    }


def machine() -> dict[str, object]:
    """Cores, CPU model, memory, kernel, Python and the load average now."""
    model = ""
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "mem_gib": round(int(mem) / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def percentile(ordered: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, nearest rank below; 0 for none."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------- starting and stopping


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def start(argv: Sequence[str], log: Path, cwd: Path | None = None) -> subprocess.Popen:
    """A server in its own session (so `stop` ends its whole tree), output appended to `log`, killed
    with this script when started from the main thread (tests/support/procs.py)."""
    with open(log, "ab") as fh:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - main thread only
        )


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    """Until `url` answers 200; SystemExit with the log's tail when the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{log.stem} exited (rc={proc.returncode}); log {log}:\n{tail(log)}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop(proc)
    raise SystemExit(f"{url} not ready after {timeout:.0f}s; log {log}:\n{tail(log)}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group, SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


class Server:
    """A started server's process tree, split into the Ostiary (or floor) part and the OPA part."""

    def __init__(
        self, name: str, argv: Sequence[str], ready_url: str, port: int, workdir: Path, timeout: float = 90.0
    ) -> None:
        self.name, self.port = name, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = workdir / f"{name}.log"
        self.proc = start(argv, self.log, cwd=workdir)
        wait_http(ready_url, self.proc, self.log, timeout)

    def pids(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {"server": [], "opa": []}
        for pid in descendants(self.proc.pid):
            groups["opa" if is_opa(pid) else "server"].append(pid)
        return groups

    def cpu(self) -> dict[str, float]:
        return {k: sum(cpu_seconds(p) for p in v) for k, v in self.pids().items()}

    def rss(self) -> list[dict[str, object]]:
        return [
            {"pid": p, "name": proc_name(p), "rss_mib": round(rss_mib(p), 1)}
            for p in descendants(self.proc.pid)
        ]

    def stats(self) -> list[ProcStats]:
        return [s for s in (proc_stats(p) for p in descendants(self.proc.pid)) if s]

    def worker_pid(self) -> int | None:
        kids = [p for p in self.pids()["server"] if p != self.proc.pid]
        return kids[0] if kids else None

    def opa_url(self) -> str | None:
        for pid in self.pids()["opa"]:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            if "--addr" in argv:
                return "http://" + argv[argv.index("--addr") + 1]
        return None

    def close(self) -> None:
        stop(self.proc)


def ostiary_serve(
    name: str,
    workdir: Path,
    policy_dir: Path,
    *flags: str,
    ca_file: str | None = None,
    log_level: str | None = None,
    timeout: float = 90.0,
) -> Server:
    """`ostiary serve` the way the README starts it (its own OPA), ready on a free loopback port;
    its output in WORKDIR/NAME.log."""
    port = free_port()
    argv = [str(OSTIARY), *(["--log-level", log_level] if log_level else []), "serve"]
    argv += ["--policy-dir", str(policy_dir), "--listen", f"127.0.0.1:{port}"]
    argv += [*(["--ca-file", ca_file] if ca_file else []), *flags]
    return Server(name, argv, f"http://127.0.0.1:{port}/readyz", port, workdir, timeout=timeout)


# ---------------------------------------------------------------------- the world


def start_world() -> tuple[NotaryWorld, Scenario]:
    """A notary-server + notary-signer + docker-registry with build_scenario's images."""
    world = NotaryWorld()
    world.start()
    try:
        return world, build_scenario(world)
    except BaseException:
        world.stop()
        raise


def sign_many(world: NotaryWorld, names: Iterable[str]) -> list[str]:
    """Push each repository's v1, then init + snapshot-key rotation + addhash with the real notary
    CLI, 3 at a time (one repository's keys never meet another's; the root key exists already)."""
    pushed = [world.push(n, "v1", seed=n) for n in names]

    def sign(img: PushedImage) -> None:
        gun = world.gun(img.repo)
        world.notary("init", gun, "-p")
        world.notary("key", "rotate", gun, "snapshot", "-r")
        world.notary("addhash", gun, "v1", str(img.size), "--sha256", img.digest.split(":", 1)[1], "-p")

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(sign, pushed))
    return [world.image_ref(i.repo, "v1") for i in pushed]


# ---------------------------------------------------------------------- policy documents


def trust_policy(server: str, *signers: str) -> Doc:
    """A repository entry's policy: Notary trust from `server`, signed by each named signer Secret."""
    trust: Doc = {"enabled": True, "trustServer": server}
    if signers:
        trust["signerSecrets"] = [{"name": s} for s in signers]
    return {"trust": trust}


def image_policy(name: str, namespace: str, repositories: list[Doc]) -> Doc:
    return {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ImagePolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"repositories": repositories},
    }


def signer_secret(name: str, namespace: str, public_pem: str) -> Doc:
    """A signer Secret (name and public key). An ImagePolicy reads signer Secrets from its own
    namespace, a ClusterImagePolicy from the system one."""

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"name": b64(name), "publicKey": b64(public_pem)},
    }


def write_policies(directory: Path, docs: dict[str, Doc]) -> None:
    """Make `directory` hold exactly `docs` (file name -> document), each file replaced atomically,
    so a server watching it never reads half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.json"):
        if old.name not in docs:
            old.unlink()
    for name, doc in docs.items():
        tmp = directory / f".{name}.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.rename(directory / name)


# ---------------------------------------------------------------------- AdmissionReviews


def _container(i: int, image: str, rich: bool) -> Doc:
    if not rich:
        return {"name": f"c{i}", "image": image}
    return {
        "name": f"c{i}",
        "image": image,
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
        "ports": [{"containerPort": 8080 + i}],
        "env": [{"name": "MODE", "value": "bench"}],
    }


def _workload(kind: str, meta: Doc, spec: Doc, labels: Doc, rich: bool) -> tuple[Doc, str, str]:
    """(object, API group, resource) of a Pod, CronJob or (anything else) Deployment around `spec`."""
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}, "", "pods"
    if kind == "CronJob":
        if rich:
            spec["restartPolicy"] = "OnFailure"
        job = {"jobTemplate": {"spec": {"template": {"spec": spec}}}}
        obj = {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": meta,
            "spec": {"schedule": "*/5 * * * *" if rich else "* * * * *", **job},
        }
        return obj, "batch", "cronjobs"
    deploy: Doc = {
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": spec},
    }
    if rich:
        deploy = {"replicas": 3, **deploy}
    return (
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": deploy},
        "apps",
        "deployments",
    )


def review(
    kind: str, namespace: str, images: Sequence[str], *, name: str = "bench", rich: bool = True
) -> Doc:
    """An AdmissionReview (CREATE, its own uid) of a Pod, CronJob or Deployment running `images`.
    `rich`: containers with resources, ports and env, labels, a controller as the user (the
    benchmark's realistic body); otherwise the bare minimum (soak, scale)."""
    containers = [_container(i, image, rich) for i, image in enumerate(images)]
    spec: Doc = {"containers": containers}
    labels: Doc = {"app": name}
    meta: Doc = {"name": name, "namespace": namespace}
    user: Doc = {"username": name}
    if rich:
        spec |= {"serviceAccountName": "default", "restartPolicy": "Always"}
        labels["team"] = namespace
        meta["labels"] = labels
        user = {
            "username": "system:serviceaccount:kube-system:deployment-controller",
            "groups": ["system:serviceaccounts", "system:authenticated"],
        }
    obj, group, resource = _workload(kind, meta, spec, labels, rich)
    gvk = {"group": group, "version": "v1", "kind": kind}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": gvk,
            "resource": {**gvk, "resource": resource},
            "namespace": namespace,
            "operation": "CREATE",
            "name": name,
            "userInfo": user,
            "object": obj,
        },
    }


def opa_input(rev: Doc, system_namespace: str = SYSTEM_NS) -> Doc:
    """The `input` of Ostiary's plan query for an AdmissionReview, as OPA's request body (the OPA
    floor's query), built by Ostiary's one builder (app/admission/input.py)."""
    return {"input": opa_input_of(read_request(rev["request"]), input_config(system_namespace))}
