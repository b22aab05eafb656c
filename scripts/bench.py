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
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.notary.trusted import TrustedRepository
from app.notary.walker import walk
from scripts import harness

FIXTURES = ROOT.parent / "shared" / "fixtures" / "notary" / "dockerhub-captured"


def bench_verifier(seconds: float = 3.0) -> None:
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


def write_policies(directory: Path, n_policies: int) -> None:
    docs = []
    for i in range(n_policies):
        docs.append(
            "apiVersion: ostiary.dev/v1\nkind: ClusterImagePolicy\n"
            f"metadata: {{name: p{i}}}\nspec:\n  repositories:\n"
            f"    - name: 'registry{i}.example.com/team/*'\n    - name: 'registry{i}.example.com/team/app:1.{i}'\n"
        )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policies.yaml").write_text("---\n".join(docs))


def bench_server(n_requests: int, concurrency: int, n_policies: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="ostiary-bench-"))
    write_policies(tmp / "policies", n_policies)
    server = harness.ostiary_serve("ostiary", tmp, tmp / "policies", log_level="WARNING", timeout=60)
    base = server.url
    try:
        images = [f"registry{i % n_policies}.example.com/team/app:1.{i % n_policies}" for i in range(4)]
        body = harness.review("Deployment", "default", images, name="b", rich=False)
        session = requests.Session()
        assert session.post(base + "/admit", json=body, timeout=10).json()["response"]["allowed"] is True

        def one(_: int) -> float:
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
        for pid in harness.descendants(server.proc.pid)[1:]:
            print(f"  rss {harness.proc_name(pid)}[{pid}] {harness.rss_mib(pid):.1f} MiB")
    finally:
        server.close()


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
