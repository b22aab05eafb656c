#!/usr/bin/env python3
"""Pod create latency through the API server with the chart's webhook pods on a real kubelet.

One command after setup (root; the real one-node cluster of tests/node):

    .venv/bin/python scripts/bench_node.py [--requests 200] [--out DIR]

Starts the node and a notary-server + registry on its bridge, installs the chart (cluster mode, two
replicas, only image names changed), signs a number of runnable images, then times `POST pods`
(the whole admission: API server -> webhook pod -> OPA sidecar -> answer -> storage) at a few
concurrencies:

- warm: the same signed image, trust data cached in the webhook;
- cold: each request names a repository the webhook has never seen (a Notary walk per request).

Prints p50 / p90 / p99 / max and throughput per scenario, writes bench-node.json when --out is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client

from tests.node.cluster import Node
from tests.node.conftest import pause_binary
from tests.node.test_node_chart import cluster_policy, install, restricted_namespace
from tests.support.world import NotaryWorld


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def timed_creates(api, namespace: str, images: list[str], concurrency: int) -> tuple[list[float], float, int]:
    core = client.CoreV1Api(api)
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    queue = list(images)

    def worker() -> None:
        nonlocal errors
        while True:
            with lock:
                if not queue:
                    return
                image = queue.pop()
            body = {
                "metadata": {"name": f"b-{uuid.uuid4().hex[:10]}"},
                "spec": {
                    "containers": [{"name": "c", "image": image}],
                    "nodeName": "ostiary-bench-none",  # never scheduled onto the node: only admission is timed
                },
            }
            start = time.perf_counter()
            try:
                core.create_namespaced_pod(namespace, body)
                ok = True
            except client.ApiException:
                ok = False
            elapsed = time.perf_counter() - start
            with lock:
                if ok:
                    latencies.append(elapsed * 1000)
                else:
                    errors += 1

    began = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - began, errors


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=200, help="admissions per warm scenario")
    parser.add_argument(
        "--cold-repos", type=int, default=24, help="signed repositories for the cold scenario"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ostiary-bench-node-"))
    node = Node(work / "node")
    results: dict[str, dict] = {}
    world = None
    try:
        node.start()
        print(f"node Ready in {node.startup_seconds:.1f}s")
        world = NotaryWorld(host=node.bridge_ip).start()
        node.add_registry(world.registry_host)
        files = {"pause": (pause_binary(), 0o755)}
        images = []
        for i in range(args.cold_repos + 1):
            pushed = world.push_files(f"bench/app{i}", "v1", files, cmd=["/pause"], labels={"i": str(i)})
            world.sign(f"bench/app{i}", "v1", pushed.digest, pushed.size)
            images.append(world.image_ref(f"bench/app{i}", "v1"))
        api = node.api_client()
        namespace = restricted_namespace(api, "ostiary-system")
        values = {
            "replicaCount": 2,
            "notaryCABundle": Path(world.ca_file).read_text(),
            "policies": [cluster_policy("bench", world.registry_host, world.notary_url, repo="bench/*")],
        }
        install(node, "install", namespace, "bench", values, "--wait")
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        client.CoreV1Api(api).create_namespace({"metadata": {"name": ns}})
        warm_image, cold_images = images[0], images[1:]
        timed_creates(api, ns, [warm_image] * 10, 2)  # warm the cache and the connections
        half = len(cold_images) // 2
        scenarios = [("cold c=1", cold_images[:half], 1), ("cold c=4", cold_images[half:], 4)]
        scenarios += [(f"warm c={c}", [warm_image] * args.requests, c) for c in (1, 4, 16)]
        for name, batch, concurrency in scenarios:
            latencies, seconds, errors = timed_creates(api, ns, batch, concurrency)
            results[name] = {
                "n": len(latencies),
                "errors": errors,
                "p50_ms": round(statistics.median(latencies), 1),
                "p90_ms": round(pct(latencies, 90), 1),
                "p99_ms": round(pct(latencies, 99), 1),
                "max_ms": round(max(latencies), 1),
                "per_s": round(len(latencies) / seconds, 1),
            }
        print(
            f"{'scenario':<12} {'n':>5} {'err':>4} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} {'per s':>7}"
        )
        for name, r in results.items():
            print(
                f"{name:<12} {r['n']:>5} {r['errors']:>4} {r['p50_ms']:>8} {r['p90_ms']:>8} {r['p99_ms']:>8} "
                f"{r['max_ms']:>8} {r['per_s']:>7}"
            )
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "bench-node.json").write_text(json.dumps(results, indent=2))
    finally:
        if world is not None:
            world.stop()
        node.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
