#!/usr/bin/env python3
"""How an admission's cost grows: images per Pod × repository entries in force. Prints figures.

Starts `ostiary serve --policy-dir` (its own OPA, gunicorn, the chart's settings, the policy bounds
of a 1Gi OPA) once per entry count M with M repository entries spread over cluster policies and
hosts (a quarter of them with a wildcard host, so the index has a shared bucket too), then posts Pods of N images (every image
matched by one entry, no trust: this measures matching and deciding) and prints the median and
the worst latency of a few requests per (N, M), and the cost per image. Linear means the
per-image column stays flat as N grows and the rows for larger M stay close to the smaller ones.

Usage: .venv/bin/python scripts/bench_scale.py [--images 1,10,100,400,1000] [--entries 10,300,3000]
                                               [--repeat 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# 3,000 entries compile to about 1.2 MB of cluster policy data, over the bounds derived from the
# chart's default 256Mi OPA limit (512 KiB per scope, app/policies/bounds.py): the bounds of a 1Gi OPA.
OPA_MEMORY = ("--opa-memory-limit", "1Gi")

from scripts import harness


def write_policies(directory: Path, entries: int, per_policy: int = 50) -> None:
    directory.mkdir(parents=True, exist_ok=True)
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
    return harness.review(
        "Pod", "default", [image_for(i, entries) for i in range(n_images)], name="scale", rich=False
    )


def measure(base: str, entries: int, n: int, repeat: int) -> dict:
    """The median and worst of `repeat` admissions of an n-image Pod (after one to warm up)."""
    session = requests.Session()
    body = json.dumps(review(n, entries))
    headers = {"Content-Type": "application/json"}
    session.post(base + "/admit", data=body, headers=headers, timeout=60)  # warm
    times, allowed = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        answer = session.post(base + "/admit", data=body, headers=headers, timeout=60)
        times.append(time.perf_counter() - t)
        answer.raise_for_status()
        allowed = answer.json()["response"]["allowed"]
    median = statistics.median(times) * 1000
    return {
        "entries": entries,
        "images": n,
        "median_ms": round(median, 1),
        "max_ms": round(max(times) * 1000, 1),
        "ms_per_image": round(median / n, 3),
        "allowed": allowed,
    }


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
        write_policies(tmp / "policies", entries)
        server = harness.ostiary_serve(
            "ostiary", tmp, tmp / "policies", *OPA_MEMORY, log_level="WARNING", timeout=120
        )
        try:
            for n in image_counts:
                row = measure(server.url, entries, n, args.repeat)
                rows.append(row)
                print(
                    f"{entries:>8} {n:>7} {row['median_ms']:>10.1f} {row['max_ms']:>8.1f} "
                    f"{row['ms_per_image']:>9.3f} {'allow' if row['allowed'] else 'DENY':>8}",
                    flush=True,
                )
        finally:
            server.close()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
