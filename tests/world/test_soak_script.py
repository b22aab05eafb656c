"""scripts/soak.py still runs: a short soak in this process against the session's Notary world and a
real `ostiary serve` (its own OPA), with the policy toggled under load, every verdict checked, the
processes sampled and the report written. Its figures are the 30-minute run's (docs/performance.md,
## Soak); here only that it starts, checks and reports.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from scripts import soak

pytestmark = pytest.mark.world


def test_a_short_soak_toggles_the_policy_under_load_and_reports_no_wrong_verdict(
    world, tmp_path: Path
) -> None:
    args = soak.parse_args(
        [
            "--minutes",
            "0.2",
            "--threads",
            "2",
            "--policy-period",
            "4",
            "--sample-period",
            "3",
            "--out",
            str(tmp_path),
        ]
    )
    run = soak.Soak(args, world.world, world, tmp_path / "run")
    try:
        run.run()
    finally:
        run.server.close()
    assert run.server.proc.poll() is not None, "ostiary serve was not stopped"
    totals = run.totals
    assert run.changes >= 1, "the policy was toggled (each toggle waits until the server obeys it)"
    assert totals.wrong == 0 and totals.http_5xx == 0 and totals.transport == 0, totals.wrong_examples
    assert totals.sent > 0 and set(totals.by_case) > {"signed", "unsigned"}, totals.by_case
    status = soak.report(tmp_path, args, totals, run.samples, run.changes)
    assert status == 0
    summary = json.loads((tmp_path / "soak.json").read_text())["summary"]
    assert summary["admissions"] == totals.sent and summary["wrong_verdicts"] == 0
    procs = {p["name"] for s in run.samples for p in s["procs"]}
    assert procs == {"ostiary", "opa"}, procs
    assert "| minute | admissions | wrong |" in (tmp_path / "soak.md").read_text()


def test_the_verdict_oracle_catches_a_wrong_verdict_and_a_missing_pin(world) -> None:
    signed = world["signed"]
    [case] = [c for c in soak.cases(world, "reg/soak/toggle/app:v1") if c.name == "signed"]
    assert soak.check(case, "strict", False, {"allowed": True}) is not None  # strict allows only the signer
    assert soak.check(case, "default", False, {"allowed": False}) is not None
    assert "patch lacks" in (soak.check(case, "default", False, {"allowed": True}) or "")
    patch = json.dumps([{"op": "replace", "path": "/x", "value": signed.pinned}]).encode()
    assert (
        soak.check(case, "default", False, {"allowed": True, "patch": base64.b64encode(patch).decode()})
        is None
    )
