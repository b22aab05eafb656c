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
- the load: separate Python processes (scripts/loadgen.py: http.client, one keep-alive connection per
  thread), at concurrency 1, 8, 32 and 64. Every answer's verdict is checked against the one known in advance.

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
asks Ostiary's OPA for its own `?metrics` of the plan and decision queries (scripts/bench_profile.py).
The world, servers, process figures and bodies come from scripts/harness.py.

Figures, never assertions: the exit status is 1 only when a scenario saw errors or wrong verdicts.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.opa.process import find_opa, write_authz_bundle
from scripts import harness
from scripts.bench_profile import PySpy, opa_metrics, profile_text, prom_opa
from scripts.harness import OPA_GOGC, OPA_TOKEN, SYSTEM_NS, Server, free_port, review
from tests.support.faultproxy import FaultProxy
from tests.support.world import NotaryWorld

NAMESPACES = ("default", "team-a", "team-b")
SLOW_DELAY = 0.2  # seconds the slow proxy waits before forwarding each request
LOADGEN = Path(__file__).with_name("loadgen.py")

Bodies = list[tuple[dict, bool]]  # (AdmissionReview, expected allowed)
During = Callable[[Server], object]  # called once the measured window has started


# ====================================================================== the world, policies, bodies


@dataclass
class Images:
    warm: list[str]  # signed, one repository each
    cold: list[str]  # signed, one repository each, never admitted before a cold scenario
    signed: str  # build_scenario's "signed"
    signer: str  # signed by alice (delegation), needs the alice secret
    unsigned: str  # trust data exists, this tag never signed
    alice_pem: str


def build_world(n_warm: int, n_cold: int) -> tuple[NotaryWorld, Images]:
    t0 = time.monotonic()
    world, scenario = harness.start_world()
    warm = harness.sign_many(world, [f"bench/warm{i}" for i in range(n_warm)])
    cold = harness.sign_many(world, [f"bench/cold{i}" for i in range(n_cold)])
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


def bench_policies(reg: str, trust_server: str, alice_pem: str, fillers: int = 40) -> dict[str, dict]:
    """A realistic policy set: the bench and ostiary repositories with trust, a signer requirement,
    a namespace with its own ImagePolicy, and `fillers` unrelated cluster entries."""
    trust = harness.trust_policy(trust_server)
    alice = harness.trust_policy(trust_server, "alice")
    return {
        "cluster.json": harness.cluster_policy(
            "bench",
            [
                {"name": f"{reg}/bench/*", "policy": trust},
                {"name": f"{reg}/ostiary/*", "policy": trust},
                {"name": f"{reg}/ostiary/signer-pem", "policy": alice},
            ],
        ),
        "fillers.json": harness.cluster_policy(
            "fillers",
            [{"name": f"registry{i}.example.com/team{i % 7}/*", "policy": {}} for i in range(fillers)],
        ),
        "team-b.json": harness.image_policy(
            "team-b",
            "team-b",
            [{"name": f"{reg}/bench/*", "policy": trust}, {"name": f"{reg}/ostiary/*", "policy": alice}],
        ),
        **{f"alice-{ns}.json": harness.signer_secret("alice", ns, alice_pem) for ns in (SYSTEM_NS, "team-b")},
    }


def body_sets(images: Images, variants: int = 24) -> dict[str, Bodies]:
    """{name: [(AdmissionReview, expected allowed)]}. Each body has its own uid."""
    w = images.warm
    deploy = [
        (review("Deployment", NAMESPACES[i % 3], w[(i % 3) : (i % 3) + 3]), True) for i in range(variants)
    ]
    mix: Bodies = []
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


def cold_bodies(images: Images, per: int) -> Bodies:
    kind = "Pod" if per == 10 else "Deployment"
    c = images.cold
    return [(review(kind, NAMESPACES[i % 2], c[i * per : (i + 1) * per]), True) for i in range(len(c) // per)]


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


@dataclass
class Window:
    """What was sampled around one measured window: the load processes' answers, the target's CPU
    and its OPA's /metrics before and after, the load average at the start."""

    outs: list[dict]
    before: dict[str, float]
    after: dict[str, float]
    prom_before: dict
    prom_after: dict
    load1: float
    extra: object = None


def start_loaders(
    target: Server,
    path: str,
    bodies: Bodies,
    concurrency: int,
    spec: dict[str, Any],  # JSON for loadgen
) -> list[subprocess.Popen]:
    """The load processes (1 at concurrency 1 or for `once`, else 2), each past its warm-up."""
    once = spec["mode"] == "once"
    nproc = 1 if concurrency == 1 or once else 2
    shares = [concurrency // nproc + (1 if k < concurrency % nproc else 0) for k in range(nproc)]
    texts = [json.dumps(b) for b, _ in bodies]
    wanted = [w for _, w in bodies]
    workers = []
    for k, threads in enumerate(shares):
        if once:
            mine = list(range(len(texts)))
        else:  # each process its own rotation of the bodies, so both see the same mix
            mine = list(range(k, len(texts))) + list(range(k))
        mine_spec = {
            "host": "127.0.0.1",
            "port": target.port,
            "path": path,
            "threads": threads,
            "bodies": [texts[i] for i in mine],
            "expected": [wanted[i] if spec["check"] else None for i in mine],
            **spec,
        }
        p = subprocess.Popen(
            [sys.executable, str(LOADGEN)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert p.stdin is not None
        p.stdin.write(json.dumps(mine_spec) + "\n")
        p.stdin.flush()
        workers.append(p)
    for p in workers:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "READY":
            raise SystemExit("load process failed before its window")
    return workers


def measure(target: Server, workers: list[subprocess.Popen], during: During | None = None) -> Window:
    """GO to every load process; CPU and OPA metrics sampled around the window."""
    opa_url = target.opa_url() if target.name.startswith("ostiary") else None
    prom_before = prom_opa(opa_url)
    before = target.cpu()
    load1 = os.getloadavg()[0]
    for p in workers:
        assert p.stdin is not None
        p.stdin.write("GO\n")
        p.stdin.flush()
    extra = during(target) if during else None
    outs = [json.loads(p.stdout.readline()) for p in workers if p.stdout is not None]
    after = target.cpu()
    prom_after = prom_opa(opa_url)
    for p in workers:
        p.wait(timeout=30)
    return Window(outs, before, after, prom_before, prom_after, load1, extra)


def summarize(res: Result, w: Window) -> Result:
    """Latencies, throughput, errors and CPU per admission of one window into `res`."""
    outs = w.outs
    lat = sorted(x for o in outs for x in o["latencies"])
    elapsed = max(o["elapsed"] for o in outs)
    errors: collections.Counter = collections.Counter()
    for o in outs:
        errors.update(o["errors"])
    res.n, res.elapsed = len(lat), round(elapsed, 3)
    res.errors = dict(errors)
    res.examples = [e for o in outs for e in o["examples"]][:5]
    # Everything that finished between the two CPU samples: the window's requests (the last ones drain
    # before `after`), their errors, and those begun in the warm-up that finished inside the window.
    done = max(1, len(lat) + sum(errors.values()) + sum(o.get("carried", 0) for o in outs))
    if lat:
        res.latencies_ms = {
            "p50": round(1000 * harness.percentile(lat, 0.50), 2),
            "p90": round(1000 * harness.percentile(lat, 0.90), 2),
            "p99": round(1000 * harness.percentile(lat, 0.99), 2),
            "max": round(1000 * lat[-1], 2),
            "mean": round(1000 * statistics.fmean(lat), 2),
        }
        res.throughput = round(len(lat) / elapsed, 1)
    server, opa = w.after["server"] - w.before["server"], w.after["opa"] - w.before["opa"]
    res.cpu_ms_server = round(1000 * server / done, 3)
    res.cpu_ms_opa = round(1000 * opa / done, 3)
    res.cpu_util_server = round(server / elapsed, 2)
    res.cpu_util_opa = round(opa / elapsed, 2)
    res.cpu_ms_load = round(1000 * sum(o["cpu"] for o in outs) / done, 3)  # includes warm-up: an upper bound
    if w.prom_after and w.prom_after["count"] > w.prom_before["count"]:
        queries = w.prom_after["count"] - w.prom_before["count"]
        res.opa_server = {
            "ms_per_query": round(1000 * (w.prom_after["seconds"] - w.prom_before["seconds"]) / queries, 3),
            "queries_per_admission": round(queries / done, 2),
        }
    return res


def run_load(
    target: Server,
    scenario: str,
    bodies_name: str,
    bodies: Bodies,
    concurrency: int,
    *,
    duration: float,
    warmup: float,
    path: str = "/admit",
    once: bool = False,
    check: bool = True,
    during: During | None = None,
) -> Result:
    """Drive `target` from separate load processes; CPU of the target sampled around the measured window.
    `during` (optional) is called with the target once the measured window has started."""
    spec = {"mode": "once" if once else "duration", "duration": duration, "warmup": warmup, "check": check}
    workers = start_loaders(target, path, bodies, concurrency, spec)
    window = measure(target, workers, during)
    res = summarize(Result(scenario, concurrency, bodies_name), window)
    res.rss = target.rss()
    res.loadavg = [round(window.load1, 2), round(os.getloadavg()[0], 2)]
    if window.extra is not None:
        res.examples.append(window.extra)
    return res


def profile(target: Server, bodies: Bodies, out: Path, seconds: float) -> dict:
    """py-spy on the Ostiary worker at concurrency 8, warm; summary of the collapsed stacks."""
    spy = PySpy(out, seconds)
    missing = spy.missing()
    if missing:
        return {"error": missing}
    res = run_load(
        target, "profile-warm-deploy", "deploy", bodies, 8, duration=seconds + 1, warmup=1.0, during=spy.start
    )
    return spy.collect(res.__dict__)


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


# ====================================================================== the run, in phases


class Bench:
    """One benchmark run: the world and its policies, then the scenarios chosen, then the report."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.duration = args.duration or (1.5 if args.quick else 10.0)
        self.warmup = 0.3 if args.quick else 2.0
        self.levels = [int(c) for c in args.concurrency.split(",")]
        self.n_cold = 20 if args.quick else 60
        self.only = [p for p in (args.only or "").split(",") if p]
        self.info = harness.machine()
        self.results: list[Result] = []
        self.extras: dict = {}
        self.targets: list[Server] = []

    def wanted(self, name: str) -> bool:
        """--only warm-deploy selects the warm group and, in it, warm-deploy (not warm-mix)."""
        return not self.only or any(name.startswith(p) or p.startswith(name) for p in self.only)

    # ------------------------------------------------------------------ phase 1: the world

    def setup(self) -> None:
        """The trust world, both policy directories (direct and through the slow proxy), the bodies,
        and OPA's token and authorization bundle."""
        info = self.info
        print(
            f"machine: {info['cores']} cores ({info['cpu']}), load average {info['loadavg_start']}",
            flush=True,
        )
        self.opa_bin = find_opa()
        self.world, self.images = build_world(10, self.n_cold)
        self.work = Path(tempfile.mkdtemp(prefix="ostiary-bench-"))
        reg = self.world.registry_host
        self.direct, self.slow_dir = self.work / "policies-direct", self.work / "policies-slow"
        self.proxy = FaultProxy(self.world, delay=SLOW_DELAY)
        harness.write_policies(self.direct, bench_policies(reg, self.world.notary_url, self.images.alice_pem))
        harness.write_policies(self.slow_dir, bench_policies(reg, self.proxy.url, self.images.alice_pem))
        self.sets = body_sets(self.images)
        self.token_file = self.work / "opa-token"
        self.token_file.write_text(OPA_TOKEN + "\n")
        write_authz_bundle(self.work / "opa-authz", OPA_TOKEN)

    def teardown(self) -> None:
        for t in self.targets:
            t.close()
        self.proxy.close()
        self.world.stop()
        shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------------ servers and loads

    def start(self, name: str, argv: list[str], ready_path: str, port: int) -> Server:
        t = Server(name, argv, f"http://127.0.0.1:{port}{ready_path}", port, self.work)
        self.targets.append(t)
        return t

    def serve(self, name: str, policy_dir: Path, *flags: str) -> Server:
        """`ostiary serve` as the chart runs it: OPA beside it on loopback (started by the shell that
        then becomes Ostiary, so OPA is Ostiary's child here and counted with the target), token
        authentication, the chart's GOGC; Ostiary with --opa-url and --opa-token-file."""
        port, opa_port = free_port(), free_port()
        sidecar = (
            f'GOGC={OPA_GOGC} "$0" run --server --skip-version-check --addr 127.0.0.1:{opa_port} '
            "--log-level error --optimize-store-for-read-speed "
            f"--authentication=token --authorization=basic --bundle {self.work / 'opa-authz'} & "
            'exec "$@"'
        )
        argv = ["sh", "-c", sidecar, self.opa_bin, str(harness.OSTIARY), "serve"]
        argv += ["--opa-url", f"http://127.0.0.1:{opa_port}", "--opa-token-file", str(self.token_file)]
        argv += ["--policy-dir", str(policy_dir), "--listen", f"127.0.0.1:{port}"]
        argv += ["--ca-file", self.world.ca_file, "--threads", str(self.args.threads), *flags]
        return self.start(name, argv, "/readyz", port)

    def close(self, t: Server) -> None:
        t.close()
        self.targets.remove(t)

    def record(self, r: Result) -> None:
        self.results.append(r)
        lat = r.latencies_ms or {}
        print(
            f"  {r.scenario:<22} c={r.concurrency:<3} n={r.n:<6} {r.throughput:7.0f}/s  p50 {lat.get('p50', 0):7.1f}  "
            f"p99 {lat.get('p99', 0):7.1f} ms  cpu {r.cpu_ms_server:6.2f}+{r.cpu_ms_opa:5.2f} ms/adm  "
            f"errors {r.errors or 0}  load {r.loadavg}",
            flush=True,
        )
        for e in r.examples[:2]:
            print(f"      e.g. {e}", flush=True)

    def levels_of(self, t: Server, scenario: str, name: str, bodies: Bodies, **kw: Any) -> None:
        """One recorded window per concurrency level."""
        for c in self.levels:
            self.record(
                run_load(t, scenario, name, bodies, c, duration=self.duration, warmup=self.warmup, **kw)
            )

    def prime(self, t: Server, bodies: Bodies) -> None:
        """Every body once (c=8, not recorded): the trust cache holds every repository afterwards."""
        r = run_load(t, "prime", "-", bodies, 8, duration=0, warmup=0, once=True)
        if r.errors:
            print(f"  priming {t.name}: errors {r.errors} {r.examples[:2]}", flush=True)

    # ------------------------------------------------------------------ phase 2: the scenarios

    def floors(self) -> None:
        """The bare gunicorn + Flask app, then a bare OPA with a one-rule query of the same input."""
        port = free_port()
        argv = [sys.executable, str(ROOT / "scripts" / "bench_floor_app.py"), "--listen", f"127.0.0.1:{port}"]
        flask = self.start("floor-flask", [*argv, "--threads", str(self.args.threads)], "/readyz", port)
        for name in ("deploy", "mix"):
            self.levels_of(flask, f"floor-flask-{name}", name, self.sets[name], check=False)
        self.close(flask)
        port = free_port()
        argv = [self.opa_bin, "run", "--server", "--skip-version-check", "--addr", f"127.0.0.1:{port}"]
        opa = self.start("floor-opa", [*argv, "--log-level", "error"], "/health", port)
        requests.put(
            f"http://127.0.0.1:{port}/v1/policies/floor",
            timeout=5,
            data=('package floor\n\nresult := {"allowed": true, "images": count(input.images)}\n'),
        ).raise_for_status()
        for name in ("deploy", "mix"):
            opa_bodies = [(harness.opa_input(b), w) for b, w in self.sets[name]]
            self.levels_of(
                opa, f"floor-opa-{name}", name, opa_bodies, path="/v1/data/floor/result", check=False
            )
        self.close(opa)

    def warm(self) -> None:
        """The trust cache warm (primed with every body); with --profile, py-spy and OPA's metrics."""
        t = self.serve("ostiary-warm", self.direct)
        self.prime(t, self.sets["mix"])
        for name in ("deploy", "mix"):
            if self.wanted(f"warm-{name}"):
                self.levels_of(t, f"warm-{name}", name, self.sets[name])
        if self.args.profile:
            print("profile: py-spy on the worker, warm-deploy at c=8", flush=True)
            self.extras["profile"] = profile(t, self.sets["deploy"], self.out, 10 if self.args.quick else 20)
            self.extras["opa_metrics"] = opa_metrics(t, self.sets["deploy"], self.world.ca_file, self.out)
            print(profile_text(self.extras["profile"]))
            print(json.dumps(self.extras["opa_metrics"], indent=1))
        self.close(t)

    def ttl1(self, name: str, policy_dir: Path) -> None:
        """`--trust-cache-ttl 1`: every repository's timestamp fetched again each second."""
        t = self.serve(f"ostiary-{name}", policy_dir, "--trust-cache-ttl", "1")
        self.prime(t, self.sets["mix"])
        self.levels_of(t, name, "mix", self.sets["mix"])
        self.close(t)

    def cold(self) -> None:
        """A fresh Ostiary per row; every repository of every request seen for the first time."""
        for name, per, c, policy_dir in (
            ("cold-pod10", 10, 1, self.direct),
            ("cold-deploy", 3, 1, self.direct),
            ("cold-deploy", 3, 8, self.direct),
            ("cold-pod10-slow", 10, 1, self.slow_dir),
        ):
            t = self.serve(f"ostiary-{name}-c{c}", policy_dir)
            bodies = cold_bodies(self.images, per)
            kind = "cold-deploy" if per == 3 else "cold-pod10"
            self.record(run_load(t, name, kind, bodies, c, duration=0, warmup=0, once=True))
            self.close(t)

    def run(self) -> None:
        if self.wanted("floor"):
            self.floors()
        if self.wanted("warm") or self.args.profile:
            self.warm()
        if self.wanted("expiry"):
            self.ttl1("expiry-mix", self.direct)
        if self.wanted("slow"):
            self.ttl1("slow-mix", self.slow_dir)
        if self.wanted("cold"):
            self.cold()
        if self.wanted("scale"):
            self.extras["scale"] = run_scale(self.out, self.args.quick)

    # ------------------------------------------------------------------ phase 3: the report

    def report(self) -> int:
        info, results, extras, out = self.info, self.results, self.extras, self.out
        info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        report = {
            "machine": info,
            "duration_s": self.duration,
            "warmup_s": self.warmup,
            "threads": self.args.threads,
            "quick": self.args.quick,
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    bench = Bench(parse_args(argv))
    bench.setup()
    try:
        bench.run()
    finally:
        bench.teardown()
    return bench.report()


if __name__ == "__main__":
    raise SystemExit(main())
