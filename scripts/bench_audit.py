#!/usr/bin/env python3
"""What an audit costs (docs/audit.md): prints figures, asserts nothing.

A real etcd + kube-apiserver (tests/e2e/cluster.py) and the real notary-server world
(tests/support/world.py); a ClusterImagePolicy requiring Notary trust for the world's registry;
--pods Pods created straight through the API (no webhook, no kubelet: they stay Pending), spread
over --namespaces namespaces, most running the signed image, every tenth an unsigned one. Then the
audit of ``ostiary audit`` / ``serve --audit`` runs unpaced (only the list requests are paced) twice:
cold (empty trust cache) and warm (within the cache's freshness), and the reports are written.
Printed: objects/s, Ostiary's CPU seconds (process time) and OPA's (from /proc), list requests.

Usage: .venv/bin/python scripts/bench_audit.py [--pods 3000] [--namespaces 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.audit.engine import Auditor, run_audit
from app.audit.ratelimit import TokenBucket
from app.audit.reports import ReportWriter
from app.runtime import Runtime, ServeConfig
from scripts.harness import cpu_seconds
from tests.e2e.cluster import running_control_plane
from tests.e2e.k8s import CRD_DIR, install_crds, load_documents
from tests.support.world import NotaryWorld, build_scenario


class CountingApi:
    """The runtime's API client, counting list pages."""

    def __init__(self, api):
        self.api, self.pages = api, 0

    def list_page(self, *args, **kwargs):
        self.pages += 1
        return self.api.list_page(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.api, name)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pods", type=int, default=3000)
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--page-size", type=int, default=250)
    parser.add_argument("--api-qps", type=float, default=20.0)
    args = parser.parse_args()

    from kubernetes import client

    with (
        tempfile.TemporaryDirectory() as tmp,
        running_control_plane(Path(tmp) / "kube") as plane,
        NotaryWorld() as world,
    ):
        scenario = build_scenario(world)
        admin = plane.api_client("admin")
        install_crds(admin, [d for p in sorted(CRD_DIR.glob("*.yaml")) for d in load_documents(p)])
        install_crds(admin, load_documents(REPO / "tests" / "e2e" / "crds" / "policyreports.yaml"))
        core = client.CoreV1Api(admin)
        for name in ("ostiary-system", *(f"bench-{i}" for i in range(args.namespaces))):
            core.create_namespace({"metadata": {"name": name}})
        client.CustomObjectsApi(admin).create_cluster_custom_object(
            "ostiary.dev",
            "v1",
            "clusterimagepolicies",
            {
                "apiVersion": "ostiary.dev/v1",
                "kind": "ClusterImagePolicy",
                "metadata": {"name": "bench"},
                "spec": {
                    "repositories": [
                        {
                            "name": f"{scenario.registry_host}/*",
                            "policy": {"trust": {"enabled": True, "trustServer": scenario.notary_url}},
                        }
                    ]
                },
            },
        )
        signed, unsigned = scenario["signed"].pinned, scenario["unsigned"].reference

        def create(i: int) -> None:
            image = unsigned if i % 10 == 9 else signed
            core.create_namespaced_pod(
                f"bench-{i % args.namespaces}",
                {"metadata": {"name": f"pod-{i}"}, "spec": {"containers": [{"name": "c", "image": image}]}},
            )

        t0 = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(args.pods)))
        print(f"created {args.pods} pods in {args.namespaces} namespaces in {time.monotonic() - t0:.1f}s")

        runtime = Runtime(
            ServeConfig(
                kube=True,
                kubeconfig=str(plane.kubeconfig("admin")),
                ca_file=str(scenario.ca_file),
                decision_log="off",
                read_only=True,
            )
        ).start()
        try:
            deadline = time.monotonic() + 60
            while not (runtime.kube.ready and runtime.serving()) and time.monotonic() < deadline:
                time.sleep(0.1)
            api = CountingApi(runtime.kube.api)
            auditor = Auditor(runtime.reviewer)
            opa_pid = runtime.local_opa.proc.pid
            for label in ("cold trust cache", "warm trust cache"):
                api.pages = 0
                opa_cpu = cpu_seconds(opa_pid)
                run = run_audit(
                    api, auditor, list_bucket=TokenBucket(args.api_qps, burst=2), page_size=args.page_size
                )
                opa_cpu = cpu_seconds(opa_pid) - opa_cpu
                print(
                    f"audit, {label}: {run.objects} objects in {run.seconds:.1f}s = {run.objects / run.seconds:.0f} objects/s; "
                    f"Ostiary CPU {run.cpu_seconds:.1f}s ({1000 * run.cpu_seconds / run.objects:.2f} ms/object), "
                    f"OPA CPU {opa_cpu:.1f}s ({1000 * opa_cpu / run.objects:.2f} ms/object); "
                    f"{api.pages} list requests; results {run.counts()}"
                )
            stats = runtime.trust.stats()
            print(f"trust service: {stats}")
            writer = ReportWriter(runtime.kube.api)
            t0 = time.monotonic()
            writer.write(run)
            print(f"reports: {writer.writes} written in {time.monotonic() - t0:.1f}s")
            t0 = time.monotonic()
            writer.write(run)
            print(f"reports again, unchanged: {writer.writes} writes in total, {time.monotonic() - t0:.1f}s")
        finally:
            runtime.stop()


if __name__ == "__main__":
    main()
