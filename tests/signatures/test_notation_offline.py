"""Notation offline: `ostiary trust capture --format notation` records what docker-registry serves;
with the registry stopped, `ostiary apply --trust-data` decides every strict Notation case of
expected.json exactly as notation did (and as the webhook does, test_notation_admit.py), pinned to
the same digests; `--at` moves the verification time (the expired-certificate case verifies as of a
time inside its validity); `ostiary trust inspect --format notation --key CA` prints the facts."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.signatures.test_notation_admit import HOST, LABEL, REPOS, _cases, _fixture_documents
from tests.signatures.test_offline_signatures import _deployment, _run
from tests.support.simple_signing import FIXTURES, SigningWorld

EXPIRED_ALPHA = "notation-jws/distribution/notation-expiry:alpha/trusted-any"


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("offline-notation")
    out, policies, manifests = tmp / "captured", tmp / "policies", tmp / "manifests"
    policies.mkdir()
    manifests.mkdir()
    cases = _cases("distribution")
    with SigningWorld(tmp / "w") as w:
        w.replay_fixtures(*REPOS)
        images = sorted({c["reference"] for c in cases})
        done = _run(
            "trust", "capture", "--format", "notation", "--registry-endpoint", f"{HOST}={w.registry_url}",
            "--out", str(out), *images,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    for i, doc in enumerate(_fixture_documents(cases)):
        (policies / f"{i:03d}.yaml").write_text(yaml.safe_dump(doc))
    for i, case in enumerate(cases):
        (manifests / f"{i:03d}.yaml").write_text(
            yaml.safe_dump(_deployment(f"case-{i:02d}", case["reference"]))
        )
    return out, policies, manifests


def _apply(captured, *extra: str) -> dict:
    out, policies, manifests = captured
    done = _run(
        "apply", "--policy-dir", str(policies), "--trust-data", str(out), "-o", "json", *extra, str(manifests)
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return {r["namespace"]: r for r in json.loads(done.stdout)["results"]}


def test_apply_decides_captured_notation_signatures_as_notation(captured):
    results = _apply(captured)
    wrong = []
    for i, case in enumerate(_cases("distribution")):
        result = results[f"case-{i:02d}"]
        if (case["verdict"] == "accept") != result["allowed"]:
            wrong.append(f"{case['id']}: {result['verdict']} {result['message'][:300]}")
        elif case["verdict"] == "accept" and "@" not in case["reference"]:
            pinned = [p["value"] for p in result["patch"] if p["path"].endswith("/image")]
            if pinned != [f"{case['reference']}@{case['resolved_digest']}"]:
                wrong.append(f"{case['id']}: pinned {pinned}")
        elif case["verdict"] == "reject" and LABEL not in result["message"]:
            wrong.append(f"{case['id']}: {result['message'][:300]}")
    assert not wrong, "\n".join(wrong)
    assert sum(1 for r in results.values() if r["allowed"]) >= 10


def test_at_sets_the_verification_time(captured):
    index = next(i for i, c in enumerate(_cases("distribution")) if c["id"] == EXPIRED_ALPHA)
    # signed 20:09:47, leaf valid until 20:12:17 (README of the fixtures)
    assert _apply(captured, "--at", "2026-12-06T20:11:00Z")[f"case-{index:02d}"]["allowed"] is True
    assert _apply(captured)[f"case-{index:02d}"]["allowed"] is False


@pytest.mark.parametrize(
    ("image", "ca", "ok", "why"),
    [
        ("notation-jws:alpha", "trusted-root.crt", True, ""),
        ("notation-cose:alpha", "trusted-root.crt", True, ""),
        ("notation-jws:bravo", "trusted-root.crt", False, "does not contain any trusted certificate"),
        ("notation-jws:delta", "trusted-root.crt", False, "content descriptor mismatch"),
    ],
)
def test_trust_inspect_shows_notation_facts(captured, image, ca, ok, why):
    out, _, _ = captured
    done = _run(
        "trust", "inspect", "--format", "notation", "--key", str(FIXTURES / "keys/public/notation" / ca),
        "--trust-data", str(out), f"{HOST}/ostiary/{image}",
    )  # fmt: skip
    assert done.returncode == (0 if ok else 1), done.stdout + done.stderr
    facts = json.loads(done.stdout)
    assert facts["format"] == "notation" and facts["verified"] is True
    assert why in done.stderr
    lines = [x for x in done.stderr.splitlines() if x.startswith(("valid ", "invalid "))]
    assert len(lines) == len(facts["signatures"]) >= 1, done.stderr
    assert any(x.startswith("valid   ") and "CA sha256:" in x for x in lines) is ok, lines
