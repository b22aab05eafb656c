#!/usr/bin/env python3
"""Ostiary benchmark: prints figures, asserts nothing.

1. The pure Notary verifier over real Docker Hub trust data (alice-image: root, timestamp,
   snapshot, targets and three delegations): verifications per second.
2. `ostiary serve` with its own OPA and a policy set of N cluster policies: admission latency
   percentiles and throughput for Deployments with several images (no trust: this measures the
   decision path itself), and the resident memory of the webhook worker and of OPA afterwards.

Usage: .venv/bin/python scripts/bench.py [--requests 2000] [--concurrency 8] [--policies 200]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FIXTURES = ROOT.parent / "shared" / "fixtures" / "notary" / "dockerhub-captured"


def bench_verifier(seconds: float = 3.0) -> None:
    from app.notary.trusted import TrustedRepository
    from app.notary.walker import walk

    case = json.loads((FIXTURES / "expected.json").read_text())["cases"]["alice-image"]
    d = FIXTURES / "alice-image"
    files = {p.relative_to(d).with_suffix("").as_posix(): p.read_bytes() for p in d.rglob("*.json")}
    now = datetime.fromisoformat(case["valid_at"])
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        repo = TrustedRepository(case["gun"], now, server="https://notary.docker.io")
        walk(repo, files.get).repository.facts("test", None, [])
        count += 1
    elapsed = time.perf_counter() - started
    print(
        f"verifier: {count / elapsed:.0f} full verifications/s of alice-image "
        f"({1000 * elapsed / count:.2f} ms each, {len(files)} roles)"
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    out = subprocess.run(
        check=False, args=["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True
    ).stdout
    return [int(x) for x in out.split()]


def bench_server(n_requests: int, concurrency: int, n_policies: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ostiary-bench-"))
    docs = []
    for i in range(n_policies):
        docs.append(
            "apiVersion: ostiary.dev/v1\nkind: ClusterImagePolicy\n"
            f"metadata: {{name: p{i}}}\nspec:\n  repositories:\n"
            f"    - name: 'registry{i}.example.com/team/*'\n    - name: 'registry{i}.example.com/team/app:1.{i}'\n"
        )
    (tmp / "policies.yaml").write_text("---\n".join(docs))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ostiary"),
            "--log-level",
            "WARNING",
            "serve",
            "--policy-dir",
            str(tmp),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if requests.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("server never became ready")
        images = [f"registry{i % n_policies}.example.com/team/app:1.{i % n_policies}" for i in range(4)]
        body = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "bench",
                "operation": "CREATE",
                "namespace": "default",
                "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "object": {
                    "kind": "Deployment",
                    "metadata": {"name": "b"},
                    "spec": {
                        "template": {
                            "spec": {
                                "containers": [
                                    {"name": f"c{i}", "image": img} for i, img in enumerate(images)
                                ]
                            }
                        }
                    },
                },
            },
        }
        session = requests.Session()
        assert session.post(base + "/admit", json=body, timeout=10).json()["response"]["allowed"] is True

        def one(_):
            t = time.perf_counter()
            r = session.post(base + "/admit", json=body, timeout=10)
            r.raise_for_status()
            return time.perf_counter() - t

        for _ in range(50):
            one(0)
        started = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            latencies = sorted(pool.map(one, range(n_requests)))
        elapsed = time.perf_counter() - started
        q = statistics.quantiles(latencies, n=100)
        print(
            f"admission: {n_requests} requests, concurrency {concurrency}, {n_policies} policies, 4 images each"
        )
        print(
            f"  throughput {n_requests / elapsed:.0f} req/s; latency p50 {1000 * q[49]:.1f} ms, "
            f"p90 {1000 * q[89]:.1f} ms, p99 {1000 * q[98]:.1f} ms, max {1000 * latencies[-1]:.1f} ms"
        )
        worker = children(proc.pid)
        for pid in worker:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            print(f"  rss worker {comm}[{pid}] {rss_kib(pid) / 1024:.1f} MiB")
            for sub in children(pid):
                print(
                    f"  rss {Path(f'/proc/{sub}/comm').read_text().strip()}[{sub}] {rss_kib(sub) / 1024:.1f} MiB"
                )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--policies", type=int, default=200)
    args = parser.parse_args()
    bench_verifier()
    bench_server(args.requests, args.concurrency, args.policies)


if __name__ == "__main__":
    main()
