#!/usr/bin/env python3
"""What the background check of OPA's modules costs the worker: CPU per `PolicySync.difference()`.

Starts an OPA as `ostiary serve` starts it (the pinned binary, token authentication), pushes the
static Rego library and `--policies` policy documents (a mix of ClusterImagePolicies and
ImagePolicies translated exactly as Ostiary translates them), then calls `difference()` (what
the repair every few seconds and the readiness probe both run) `--calls` times and prints this
process's CPU time per call (time.process_time: every thread of this process, as a worker's
CPU would count it) and the wall time per call. OPA's own CPU is printed beside it.

With `--idle SECONDS`, it then starts `ostiary serve` (its own OPA, token authentication) on a
policy directory holding the same policies and, once /readyz is 200 and a few seconds have passed,
prints OPA's CPU (and the Ostiary processes') per second of idle serving over SECONDS: what the
readiness probe and the repair cost when nothing happens (/proc/<pid>/stat).

Usage: .venv/bin/python scripts/measure_opa_check.py [--policies 200] [--calls 50] [--idle 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

from app.opa.client import OpaClient  # noqa: E402
from app.opa.process import LocalOpa  # noqa: E402
from app.policies.model import PolicyResource  # noqa: E402
from app.policies.sync import PolicySync, library_modules  # noqa: E402
from app.policies.translate import translate  # noqa: E402
from scripts.harness import cluster_policy, image_policy, ostiary_serve, write_policies  # noqa: E402
from scripts.measure_policy_cost import entry  # noqa: E402


def repositories(i: int, count: int) -> list[dict]:
    """`count` entries of team i: a third with trust, a third with a `simple` requirement, a third plain."""
    return [entry(j, team=i) for j in range(count)]


def resources(count: int) -> list[PolicyResource]:
    """A tenth ClusterImagePolicies of 20 entries, the rest ImagePolicies of 5, one per namespace."""
    found = []
    for i in range(count):
        if i % 10 == 0:
            spec = {"repositories": repositories(i, 20)}
            found.append(
                PolicyResource("ostiary.dev/v1", "ClusterImagePolicy", f"c{i}", None, spec, "measure")
            )
        else:
            spec = {"repositories": repositories(i, 5)}
            found.append(PolicyResource("ostiary.dev/v1", "ImagePolicy", f"p{i}", f"ns{i}", spec, "measure"))
    return found


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def idle(policies: int, seconds: float, settle: float = 5.0) -> None:
    """OPA's and Ostiary's CPU per second of an idle `ostiary serve` with the library and `policies`
    policies (the same as the check's), measured after /readyz is 200 and `settle` seconds more."""
    with tempfile.TemporaryDirectory(prefix="measure-idle-") as tmp:
        workdir = Path(tmp)
        docs = {}
        for i, resource in enumerate(resources(policies)):
            repositories = resource.spec["repositories"]
            if resource.namespace:
                docs[f"p{i}.json"] = image_policy(resource.name, resource.namespace, repositories)
            else:
                docs[f"p{i}.json"] = cluster_policy(resource.name, repositories)
        write_policies(workdir / "policies", docs)
        server = ostiary_serve("idle", workdir, workdir / "policies", timeout=180)
        try:
            time.sleep(settle)
            before, started = server.cpu(), time.monotonic()
            time.sleep(seconds)
            after, elapsed = server.cpu(), time.monotonic() - started
            ready = requests.get(server.url + "/readyz", timeout=5).json()["reason"]
        finally:
            server.close()
    opa = (after["opa"] - before["opa"]) / elapsed
    ostiary = (after["server"] - before["server"]) / elapsed
    print(
        f"idle `ostiary serve`, library + {policies} policies, {elapsed:.0f} s after /readyz 200 (+{settle:.0f} s):"
    )
    print(
        f"  OPA CPU {opa * 1000:.1f} ms per second ({opa * 100:.1f}% of a core), Ostiary {ostiary * 1000:.1f} ms per second"
    )
    print(f"  /readyz: {ready[:120]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=200)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--idle", type=float, default=0.0, help="seconds of idle `ostiary serve` to measure")
    args = parser.parse_args()
    opa = LocalOpa(authenticate=True).start()
    try:
        assert opa.proc is not None
        client = OpaClient(opa.url, timeout=30.0, token=opa.token)
        sync = PolicySync(client, library_modules())
        sync.replace_all(translate(r) for r in resources(args.policies))
        assert sync.difference().empty, "OPA does not hold the set just pushed"
        listing = client._request("GET", "/v1/policies", 30.0).content
        sync.difference()  # warm: the connection and any cache
        opa_cpu, cpu, wall = cpu_of(opa.proc.pid), time.process_time(), time.perf_counter()
        for _ in range(args.calls):
            assert sync.difference().empty
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        opa_cpu = cpu_of(opa.proc.pid) - opa_cpu
        # A check that finds a change: one module and one document written behind Ostiary's back.
        library = library_modules()
        client.put_policy(library[0].id, library[0].source + "\n# changed\n")
        first = translate(resources(args.policies)[1])
        client.put_data(first.id, first.source.replace('"policy":{', '"policy":{"changed":true,', 1))
        changed = time.process_time()
        found = sync.difference()
        changed = time.process_time() - changed
        assert len(found.altered) == 2, found.describe()
    finally:
        opa.stop()
    print(
        f"library + {args.policies} policy documents ({len(listing) / 1024:.0f} KiB listed by GET /v1/policies), "
        f"{args.calls} calls of difference():"
    )
    print(
        f"  worker CPU {cpu / args.calls * 1000:.2f} ms per check, wall {wall / args.calls * 1000:.2f} ms, "
        f"OPA CPU {opa_cpu / args.calls * 1000:.1f} ms"
    )
    print(f"  worker CPU {changed * 1000:.2f} ms for the check that finds a module and a document changed")
    if args.idle > 0:
        idle(args.policies, args.idle)


if __name__ == "__main__":
    main()
