#!/usr/bin/env python3
"""What a policy costs OPA: memory and compile time per 1,000 repository entries. Prints figures.

For each entry count N, starts a fresh `opa run --server` (the pinned binary, as `ostiary serve`
starts it), pushes the static Rego library, then one ClusterImagePolicy of N entries translated
exactly as Ostiary translates it (app.policies.translate): with `--as data` the data document
Ostiary writes, with `--as module` the same document as a Rego module (what Ostiary pushed before
policies were data). Reports the bytes pushed, the time OPA took to take them, and OPA's resident
memory after the push and at its peak (VmRSS, VmHWM of /proc) above the library alone.
Entries are a realistic mix: a third with a trust section (server and signer), a third with a
`simple` requirement, a third plain, each a distinct repository on one of 20 hosts.

The bounds of app/policies/bounds.py are chosen from these figures (docs/security.md, "Bounds on
policies").

Usage: .venv/bin/python scripts/measure_policy_cost.py [--entries 100,1000,5000] [--as module,data] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.opa.client import OpaClient  # noqa: E402
from app.opa.process import LocalOpa  # noqa: E402
from app.policies.model import PolicyResource  # noqa: E402
from app.policies.sync import PolicySync, library_modules  # noqa: E402
from app.policies.translate import policy_data, translate  # noqa: E402


def entry(i: int, team: int | None = None) -> dict:
    """Entry i: a third with trust, a third with a `simple` requirement, a third plain; in team `team`
    (default: its own)."""
    name = f"registry{i % 20}.example.com/team{i if team is None else team}/app{i}-*"
    if i % 3 == 0:
        policy: dict = {
            "trust": {
                "enabled": True,
                "trustServer": "https://notary.example.com:4443",
                "signerSecrets": [{"name": f"signer{i % 7}"}],
            }
        }
    elif i % 3 == 1:
        policy = {"simple": {"requirements": [{"type": "signedBy", "keySecret": f"key{i % 5}"}]}}
    else:
        return {"name": name}
    return {"name": name, "policy": policy}


def policy(entries: int) -> PolicyResource:
    spec = {"repositories": [entry(i) for i in range(entries)]}
    return PolicyResource("ostiary.dev/v1", "ClusterImagePolicy", f"p{entries}", None, spec, "measure")


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def measure(entries: int, as_data: bool = False) -> dict:
    """One fresh OPA (started as `ostiary serve` starts it), the library, then one policy of
    `entries` entries: (`as_data`) the data document Ostiary writes (PUT /v1/data, stored without
    compiling), or the same document as the Rego module Ostiary pushed before
    (`package ...; policy := <JSON>`, PUT /v1/policies: parsed and compiled)."""
    resource = policy(entries)
    module = translate(resource)
    body = module.source.encode()
    rego = f"package {module.package}\n\npolicy := {json.dumps(policy_data(resource), indent=2)}\n"
    opa = LocalOpa().start()
    try:
        assert opa.proc is not None
        client = OpaClient(opa.url, timeout=120.0)
        PolicySync(client).set_base(library_modules())
        time.sleep(0.5)
        base_rss, _ = memory_kib(opa.proc.pid)
        started = time.monotonic()
        rewrite = None
        if as_data:
            _put_data(client, module.id, body)
            seconds = time.monotonic() - started
            changed = dict(policy_data(resource), changed=True)  # one more key: the whole document differs
            started = time.monotonic()
            _put_data(client, module.id, json.dumps({"policy": changed}).encode())
            rewrite = time.monotonic() - started
        else:
            client.put_policy(module.id, rego)
            seconds = time.monotonic() - started
        time.sleep(0.5)
        rss, peak = memory_kib(opa.proc.pid)
    finally:
        opa.stop()
    return {
        "entries": entries,
        "as": "data" if as_data else "module",
        "module_bytes": len(body) if as_data else len(rego.encode()),
        "push_seconds": round(seconds, 3),
        "rss_mib_above_library": round((rss - base_rss) / 1024, 1),
        "peak_mib_above_library": round((peak - base_rss) / 1024, 1),
        "rewrite_seconds": None if rewrite is None else round(rewrite, 3),
    }


def _put_data(client: OpaClient, path: str, body: bytes) -> None:
    resp = client._request("PUT", f"/v1/data/{path}", 300.0, body=body, content_type="application/json")
    assert resp.status_code == 204, resp.text[:300]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", default="100,1000,5000")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument(
        "--as", dest="kinds", default="data", help="data, module or module,data: how the policy is pushed"
    )
    args = parser.parse_args()
    rows = [
        measure(int(n), kind == "data") for kind in args.kinds.split(",") for n in args.entries.split(",")
    ]
    print(
        f"{'as':>6} {'entries':>8} {'KiB':>11} {'push s':>8} {'rewrite s':>9} {'RSS MiB':>8} {'peak MiB':>9} "
        f"{'per 1,000: KiB, s, peak MiB':>28} {'peak B/B':>8}"
    )
    for r in rows:
        per = 1000 / r["entries"]
        print(
            f"{r['as']:>6} {r['entries']:>8} {r['module_bytes'] / 1024:>11.0f} {r['push_seconds']:>8.2f} "
            f"{r['rewrite_seconds'] if r['rewrite_seconds'] is not None else '-':>9} "
            f"{r['rss_mib_above_library']:>8.1f} {r['peak_mib_above_library']:>9.1f} "
            f"{r['module_bytes'] / 1024 * per:>12.0f} {r['push_seconds'] * per:>6.2f} "
            f"{r['peak_mib_above_library'] * per:>8.1f} "
            f"{r['peak_mib_above_library'] * 2**20 / r['module_bytes']:>8.0f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
