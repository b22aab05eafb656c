#!/usr/bin/env python3
"""The profiling half of scripts/bench_admit.py `--profile`: py-spy on the Ostiary worker under load,
a summary of its stacks, OPA's own metrics of the plan and decision queries (and the files to profile
the same evaluation offline with `opa eval --profile`), and what each HTTP client costs per OPA query.
"""

from __future__ import annotations

import collections
import http.client
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import urllib3

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.admission.review import DECISION_PATH, PLAN_PATH, Reviewer
from app.notary.service import TrustService
from app.opa.client import OpaClient
from scripts.harness import OPA_AUTH, OPA_TOKEN, SYSTEM_NS, Server


class PySpy:
    """Three py-spy recordings of one process for `seconds`, begun when the measured window starts:
    raw stacks with --gil (where the worker's Python CPU goes: the one worker process is GIL-bound)
    and without (threads blocked in C count as active too, which shows where requests wait), and a
    flame graph."""

    def __init__(self, out: Path, seconds: float) -> None:
        self.spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.seconds = seconds
        self.raw_gil, self.raw_active = out / "profile-gil.txt", out / "profile-active.txt"
        self.svg = out / "profile.svg"
        self.procs: list[subprocess.Popen] = []

    def missing(self) -> str | None:
        if not Path(self.spy).exists():
            return "py-spy is not installed (pip install -e '.[bench]')"
        return None

    def start(self, target: Server) -> None:
        worker = target.worker_pid()
        for fmt, dest, gil in (
            ("raw", self.raw_gil, True),
            ("raw", self.raw_active, False),
            ("flamegraph", self.svg, True),
        ):
            argv = [self.spy, "record", "--pid", str(worker), "--rate", "100", "--nonblocking"]
            argv += ["--gil"] if gil else []
            argv += ["--duration", str(int(self.seconds)), "--format", fmt, "-o", str(dest)]
            self.procs.append(
                subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            )

    def collect(self, load: dict[str, object]) -> dict[str, object]:
        errs = []
        for p in self.procs:
            _, err = p.communicate(timeout=60)
            if p.returncode != 0:
                errs.append(err[-500:])
        if not self.raw_gil.exists():
            return {"error": "py-spy failed: " + " | ".join(errs)}
        return {
            "load": load,
            "gil": summarize_stacks(self.raw_gil),
            "active": summarize_stacks(self.raw_active) if self.raw_active.exists() else None,
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
        stack, _, number = line.rpartition(" ")
        if stack and number.isdigit():
            stacks.append((stack.split(";"), int(number)))
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


class _NoObjects:
    """The reviewer's object store: no Secrets, no ServiceAccounts (the bench's policies name none
    that the deploy bodies need)."""

    def get_secret(self, namespace: str, name: str) -> None:
        return None

    def get_service_account(self, namespace: str, name: str) -> None:
        return None


class _Capture:
    """The reviewer's OPA: asks the real one and keeps each query's path and input."""

    def __init__(self, opa_url: str) -> None:
        self.url = opa_url
        self.calls: list[tuple[str, dict]] = []

    def query(self, path: str, input: dict, deadline: float) -> Any:  # OPA's decoded JSON result
        r = requests.post(f"{self.url}/v1/data/{path}", json={"input": input}, timeout=10, headers=OPA_AUTH)
        self.calls.append((path, json.loads(json.dumps(input))))
        return r.json().get("result")


def captured_queries(url: str, review: dict, ca_file: str) -> list[tuple[str, dict]]:
    """The plan and decision queries Ostiary's own Reviewer (with its own TrustService) sends for
    `review`: (path, input) each."""
    cap = _Capture(url)
    reviewer = Reviewer(cap, _NoObjects(), trust=TrustService(ca_file=ca_file), system_namespace=SYSTEM_NS)
    reviewer.review(review)
    return cap.calls


def dump_for_opa_eval(url: str, calls: list[tuple[str, dict]], dump: Path) -> None:
    """The queries' inputs, the modules and the policy documents OPA holds, so the same evaluation can
    be profiled offline:
      opa eval --profile -d DIR/modules -d DIR/data.json -i DIR/input-decision.json data.ostiary.main.decision"""
    (dump / "modules").mkdir(parents=True, exist_ok=True)
    for path, inp in calls:
        (dump / f"input-{path.rsplit('/', 1)[-1]}.json").write_text(json.dumps(inp, indent=1))
    policies = requests.get(f"{url}/v1/policies", timeout=10, headers=OPA_AUTH).json().get("result") or []
    for mod in policies:
        if not mod["id"].startswith("ostiary/"):
            continue  # OPA's own authz policy
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", mod["id"]).strip("_") or "module"
        (dump / "modules" / (name if name.endswith(".rego") else name + ".rego")).write_text(mod["raw"])
    # the policies are data documents: -d DIR/data.json beside the modules
    held = requests.get(f"{url}/v1/data/ostiary_policies", timeout=10, headers=OPA_AUTH).json()
    (dump / "data.json").write_text(json.dumps({"ostiary_policies": held.get("result") or {}}))


def query_metrics(url: str, path: str, inp: dict, n: int = 50) -> dict:
    """OPA's ?metrics&instrument of one query, the mean of n: the 14 largest timers (ms), the counters."""
    sums: dict[str, float] = collections.defaultdict(float)
    body = json.dumps({"input": inp})
    answer_bytes = 0
    for _ in range(n):
        r = requests.post(
            f"{url}/v1/data/{path}?metrics=true&instrument=true",
            data=body,
            headers={"Content-Type": "application/json", **OPA_AUTH},
            timeout=10,
        )
        answer_bytes = len(r.content)
        for k, v in (r.json().get("metrics") or {}).items():
            if isinstance(v, int | float):  # instrumentation also gives histograms: skipped
                sums[k] += v
    timers = {k: round(v / n / 1e6, 3) for k, v in sums.items() if k.startswith("timer_")}
    out: dict[str, object] = dict(sorted(timers.items(), key=lambda kv: -kv[1])[:14])
    out.update({k: round(v / n, 1) for k, v in sums.items() if k.startswith("counter_")})
    out["unit"] = f"ms, mean of {n}"
    out["answer_bytes"] = answer_bytes
    return out


def opa_metrics(target: Server, bodies: list[tuple[dict, bool]], ca_file: str, out_dir: Path) -> dict:
    """OPA's own view: Prometheus counters of Ostiary's OPA, and ?metrics of plan and decision queries
    with the input Ostiary builds (trust facts gathered by Ostiary's own TrustService)."""
    url = target.opa_url()
    if url is None:
        return {"error": "no OPA process found under ostiary serve"}
    calls = captured_queries(url, bodies[0][0], ca_file)
    dump_for_opa_eval(url, calls, out_dir / "opa-eval")
    out: dict = {
        "queries_per_admission": len(calls),
        "input_bytes": {p: len(json.dumps(i)) for p, i in calls},
    }
    for path, inp in calls:
        out[path] = query_metrics(url, path, inp)
    for p in (PLAN_PATH, DECISION_PATH):
        out.setdefault(p, {})
    if calls:
        out["client_costs_plan_query"] = client_costs(url, calls[0][0], calls[0][1])
    return out


def client_costs(url: str, path: str, inp: dict, n: int = 300) -> dict:
    """Python CPU (this process, single thread) and wall time per OPA query for four HTTP clients, same
    query, same input, same OPA: what the OPA client's choice of library costs per round trip."""
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
