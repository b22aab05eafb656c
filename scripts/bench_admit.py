#!/usr/bin/env python3
"""Admission benchmark: `ostiary serve` against real Notary, with its floors, from a separate load process.

    .venv/bin/pip install -e '.[bench]'          # matplotlib (plot) and py-spy (profile); optional
    .venv/bin/python scripts/bench_admit.py --quick --out /tmp/bench      # about 2-3 minutes
    .venv/bin/python scripts/bench_admit.py --out docs/perf --profile      # the full run

What runs, all real and on loopback:
- a notary-server + notary-signer + docker-registry (tests/support/world.py) holding signed images;
- `ostiary serve` started the production way (gunicorn with app/gunicorn_conf.py, its own OPA), one
  instance per server-side setting (default TTL; `--trust-cache-ttl 1`; Notary behind a TLS proxy
  that delays every request by 200 ms);
- the floors, in the same run: a bare gunicorn + Flask app with the same worker settings that parses
  the AdmissionReview and answers a fixed response (scripts/bench_floor_app.py), and a bare
  `opa run --server` answering a one-rule query with the same `input` Ostiary sends;
- the load: separate Python processes (http.client, one keep-alive connection per thread), at
  concurrency 1, 8, 32 and 64. Every answer's verdict is checked against the one known in advance.

Scenarios (bodies: `deploy` = a 3-container Deployment of signed images in one of three namespaces;
`mix` = that, plus a 10-image Pod, a CronJob, a Deployment needing a signer (alice) in a namespace with
its own ImagePolicy, and one with an unsigned image that must be denied):
- floor-flask-<bodies>, floor-opa-<bodies>: the floors;
- warm-deploy, warm-mix: trust cache warm (the default 60 s TTL never expires during a run);
- expiry-mix: `--trust-cache-ttl 1`: every repository's timestamp.json is fetched again each second;
- slow-mix: Notary behind the 200 ms proxy and `--trust-cache-ttl 1` (every refresh waits 200 ms);
- cold-deploy, cold-pod10 (and cold-pod10-slow): Ostiary restarted, then each request names only
  repositories it has never seen (a full TUF walk per repository), each body sent once.

Per scenario: p50, p90, p99, max latency, throughput, errors (transport, HTTP, wrong verdict), CPU
seconds per admission of Ostiary (gunicorn master + worker) and of its OPA, separately, from
/proc/<pid>/stat, and the RSS of every process; each also as a ratio to the floor. Output: a table on
stdout, OUT/bench.json, OUT/bench.png (if matplotlib imports). `--profile` also samples the Ostiary
worker with py-spy at concurrency 8, warm (OUT/profile.txt collapsed stacks, OUT/profile.svg), and
asks Ostiary's OPA for its own `?metrics` of the plan and decision queries.

Figures, never assertions: the exit status is 1 only when a scenario saw errors or wrong verdicts.
"""

from __future__ import annotations

import argparse
import base64
import collections
import http.client
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")
SYSTEM_NS = "ostiary-system"
NAMESPACES = ("default", "team-a", "team-b")
SLOW_DELAY = 0.2  # seconds the slow proxy waits before forwarding each request


# ====================================================================== the load process
# Runs as `bench_admit.py --load-worker` with a JSON spec on stdin. Keeps its own imports minimal.


def _load_worker() -> None:
    spec = json.loads(sys.stdin.readline())
    host, port, path = spec["host"], spec["port"], spec["path"]
    bodies = [b.encode() for b in spec["bodies"]]
    expected = spec["expected"]  # list of True/False/None (None: not checked)
    threads = spec["threads"]
    mode = spec["mode"]  # "duration" or "once"
    lock = threading.Lock()
    results: list[list[float]] = [[] for _ in range(threads)]
    carried = [0] * threads
    errors = collections.Counter()
    examples: list[str] = []
    state = {"end": 0.0, "measure": False, "next": 0}

    def one(conn_box: list, i: int) -> tuple[bool, float]:
        body = bodies[i]
        t = time.perf_counter()
        try:
            if conn_box[0] is None:
                conn_box[0] = http.client.HTTPConnection(host, port, timeout=60)
            conn = conn_box[0]
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            if conn_box[0] is not None:
                conn_box[0].close()
            conn_box[0] = None
            return _fail(f"transport: {exc.__class__.__name__}: {exc}", "transport"), 0.0
        elapsed = time.perf_counter() - t
        if resp.status != 200:
            return _fail(f"HTTP {resp.status}: {data[:200]!r}", "http"), elapsed
        want = expected[i]
        if want is not None:
            try:
                doc = json.loads(data)
                got = doc["response"]["allowed"] if "response" in doc else doc["result"]["allowed"]
            except (ValueError, KeyError, TypeError):
                return _fail(f"unreadable answer: {data[:200]!r}", "wrong"), elapsed
            if got is not want:
                msg = (doc.get("response") or {}).get("status", {}).get("message", "")
                return _fail(f"body {i}: allowed={got}, expected {want}: {msg[:200]}", "wrong"), elapsed
        return True, elapsed

    def _fail(message: str, kind: str) -> bool:
        with lock:
            if state["measure"]:
                errors[kind] += 1
                if len(examples) < 10:
                    examples.append(message)
        return False

    def run_duration(k: int) -> None:
        box: list = [None]
        i = k
        while time.perf_counter() < state["end"]:
            measuring = state["measure"]
            ok, elapsed = one(box, i % len(bodies))
            i += threads
            if ok and measuring and state["measure"]:
                results[k].append(elapsed)
            elif not measuring and state["measure"]:
                carried[k] += 1  # started in the warm-up, finished in the window: its CPU is in it

    def run_once(k: int) -> None:
        box: list = [None]
        while True:
            with lock:
                i = state["next"]
                state["next"] += 1
            if i >= len(bodies):
                return
            ok, elapsed = one(box, i)
            if ok:
                results[k].append(elapsed)

    out = sys.stdout
    if mode == "once":
        state["measure"] = True
        out.write("READY\n")
        out.flush()
        sys.stdin.readline()  # GO
        started = time.perf_counter()
        pool = [threading.Thread(target=run_once, args=(k,)) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
    else:
        state["end"] = time.perf_counter() + 3600
        pool = [threading.Thread(target=run_duration, args=(k,), daemon=True) for k in range(threads)]
        for t in pool:
            t.start()
        time.sleep(spec["warmup"])
        out.write("READY\n")
        out.flush()
        sys.stdin.readline()  # GO
        with lock:
            errors.clear()
            examples.clear()
            for r in results:
                r.clear()
            state["measure"] = True
        started = time.perf_counter()
        state["end"] = started + spec["duration"]
        for t in pool:
            t.join()
    elapsed = time.perf_counter() - started
    cpu = os.times()
    out.write(
        json.dumps(
            {
                "latencies": [x for r in results for x in r],
                "elapsed": elapsed,
                "errors": dict(errors),
                "examples": examples,
                "cpu": cpu.user + cpu.system,
                "carried": sum(carried),
            }
        )
        + "\n"
    )
    out.flush()


# ====================================================================== processes and /proc


# Every Ostiary under test runs as the chart runs it: OPA beside it (here its child, so its CPU and
# RSS are accounted to the target), guarded by a token, with the chart's GOGC; this is the token.
OPA_TOKEN = secrets.token_urlsafe(24)
OPA_AUTH = {"Authorization": f"Bearer {OPA_TOKEN}"}
OPA_GOGC = "400"  # helm/ostiary/values.yaml opa.gogc


def descendants(pid: int) -> list[int]:
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
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def proc_name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    exe = Path(argv[0].decode(errors="replace")).name
    if exe == "opa":
        return "opa"
    text = b" ".join(argv).decode(errors="replace")
    if "gunicorn" in text or "ostiary" in text or "bench_floor_app" in text:
        return Path(f"/proc/{pid}/comm").read_text().strip() if Path(f"/proc/{pid}/comm").exists() else exe
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited (rc={proc.returncode}); log {log}:\n{tail(log)}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} not ready after {timeout:.0f}s; log {log}:\n{tail(log)}")


def tail(path: Path, n: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def stop(proc: subprocess.Popen) -> None:
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


class Target:
    """A server under load: its process tree, split into the Ostiary/Flask part and the OPA part."""

    def __init__(self, name: str, argv: list[str], ready_url: str, port: int, workdir: Path):
        self.name, self.port = name, port
        self.log = workdir / f"{name}.log"
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=workdir,
            )
        wait_http(ready_url, self.proc, self.log)

    def pids(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {"server": [], "opa": []}
        for pid in descendants(self.proc.pid):
            groups["opa" if proc_name(pid) == "opa" else "server"].append(pid)
        return groups

    def cpu(self) -> dict[str, float]:
        return {k: sum(cpu_seconds(p) for p in v) for k, v in self.pids().items()}

    def rss(self) -> list[dict]:
        return [
            {"pid": p, "name": proc_name(p), "rss_mib": round(rss_mib(p), 1)}
            for p in descendants(self.proc.pid)
        ]

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


# ====================================================================== the slow trust server


class DelayProxy:
    """TLS-terminating proxy in front of notary-server that waits `delay` seconds before each request.

    Learnt from tests/world/test_faults.py's FaultProxy; keeps one upstream connection per client
    connection so the only added cost is the delay (and one TLS hop on loopback)."""

    def __init__(self, world, delay: float) -> None:
        self.delay = delay
        self.upstream_port = int(world.notary_url.rsplit(":", 1)[1])
        self.server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_ctx.load_cert_chain(world.dir / "server.crt", world.dir / "server.key")
        self.client_ctx = ssl.create_default_context(cafile=world.ca_file)
        self.requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"https://127.0.0.1:{self.sock.getsockname()[1]}"
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        upstream = None
        try:
            conn.settimeout(120)
            tls = self.server_ctx.wrap_socket(conn, server_side=True)
            reader = tls.makefile("rb")
            while True:
                line = reader.readline()
                if not line:
                    return
                method, path, _ = line.decode("latin-1").split(" ", 2)
                headers = {}
                while True:
                    h = reader.readline().decode("latin-1").rstrip("\r\n")
                    if not h:
                        break
                    name, _, value = h.partition(":")
                    if name.lower() not in ("host", "connection", "accept-encoding", "content-length"):
                        headers[name] = value.strip()
                self.requests += 1
                time.sleep(self.delay)
                if upstream is None:
                    upstream = http.client.HTTPSConnection(
                        "127.0.0.1", self.upstream_port, context=self.client_ctx, timeout=30
                    )
                upstream.request(method, path, headers=headers)  # GET only: no body
                resp = upstream.getresponse()
                body = resp.read()
                head = [f"HTTP/1.1 {resp.status} {resp.reason}"]
                head += [
                    f"{k}: {v}"
                    for k, v in resp.getheaders()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                ]
                head.append(f"Content-Length: {len(body)}")
                tls.sendall(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        except (OSError, ssl.SSLError, ValueError, http.client.HTTPException):
            return
        finally:
            if upstream is not None:
                upstream.close()
            conn.close()


# ====================================================================== the world, policies, reviews


@dataclass
class Images:
    warm: list[str]  # signed, one repository each
    cold: list[str]  # signed, one repository each, never admitted before a cold scenario
    signed: str  # build_scenario's "signed"
    signer: str  # signed by alice (delegation), needs the alice secret
    unsigned: str  # trust data exists, this tag never signed
    alice_pem: str


def build_world(n_warm: int, n_cold: int):
    from tests.support.world import NotaryWorld, build_scenario

    t0 = time.monotonic()
    world = NotaryWorld()
    world.start()
    scenario = build_scenario(world)

    def sign_many(names: list[str]) -> list[str]:
        """Push each, then init + snapshot-key rotation + addhash with the real notary CLI, 3 at a time
        (one repository's keys never meet another's; the root key exists already)."""
        from concurrent.futures import ThreadPoolExecutor

        pushed = [world.push(n, "v1", seed=n) for n in names]

        def sign(img) -> None:
            gun = world.gun(img.repo)
            world.notary("init", gun, "-p")
            world.notary("key", "rotate", gun, "snapshot", "-r")
            world.notary("addhash", gun, "v1", str(img.size), "--sha256", img.digest.split(":", 1)[1], "-p")

        with ThreadPoolExecutor(3) as pool:
            list(pool.map(sign, pushed))
        return [world.image_ref(i.repo, "v1") for i in pushed]

    warm = sign_many([f"bench/warm{i}" for i in range(n_warm)])
    cold = sign_many([f"bench/cold{i}" for i in range(n_cold)])
    images = Images(
        warm,
        cold,
        scenario["signed"].reference,
        scenario["signer-pem"].reference,
        scenario["unsigned"].reference,
        scenario.alice_pem,
    )
    print(
        f"world: notary-server, notary-signer, registry; {n_warm + n_cold + 5} signed repositories "
        f"in {time.monotonic() - t0:.0f} s",
        flush=True,
    )
    return world, images


def write_policies(directory: Path, reg: str, trust_server: str, alice_pem: str, fillers: int = 40) -> None:
    """A realistic policy set: the bench and ostiary repositories with trust, a signer requirement,
    a namespace with its own ImagePolicy, and `fillers` unrelated cluster entries."""

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    trust = {"trust": {"enabled": True, "trustServer": trust_server}}
    alice = {"trust": {"enabled": True, "trustServer": trust_server, "signerSecrets": [{"name": "alice"}]}}
    docs = {
        "cluster.json": {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": "bench"},
            "spec": {
                "repositories": [
                    {"name": f"{reg}/bench/*", "policy": trust},
                    {"name": f"{reg}/ostiary/*", "policy": trust},
                    {"name": f"{reg}/ostiary/signer-pem", "policy": alice},
                ]
            },
        },
        "fillers.json": {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": "fillers"},
            "spec": {
                "repositories": [
                    {"name": f"registry{i}.example.com/team{i % 7}/*", "policy": {}} for i in range(fillers)
                ]
            },
        },
        "team-b.json": {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ImagePolicy",
            "metadata": {"name": "team-b", "namespace": "team-b"},
            "spec": {
                "repositories": [
                    {"name": f"{reg}/bench/*", "policy": trust},
                    {"name": f"{reg}/ostiary/*", "policy": alice},
                ]
            },
        },
        **{
            f"alice-{ns}.json": {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "alice", "namespace": ns},
                "data": {"name": b64("alice"), "publicKey": b64(alice_pem)},
            }
            for ns in (SYSTEM_NS, "team-b")
        },
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (directory / name).write_text(json.dumps(doc))


def review(kind: str, namespace: str, images: list[str]) -> dict:
    containers = [
        {
            "name": f"c{i}",
            "image": image,
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
            "ports": [{"containerPort": 8080 + i}],
            "env": [{"name": "MODE", "value": "bench"}],
        }
        for i, image in enumerate(images)
    ]
    spec = {"containers": containers, "serviceAccountName": "default", "restartPolicy": "Always"}
    labels = {"app": "bench", "team": namespace}
    meta = {"name": "bench", "namespace": namespace, "labels": labels}
    if kind == "Pod":
        obj = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
        group, resource = "", "pods"
    elif kind == "CronJob":
        spec["restartPolicy"] = "OnFailure"
        obj = {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": meta,
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": spec}}}},
        }
        group, resource = "batch", "cronjobs"
    else:
        obj = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": spec},
            },
        }
        group, resource = "apps", "deployments"
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
            "name": "bench",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:deployment-controller",
                "groups": ["system:serviceaccounts", "system:authenticated"],
            },
            "object": obj,
        },
    }


def body_sets(images: Images, variants: int = 24) -> dict[str, list[tuple[dict, bool]]]:
    """{name: [(AdmissionReview, expected allowed)]}. Each body has its own uid."""
    w = images.warm
    deploy = [
        (review("Deployment", NAMESPACES[i % 3], w[(i % 3) : (i % 3) + 3]), True) for i in range(variants)
    ]
    mix: list[tuple[dict, bool]] = []
    for i in range(variants):
        ns = NAMESPACES[i % 2]  # default, team-a: the cluster policy
        mix += [
            (review("Deployment", ns, w[(i % 3) : (i % 3) + 3]), True),
            (review("Pod", ns, w[:10]), True),
            (review("CronJob", ns, [images.signed, w[i % len(w)]]), True),
            (review("Deployment", "team-b", [images.signer, w[0]]), True),  # ImagePolicy + signer
            (review("Deployment", ns, [w[1], images.unsigned]), False),  # denied: not signed
        ]
    return {"deploy": deploy, "mix": mix}


def cold_bodies(images: Images, per: int) -> list[tuple[dict, bool]]:
    kind = "Pod" if per == 10 else "Deployment"
    c = images.cold
    return [(review(kind, NAMESPACES[i % 2], c[i * per : (i + 1) * per]), True) for i in range(len(c) // per)]


def opa_input(rev: dict) -> dict:
    """The `input` Ostiary's plan query carries (app/admission/review.py _input), for the OPA floor."""
    from app.admission.extract import image_sites

    req, obj = rev["request"], rev["request"]["object"]
    sites = image_sites(obj, req["kind"]["kind"])
    return {
        "input": {
            "request": {
                k: req.get(k)
                for k in ("uid", "operation", "kind", "resource", "subResource", "namespace", "userInfo")
            }
            | {"name": req["name"], "dryRun": False},
            "object": obj,
            "images": [s.as_input() for s in sites],
            "config": {"system_namespace": SYSTEM_NS},
        }
    }


# ====================================================================== running a load


@dataclass
class Result:
    scenario: str
    concurrency: int
    bodies: str
    n: int = 0
    elapsed: float = 0.0
    latencies_ms: dict = field(default_factory=dict)
    throughput: float = 0.0
    errors: dict = field(default_factory=dict)
    examples: list = field(default_factory=list)
    cpu_ms_server: float = 0.0  # per admission: Ostiary (or the Flask floor) processes
    cpu_ms_opa: float = 0.0  # per admission: its OPA (or the floor OPA)
    cpu_ms_load: float = 0.0  # per request: the load processes (the client's own cost)
    cpu_util_server: float = 0.0  # cores busy
    cpu_util_opa: float = 0.0
    rss: list = field(default_factory=list)
    opa_server: dict = field(
        default_factory=dict
    )  # OPA's /metrics: v1/data handler ms per query, queries/adm
    loadavg: list = field(default_factory=list)


def run_load(
    target: Target,
    scenario: str,
    bodies_name: str,
    bodies: list[tuple[dict, bool]],
    concurrency: int,
    *,
    duration: float,
    warmup: float,
    path: str = "/admit",
    once: bool = False,
    check: bool = True,
    during=None,
) -> Result:
    """Drive `target` from separate load processes; CPU of the target sampled around the measured window.
    `during` (optional) is called with the target once the measured window has started."""
    nproc = 1 if concurrency == 1 or once else 2
    shares = [concurrency // nproc + (1 if k < concurrency % nproc else 0) for k in range(nproc)]
    texts = [json.dumps(b) for b, _ in bodies]
    wanted = [w if check else None for _, w in bodies]
    workers = []
    for k, threads in enumerate(shares):
        if once:
            mine = list(range(len(texts)))
        else:  # each process its own rotation of the bodies, so both see the same mix
            mine = list(range(k, len(texts))) + list(range(k))
        spec = {
            "host": "127.0.0.1",
            "port": target.port,
            "path": path,
            "threads": threads,
            "bodies": [texts[i] for i in mine],
            "expected": [wanted[i] for i in mine],
            "mode": "once" if once else "duration",
            "duration": duration,
            "warmup": warmup,
        }
        p = subprocess.Popen(
            [sys.executable, __file__, "--load-worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        p.stdin.write(json.dumps(spec) + "\n")
        p.stdin.flush()
        workers.append(p)
    for p in workers:
        if p.stdout.readline().strip() != "READY":
            raise SystemExit(f"load process failed before its window ({scenario}, c={concurrency})")
    opa_url = target.opa_url() if target.name.startswith("ostiary") else None
    prom_before = prom_opa(opa_url)
    before = target.cpu()
    load1 = os.getloadavg()[0]
    for p in workers:
        p.stdin.write("GO\n")
        p.stdin.flush()
    extra = during(target) if during else None
    outs = [json.loads(p.stdout.readline()) for p in workers]
    after = target.cpu()
    prom_after = prom_opa(opa_url)
    for p in workers:
        p.wait(timeout=30)
    lat = sorted(x for o in outs for x in o["latencies"])
    elapsed = max(o["elapsed"] for o in outs)
    errors: collections.Counter = collections.Counter()
    for o in outs:
        errors.update(o["errors"])
    res = Result(scenario, concurrency, bodies_name, n=len(lat), elapsed=round(elapsed, 3))
    res.errors = dict(errors)
    res.examples = [e for o in outs for e in o["examples"]][:5]
    # Everything that finished between the two CPU samples: the window's requests (the last ones drain
    # before `after`), their errors, and those begun in the warm-up that finished inside the window.
    done = max(1, len(lat) + sum(errors.values()) + sum(o.get("carried", 0) for o in outs))
    if lat:

        def pct(q: float) -> float:
            return round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 2)

        res.latencies_ms = {
            "p50": pct(0.50),
            "p90": pct(0.90),
            "p99": pct(0.99),
            "max": round(1000 * lat[-1], 2),
            "mean": round(1000 * statistics.fmean(lat), 2),
        }
        res.throughput = round(len(lat) / elapsed, 1)
    res.cpu_ms_server = round(1000 * (after["server"] - before["server"]) / done, 3)
    res.cpu_ms_opa = round(1000 * (after["opa"] - before["opa"]) / done, 3)
    res.cpu_util_server = round((after["server"] - before["server"]) / elapsed, 2)
    res.cpu_util_opa = round((after["opa"] - before["opa"]) / elapsed, 2)
    res.cpu_ms_load = round(1000 * sum(o["cpu"] for o in outs) / done, 3)  # includes warm-up: an upper bound
    if prom_after and prom_after["count"] > prom_before["count"]:
        queries = prom_after["count"] - prom_before["count"]
        res.opa_server = {
            "ms_per_query": round(1000 * (prom_after["seconds"] - prom_before["seconds"]) / queries, 3),
            "queries_per_admission": round(queries / done, 2),
        }
    res.rss = target.rss()
    res.loadavg = [round(load1, 2), round(os.getloadavg()[0], 2)]
    if extra is not None:
        res.examples.append(extra)
    return res


# ====================================================================== reporting


def floor_of(r: Result, results: list[Result]) -> tuple[Result | None, Result | None]:
    def find(name: str) -> Result | None:
        return next((x for x in results if x.scenario == name and x.concurrency == r.concurrency), None)

    bodies = "deploy" if r.bodies in ("deploy", "cold-deploy") else "mix"
    return find(f"floor-flask-{bodies}"), find(f"floor-opa-{bodies}")


def _ratio(a: float, b: float | None) -> str:
    return f"{a / b:.1f}x" if b else "-"


def table(results: list[Result]) -> str:
    head = (
        "| scenario | c | n | adm/s | p50 ms | p90 ms | p99 ms | max ms | errors | Ostiary CPU ms/adm "
        "| OPA CPU ms/adm | load CPU ms/req | adm/s vs floor | p99 vs floor | CPU vs floor | OPA CPU vs floor | load avg |"
    )
    rows = [head, "|" + "---|" * 17]
    for r in results:
        fl, fo = floor_of(r, results)
        is_floor = r.scenario.startswith("floor-")
        lat = r.latencies_ms or {}
        err = sum(r.errors.values())
        thr_ratio = "-" if is_floor or not fl or not fl.throughput else f"{r.throughput / fl.throughput:.2f}"
        p99_ratio = (
            "-" if is_floor or not fl else _ratio(lat.get("p99", 0), (fl.latencies_ms or {}).get("p99"))
        )
        cpu_ratio = "-" if is_floor or not fl else _ratio(r.cpu_ms_server, fl.cpu_ms_server)
        opa_ratio = "-" if is_floor or not fo else _ratio(r.cpu_ms_opa, fo.cpu_ms_opa)
        rows.append(
            f"| {r.scenario} | {r.concurrency} | {r.n} | {r.throughput:.0f} | {lat.get('p50', 0):.1f} "
            f"| {lat.get('p90', 0):.1f} | {lat.get('p99', 0):.1f} | {lat.get('max', 0):.1f} | {err} "
            f"| {r.cpu_ms_server:.2f} | {r.cpu_ms_opa:.2f} | {r.cpu_ms_load:.2f} | {thr_ratio} | {p99_ratio} "
            f"| {cpu_ratio} | {opa_ratio} | {r.loadavg[0]:.1f}-{r.loadavg[1]:.1f} |"
        )
    return "\n".join(rows)


def rss_table(results: list[Result]) -> str:
    seen: dict[str, Result] = {}
    for r in results:
        seen[r.scenario] = r  # the last (highest concurrency) sample of each scenario
    rows = ["| after scenario | process | RSS MiB |", "|---|---|---|"]
    for name, r in seen.items():
        for p in r.rss:
            rows.append(f"| {name} (c={r.concurrency}) | {p['name']}[{p['pid']}] | {p['rss_mib']:.1f} |")
    return "\n".join(rows)


def run_scale(out: Path, quick: bool) -> list[dict]:
    """The cost of N images and M policy entries (scripts/bench_scale.py: no trust, matching and
    deciding only), after the load scenarios so it never shares the machine with them."""
    images, entries, repeat = (
        ("1,10,100,1000", "10,3000", "3") if quick else ("1,10,100,400,1000", "10,300,3000", "5")
    )
    target = out / "scale.json"
    print(f"scale: images {images} x entries {entries}, median of {repeat}", flush=True)
    subprocess.run(
        [
            sys.executable,
            str(Path(__file__).with_name("bench_scale.py")),
            "--images",
            images,
            "--entries",
            entries,
            "--repeat",
            repeat,
            "--json",
            str(target),
        ],
        check=True,
    )
    return json.loads(target.read_text())


def scale_table(rows: list[dict]) -> str:
    lines = [
        "| entries M | images N | median ms | max ms | ms per image | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['entries']} | {r['images']} | {r['median_ms']} | {r['max_ms']} | {r['ms_per_image']} | "
            f"{'allowed' if r['allowed'] else 'DENIED'} |"
        )
    return "\n".join(lines)


def plot(results: list[Result], path: Path, scale: list[dict] | None = None) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not importable: no plot (pip install -e '.[bench]')"
    by: dict[str, list[Result]] = collections.defaultdict(list)
    for r in results:
        if r.latencies_ms and not r.scenario.startswith("cold"):
            by[r.scenario].append(r)
    fig, axes = plt.subplots(1, 3 if scale else 2, figsize=(18 if scale else 12, 4.8))
    a1, a2 = axes[0], axes[1]
    if scale:
        a3 = axes[2]
        for m in sorted({r["entries"] for r in scale}):
            rows = sorted((r for r in scale if r["entries"] == m), key=lambda r: r["images"])
            a3.plot(
                [r["images"] for r in rows], [r["median_ms"] for r in rows], marker="o", label=f"{m} entries"
            )
        a3.set_xscale("log")
        a3.set_yscale("log")
        a3.set_xlabel("images per Pod (no trust)")
        a3.set_ylabel("median latency ms")
        a3.grid(alpha=0.3)
        a3.legend(fontsize=7)
        a3.set_title("cost of N images x M entries", fontsize=9)
    for name, rs in by.items():
        rs.sort(key=lambda r: r.concurrency)
        cs = [r.concurrency for r in rs]
        style = "--" if name.startswith("floor") else "-"
        (line,) = a1.plot(cs, [r.latencies_ms["p99"] for r in rs], style, marker="o", label=f"{name} p99")
        a1.plot(cs, [r.latencies_ms["p50"] for r in rs], ":", marker=".", color=line.get_color())
        a2.plot(cs, [r.throughput for r in rs], style, marker="o", label=name, color=line.get_color())
    for ax in (a1, a2):
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 8, 32, 64], ["1", "8", "32", "64"])
        ax.set_xlabel("concurrency")
        ax.grid(alpha=0.3)
    a1.set_yscale("log")
    a1.set_ylabel("latency ms (p99 solid/dashed, p50 dotted)")
    a2.set_ylabel("admissions/s")
    a2.set_yscale("log")
    a2.legend(fontsize=7, loc="best")
    fig.suptitle("Ostiary POST /admit vs floors (2-core machine, loopback)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    return f"plot: {path}"


# ====================================================================== profile


def profile(target: Target, bodies: list[tuple[dict, bool]], out: Path, seconds: float) -> dict:
    """py-spy on the Ostiary worker at concurrency 8, warm; summary of the collapsed stacks."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {"error": "py-spy is not installed (pip install -e '.[bench]')"}
    worker = target.worker_pid()
    # --gil: only the thread holding the GIL is sampled, i.e. where the worker's Python CPU goes (the
    # one worker process is GIL-bound); without it, threads blocked in C (socket reads, queue waits)
    # count as active too, which shows where requests wait.
    raw_gil, raw_active, svg = out / "profile-gil.txt", out / "profile-active.txt", out / "profile.svg"
    procs: list[subprocess.Popen] = []

    def during(_t: Target) -> None:
        for fmt, dest, gil in (("raw", raw_gil, True), ("raw", raw_active, False), ("flamegraph", svg, True)):
            procs.append(
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(worker),
                        "--rate",
                        "100",
                        "--nonblocking",
                        *(["--gil"] if gil else []),
                        "--duration",
                        str(int(seconds)),
                        "--format",
                        fmt,
                        "-o",
                        str(dest),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )

    res = run_load(
        target, "profile-warm-deploy", "deploy", bodies, 8, duration=seconds + 1, warmup=1.0, during=during
    )
    errs = []
    for p in procs:
        _, err = p.communicate(timeout=60)
        if p.returncode != 0:
            errs.append(err[-500:])
    if not raw_gil.exists():
        return {"error": "py-spy failed: " + " | ".join(errs)}
    return {
        "load": res.__dict__,
        "gil": summarize_stacks(raw_gil),
        "active": summarize_stacks(raw_active) if raw_active.exists() else None,
    }


def _frame_key(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"
    name, _, loc = frame.partition(" (")
    loc = loc.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/lib/python3", "/work/wt/perf/", str(ROOT) + "/"):
        if marker in loc:
            loc = loc.split(marker, 1)[1]
    return f"{name} ({loc})"


CATEGORIES = (  # (label, substring of a frame's file) - the first that matches a stack's frames wins
    ("OPA client (app/opa/client.py, incl. its HTTP)", "app/opa/client.py"),
    ("trust gather (app/notary/service.py)", "app/notary/service.py"),
    ("admission logic (app/admission)", "app/admission/"),
    ("metrics/logging in app/server.py", "app/server.py"),
    ("gunicorn", "gunicorn/"),
)


def summarize_stacks(raw: Path) -> dict:
    stacks: list[tuple[list[str], int]] = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    total = sum(c for _, c in stacks) or 1
    inclusive: collections.Counter = collections.Counter()
    self_time: collections.Counter = collections.Counter()
    libs: collections.Counter = collections.Counter()
    cats: collections.Counter = collections.Counter()
    for frames, count in stacks:
        keys = [_frame_key(f) for f in frames if f.strip()]
        for k in set(keys):
            inclusive[k] += count
        if keys:
            self_time[keys[-1]] += count
        text = ";".join(frames)
        for lib, needle in (
            ("requests", "requests/"),
            ("urllib3", "urllib3/"),
            ("http.client", "http/client.py"),
            ("json", "json/"),
            ("logging", "logging/"),
            ("gzip/zlib", "gzip.py"),
            ("concurrent.futures", "concurrent/futures"),
            ("threading", "threading.py"),
            ("os.stat / pathlib", "pathlib.py"),
            ("ssl", "ssl.py"),
            ("werkzeug", "werkzeug/"),
            ("flask", "flask/"),
            ("socket", "socket.py"),
            ("prometheus_client", "prometheus_client/"),
        ):
            if needle in text:
                libs[lib] += count
        cats[next((label for label, needle in CATEGORIES if needle in text), "other")] += count

    def top(counter: collections.Counter, n: int) -> list[list]:
        return [[k, round(100 * v / total, 1)] for k, v in counter.most_common(n)]

    return {
        "samples": total,
        "top_inclusive": top(inclusive, 40),
        "top_self": top(self_time, 25),
        "libraries_inclusive": top(libs, 20),
        "categories": top(cats, 10),
    }


def profile_text(prof: dict) -> str:
    if "error" in prof:
        return f"profile: {prof['error']}"
    lines = []
    for view in ("gil", "active"):
        p = prof.get(view)
        if not p:
            continue
        lines.append(
            f"profile ({view}, {p['samples']} samples): categories "
            + ", ".join(f"{k} {v}%" for k, v in p["categories"])
        )
        lines.append(
            "  libraries (inclusive): " + ", ".join(f"{k} {v}%" for k, v in p["libraries_inclusive"])
        )
        lines.append("  top self: " + "; ".join(f"{k} {v}%" for k, v in p["top_self"][:15]))
    return "\n".join(lines)


def opa_metrics(target: Target, bodies: list[tuple[dict, bool]], ca_file: str, out_dir: Path) -> dict:
    """OPA's own view: Prometheus counters of Ostiary's OPA, and ?metrics of plan and decision queries
    with the input Ostiary builds (trust facts gathered by Ostiary's own TrustService)."""
    import requests

    url = target.opa_url()
    if url is None:
        return {"error": "no OPA process found under ostiary serve"}
    from app.admission.review import DECISION_PATH, PLAN_PATH, Reviewer
    from app.notary.service import TrustService

    class _Store:
        def get_secret(self, namespace, name):
            return None

        def get_service_account(self, namespace, name):
            return None

    class _Capture:
        def __init__(self, opa_url: str):
            self.url, self.calls = opa_url, []

        def query(self, path, input, deadline):
            r = requests.post(
                f"{self.url}/v1/data/{path}", json={"input": input}, timeout=10, headers=OPA_AUTH
            )
            self.calls.append((path, json.loads(json.dumps(input))))
            return r.json().get("result")

    cap = _Capture(url)
    reviewer = Reviewer(cap, _Store(), trust=TrustService(ca_file=ca_file), system_namespace=SYSTEM_NS)
    reviewer.review(bodies[0][0])
    # The queries' inputs, the modules and the policy documents OPA holds, so the same evaluation can
    # be profiled offline:
    #   opa eval --profile -d DIR/modules -d DIR/data.json -i DIR/input-decision.json data.ostiary.main.decision
    dump = out_dir / "opa-eval"
    (dump / "modules").mkdir(parents=True, exist_ok=True)
    for path, inp in cap.calls:
        (dump / f"input-{path.rsplit('/', 1)[-1]}.json").write_text(json.dumps(inp, indent=1))
    policies = requests.get(f"{url}/v1/policies", timeout=10, headers=OPA_AUTH).json().get("result") or []
    for mod in policies:
        if not mod["id"].startswith("ostiary/"):
            continue  # OPA's own authz policy
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", mod["id"]).strip("_") or "module"
        (dump / "modules" / (name if name.endswith(".rego") else name + ".rego")).write_text(mod["raw"])
    # the policies are data documents: -d DIR/data.json beside the modules
    held = requests.get(f"{url}/v1/data/ostiary/policies", timeout=10, headers=OPA_AUTH).json()
    (dump / "data.json").write_text(json.dumps({"ostiary": {"policies": held.get("result") or {}}}))
    out: dict = {
        "queries_per_admission": len(cap.calls),
        "input_bytes": {p: len(json.dumps(i)) for p, i in cap.calls},
    }
    for path, inp in cap.calls:
        sums: collections.Counter = collections.Counter()
        n = 50
        body = json.dumps({"input": inp})
        for _ in range(n):
            r = requests.post(
                f"{url}/v1/data/{path}?metrics=true&instrument=true",
                data=body,
                headers={"Content-Type": "application/json", **OPA_AUTH},
                timeout=10,
            )
            for k, v in (r.json().get("metrics") or {}).items():
                if isinstance(v, int | float):  # instrumentation also gives histograms: skipped
                    sums[k] += v
        timers = {k: round(v / n / 1e6, 3) for k, v in sums.items() if k.startswith("timer_")}
        out[path] = dict(sorted(timers.items(), key=lambda kv: -kv[1])[:14])
        out[path].update({k: round(v / n, 1) for k, v in sums.items() if k.startswith("counter_")})
        out[path]["unit"] = "ms, mean of 50"
        out[path]["answer_bytes"] = len(r.content)
    for p in (PLAN_PATH, DECISION_PATH):
        out.setdefault(p, {})
    if cap.calls:
        out["client_costs_plan_query"] = client_costs(url, cap.calls[0][0], cap.calls[0][1])
    return out


def client_costs(url: str, path: str, inp: dict, n: int = 300) -> dict:
    """Python CPU (this process, single thread) and wall time per OPA query for four HTTP clients, same
    query, same input, same OPA: what the OPA client's choice of library costs per round trip."""
    import requests
    import urllib3

    payload = json.dumps({"input": inp}).encode()
    host, port = url.split("//", 1)[1].split(":")
    plain = requests.Session()
    lean = requests.Session()
    lean.trust_env = False
    pool = urllib3.HTTPConnectionPool(host, int(port), maxsize=1)
    conn = http.client.HTTPConnection(host, int(port))
    full = f"{url}/v1/data/{path}"

    def via_requests() -> bytes:
        return plain.post(full, json={"input": inp}, timeout=10, headers=OPA_AUTH).content

    def via_lean_requests() -> bytes:
        return lean.post(
            full,
            data=payload,
            timeout=10,
            headers={"Content-Type": "application/json", "Accept-Encoding": "identity", **OPA_AUTH},
        ).content

    def via_urllib3() -> bytes:
        return pool.request(
            "POST", f"/v1/data/{path}", body=payload, headers={"Content-Type": "application/json", **OPA_AUTH}
        ).data

    def via_http_client() -> bytes:
        conn.request("POST", f"/v1/data/{path}", payload, {"Content-Type": "application/json", **OPA_AUTH})
        return conn.getresponse().read()

    from app.opa.client import OpaClient

    ostiary_client = OpaClient(url, token=OPA_TOKEN)

    def via_ostiary_client() -> bytes:
        ostiary_client.query(path, inp, time.monotonic() + 10)
        return b'{"result": null}'  # query() decodes the answer itself

    out = {}
    for name, call in (
        ("requests json= (Ostiary's first client)", via_requests),
        ("requests trust_env=False, data=, identity", via_lean_requests),
        ("urllib3 HTTPConnectionPool", via_urllib3),
        ("http.client keep-alive", via_http_client),
        ("app/opa/client.py OpaClient (http.client per thread, orjson)", via_ostiary_client),
    ):
        for _ in range(20):
            json.loads(call())
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            json.loads(call())
        out[name] = {
            "python_cpu_ms": round(1000 * (time.process_time() - cpu0) / n, 3),
            "wall_ms": round(1000 * (time.perf_counter() - wall0) / n, 3),
        }
    conn.close()
    return out


def prom_opa(url: str | None) -> dict:
    """v1/data request count and summed seconds from an OPA's /metrics."""
    import requests

    if url is None:
        return {}
    text = requests.get(f"{url}/metrics", timeout=5, headers=OPA_AUTH).text
    total, count = 0.0, 0.0
    for line in text.splitlines():
        if line.startswith("http_request_duration_seconds_sum") and 'handler="v1/data"' in line:
            total += float(line.rsplit(" ", 1)[1])
        if line.startswith("http_request_duration_seconds_count") and 'handler="v1/data"' in line:
            count += float(line.rsplit(" ", 1)[1])
    return {"seconds": total, "count": count}


# ====================================================================== main


def machine() -> dict:
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="short windows, fewer cold repositories (about 2-3 min)"
    )
    ap.add_argument("--out", default="bench-out", help="directory for bench.json, bench.png, profile files")
    ap.add_argument("--duration", type=float, help="seconds per measured window (quick 1.5, full 10)")
    ap.add_argument("--concurrency", default="1,8,32,64")
    ap.add_argument("--threads", type=int, default=8, help="`ostiary serve --threads` (and the floor's)")
    ap.add_argument("--profile", action="store_true", help="py-spy the worker at c=8 warm, and OPA ?metrics")
    ap.add_argument(
        "--only", help="comma-separated scenario prefixes to run: floor, warm, expiry, slow, cold, scale"
    )
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    duration = args.duration or (1.5 if args.quick else 10.0)
    warmup = 0.3 if args.quick else 2.0
    levels = [int(c) for c in args.concurrency.split(",")]
    n_cold = 20 if args.quick else 60
    only = [p for p in (args.only or "").split(",") if p]

    def wanted(name: str) -> bool:
        """--only warm-deploy selects the warm group and, in it, warm-deploy (not warm-mix)."""
        return not only or any(name.startswith(p) or p.startswith(name) for p in only)

    info = machine()
    print(f"machine: {info['cores']} cores ({info['cpu']}), load average {info['loadavg_start']}", flush=True)

    ostiary = str(Path(sys.executable).parent / "ostiary")
    from app.opa.process import find_opa

    opa_bin = find_opa()
    world, images = build_world(10, n_cold)
    work = Path(tempfile.mkdtemp(prefix="ostiary-bench-"))
    reg = world.registry_host
    direct, slow_dir = work / "policies-direct", work / "policies-slow"
    proxy = DelayProxy(world, SLOW_DELAY)
    write_policies(direct, reg, world.notary_url, images.alice_pem)
    write_policies(slow_dir, reg, proxy.url, images.alice_pem)
    sets = body_sets(images)
    results: list[Result] = []
    extras: dict = {}
    targets: list[Target] = []

    from app.opa.process import write_authz_bundle

    token_file = work / "opa-token"
    token_file.write_text(OPA_TOKEN + "\n")
    write_authz_bundle(work / "opa-authz", OPA_TOKEN)

    def serve(name: str, policy_dir: Path, *flags: str) -> Target:
        """`ostiary serve` as the chart runs it: OPA beside it on loopback (started by the shell that
        then becomes Ostiary, so OPA is Ostiary's child here and counted with the target), token
        authentication, the chart's GOGC; Ostiary with --opa-url and --opa-token-file."""
        port, opa_port = free_port(), free_port()
        sidecar = (
            f'GOGC={OPA_GOGC} "$0" run --server --skip-version-check --addr 127.0.0.1:{opa_port} '
            "--log-level error --optimize-store-for-read-speed "
            f"--authentication=token --authorization=basic --bundle {work / 'opa-authz'} & "
            'exec "$@"'
        )
        t = Target(
            name,
            [
                "sh",
                "-c",
                sidecar,
                opa_bin,
                ostiary,
                "serve",
                "--opa-url",
                f"http://127.0.0.1:{opa_port}",
                "--opa-token-file",
                str(token_file),
                "--policy-dir",
                str(policy_dir),
                "--listen",
                f"127.0.0.1:{port}",
                "--ca-file",
                world.ca_file,
                "--threads",
                str(args.threads),
                *flags,
            ],
            f"http://127.0.0.1:{port}/readyz",
            port,
            work,
        )
        targets.append(t)
        return t

    def record(r: Result) -> None:
        results.append(r)
        lat = r.latencies_ms or {}
        print(
            f"  {r.scenario:<22} c={r.concurrency:<3} n={r.n:<6} {r.throughput:7.0f}/s  p50 {lat.get('p50', 0):7.1f}  "
            f"p99 {lat.get('p99', 0):7.1f} ms  cpu {r.cpu_ms_server:6.2f}+{r.cpu_ms_opa:5.2f} ms/adm  "
            f"errors {r.errors or 0}  load {r.loadavg}",
            flush=True,
        )
        for e in r.examples[:2]:
            print(f"      e.g. {e}", flush=True)

    def prime(t: Target, bodies: list[tuple[dict, bool]]) -> None:
        """Every body once (c=8, not recorded): the trust cache holds every repository afterwards."""
        r = run_load(t, "prime", "-", bodies, 8, duration=0, warmup=0, once=True)
        if r.errors:
            print(f"  priming {t.name}: errors {r.errors} {r.examples[:2]}", flush=True)

    def close(t: Target) -> None:
        t.close()
        targets.remove(t)

    def run_floors() -> None:
        port = free_port()
        flask = Target(
            "floor-flask",
            [
                sys.executable,
                str(ROOT / "scripts" / "bench_floor_app.py"),
                "--listen",
                f"127.0.0.1:{port}",
                "--threads",
                str(args.threads),
            ],
            f"http://127.0.0.1:{port}/readyz",
            port,
            work,
        )
        targets.append(flask)
        for name in ("deploy", "mix"):
            for c in levels:
                record(
                    run_load(
                        flask,
                        f"floor-flask-{name}",
                        name,
                        sets[name],
                        c,
                        duration=duration,
                        warmup=warmup,
                        check=False,
                    )
                )
        close(flask)
        port = free_port()
        opa = Target(
            "floor-opa",
            [
                opa_bin,
                "run",
                "--server",
                "--skip-version-check",
                "--addr",
                f"127.0.0.1:{port}",
                "--log-level",
                "error",
            ],
            f"http://127.0.0.1:{port}/health",
            port,
            work,
        )
        targets.append(opa)
        import requests

        requests.put(
            f"http://127.0.0.1:{port}/v1/policies/floor",
            timeout=5,
            data=('package floor\n\nresult := {"allowed": true, "images": count(input.images)}\n'),
        ).raise_for_status()
        for name in ("deploy", "mix"):
            opa_bodies = [(opa_input(b), w) for b, w in sets[name]]
            for c in levels:
                record(
                    run_load(
                        opa,
                        f"floor-opa-{name}",
                        name,
                        opa_bodies,
                        c,
                        duration=duration,
                        warmup=warmup,
                        path="/v1/data/floor/result",
                        check=False,
                    )
                )
        close(opa)

    def run_warm() -> None:
        main_t = serve("ostiary-warm", direct)
        prime(main_t, sets["mix"])
        for name in ("deploy", "mix"):
            if wanted(f"warm-{name}"):
                for c in levels:
                    record(
                        run_load(
                            main_t, f"warm-{name}", name, sets[name], c, duration=duration, warmup=warmup
                        )
                    )
        if args.profile:
            print("profile: py-spy on the worker, warm-deploy at c=8", flush=True)
            extras["profile"] = profile(main_t, sets["deploy"], out, 10 if args.quick else 20)
            extras["opa_metrics"] = opa_metrics(main_t, sets["deploy"], world.ca_file, out)
            print(profile_text(extras["profile"]))
            print(json.dumps(extras["opa_metrics"], indent=1))
        close(main_t)

    def run_ttl1(name: str, policy_dir: Path) -> None:
        t = serve(f"ostiary-{name}", policy_dir, "--trust-cache-ttl", "1")
        prime(t, sets["mix"])
        for c in levels:
            record(run_load(t, name, "mix", sets["mix"], c, duration=duration, warmup=warmup))
        close(t)

    def run_cold() -> None:
        """A fresh Ostiary per row; every repository of every request seen for the first time."""
        for name, per, c, policy_dir in (
            ("cold-pod10", 10, 1, direct),
            ("cold-deploy", 3, 1, direct),
            ("cold-deploy", 3, 8, direct),
            ("cold-pod10-slow", 10, 1, slow_dir),
        ):
            t = serve(f"ostiary-{name}-c{c}", policy_dir)
            record(
                run_load(
                    t,
                    name,
                    "cold-deploy" if per == 3 else "cold-pod10",
                    cold_bodies(images, per),
                    c,
                    duration=0,
                    warmup=0,
                    once=True,
                )
            )
            close(t)

    try:
        if wanted("floor"):
            run_floors()
        if wanted("warm") or args.profile:
            run_warm()
        if wanted("expiry"):
            run_ttl1("expiry-mix", direct)
        if wanted("slow"):
            run_ttl1("slow-mix", slow_dir)
        if wanted("cold"):
            run_cold()
        if wanted("scale"):
            extras["scale"] = run_scale(out, args.quick)
    finally:
        for t in targets:
            t.close()
        proxy.close()
        world.stop()
        shutil.rmtree(work, ignore_errors=True)

    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report = {
        "machine": info,
        "duration_s": duration,
        "warmup_s": warmup,
        "threads": args.threads,
        "quick": args.quick,
        "slow_delay_s": SLOW_DELAY,
        "results": [r.__dict__ for r in results],
        **extras,
    }
    (out / "bench.json").write_text(json.dumps(report, indent=1))
    print()
    print(
        f"machine: {info['cores']} cores, load average at start {info['loadavg_start']}, at end {info['loadavg_end']}"
    )
    print(table(results))
    print()
    print(rss_table(results))
    print()
    if extras.get("scale"):
        print(scale_table(extras["scale"]))
        print()
    print(plot(results, out / "bench.png", extras.get("scale") or []))
    print(f"json: {out / 'bench.json'}")
    return 1 if any(r.errors for r in results if not r.scenario.startswith("floor")) else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--load-worker"]:
        _load_worker()
    else:
        raise SystemExit(main())
