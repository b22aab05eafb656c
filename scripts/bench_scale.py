#!/usr/bin/env python3
"""How an admission's cost grows: images per Pod × repository entries in force. Prints figures.

Starts `ostiary serve --policy-dir` (its own OPA, gunicorn, the chart's settings) once per entry
count M with M repository entries spread over cluster policies and hosts (a quarter of them with
a wildcard host, so the index has a shared bucket too), then posts Pods of N images (every image
matched by one entry, no trust: this measures matching and deciding) and prints the median and
the worst latency of a few requests per (N, M), and the cost per image. Linear means the
per-image column stays flat as N grows and the rows for larger M stay close to the smaller ones.

Usage: .venv/bin/python scripts/bench_scale.py [--images 1,10,100,400,1000] [--entries 10,300,3000]
                                               [--repeat 5] [--json FILE]
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
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def write_policies(directory: Path, entries: int, per_policy: int = 50) -> None:
    docs = []
    for p in range(0, entries, per_policy):
        lines = []
        for i in range(p, min(entries, p + per_policy)):
            if i % 4 == 3:
                lines.append(f"    - name: '*.wild{i}.example.com/team{i}/*'")
            else:
                lines.append(f"    - name: 'registry{i}.example.com/team/*'")
        docs.append(
            "apiVersion: ostiary.dev/v1\nkind: ClusterImagePolicy\n"
            f"metadata: {{name: p{p}}}\nspec:\n  repositories:\n" + "\n".join(lines) + "\n"
        )
    (directory / "policies.yaml").write_text("---\n".join(docs))


def image_for(i: int, entries: int) -> str:
    j = i % entries
    if j % 4 == 3:
        return f"eu.wild{j}.example.com/team{j}/app:{i}"
    return f"registry{j}.example.com/team/app:{i}"


def review(n_images: int, entries: int) -> dict:
    containers = [{"name": f"c{i}", "image": image_for(i, entries)} for i in range(n_images)]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "scale",
            "operation": "CREATE",
            "namespace": "default",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "scale"},
                "spec": {"containers": containers},
            },
        },
    }


def serve(policy_dir: Path) -> tuple[subprocess.Popen, str]:
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
            str(policy_dir),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 120
    while time.monotonic() < end:
        try:
            if requests.get(base + "/readyz", timeout=1).status_code == 200:
                return proc, base
        except requests.RequestException:
            pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    raise SystemExit("ostiary serve never became ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="1,10,100,400,1000")
    parser.add_argument("--entries", default="10,300,3000")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    image_counts = [int(x) for x in args.images.split(",")]
    entry_counts = [int(x) for x in args.entries.split(",")]
    rows = []
    print(f"{'entries':>8} {'images':>7} {'median ms':>10} {'max ms':>8} {'ms/image':>9} {'verdict':>8}")
    for entries in entry_counts:
        tmp = Path(tempfile.mkdtemp(prefix="ostiary-scale-"))
        write_policies(tmp, entries)
        proc, base = serve(tmp)
        try:
            session = requests.Session()
            for n in image_counts:
                body = json.dumps(review(n, entries))
                headers = {"Content-Type": "application/json"}
                session.post(base + "/admit", data=body, headers=headers, timeout=60)  # warm
                times, allowed = [], None
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    answer = session.post(base + "/admit", data=body, headers=headers, timeout=60)
                    times.append(time.perf_counter() - t)
                    answer.raise_for_status()
                    allowed = answer.json()["response"]["allowed"]
                median = statistics.median(times) * 1000
                row = {
                    "entries": entries,
                    "images": n,
                    "median_ms": round(median, 1),
                    "max_ms": round(max(times) * 1000, 1),
                    "ms_per_image": round(median / n, 3),
                    "allowed": allowed,
                }
                rows.append(row)
                print(
                    f"{entries:>8} {n:>7} {median:>10.1f} {row['max_ms']:>8.1f} {row['ms_per_image']:>9.3f} "
                    f"{'allow' if allowed else 'DENY':>8}",
                    flush=True,
                )
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
