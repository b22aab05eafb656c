"""Keyless cosign offline, with an operator's trusted root (a private Sigstore): `ostiary trust capture
--format cosign` records the bundles a test Sigstore made (tests/support/keyless_signing.py) from
docker-registry; with the registry stopped, `ostiary apply`, `explain` and `test` given
`--sigstore-trusted-root` (or a test file's `sigstoreTrustedRoot`) decide as `serve
--sigstore-trusted-root` does (tests/signatures/test_cosign_keyless_admit.py): the right identity
admitted and pinned, another issuer and an unsigned image denied with the reason; without the root,
the same signature is refused as not issued by the public-good root. `ostiary trust inspect --format
cosign` without a key prints one line per keyless signature (identity, issuer, Rekor entry).
"""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from tests.signatures.test_cosign_keyless_admit import ISSUER, WORKFLOW, policy
from tests.signatures.test_offline_signatures import _deployment
from tests.support import cosign_signing as cs
from tests.support.keyless_signing import TestSigstore
from tests.support.serve import OSTIARY
from tests.support.simple_signing import SigningWorld

HOST = "registry.test:5000"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(OSTIARY), *args], capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """(tmp, capture dir, policy dir, trusted root file, digests): the world is stopped afterwards."""
    tmp = tmp_path_factory.mktemp("keyless-offline")
    out, policies = tmp / "captured", tmp / "policies"
    policies.mkdir()
    sigstore = TestSigstore("private")
    root = tmp / "trusted_root.json"
    root.write_bytes(sigstore.trusted_root())
    digests = {}
    with SigningWorld(tmp / "w") as w:
        push = cs.Pusher(w.registry_url)
        for repo, issuer in (("good", ISSUER), ("other-issuer", "https://issuer.attacker.example")):
            d = digests[repo] = push.image(f"made/{repo}", "v1")
            push.bundle_signature(
                f"made/{repo}", d, sigstore.bundle(cs.statement(d), subject=WORKFLOW, issuer=issuer)
            )
        digests["unsigned"] = push.image("made/unsigned", "v1")
        images = [f"{HOST}/made/{repo}:v1" for repo in digests]
        done = _run(
            "trust", "capture", "--format", "cosign", "--registry-endpoint", f"{HOST}={w.registry_url}",
            "--out", str(out), *images,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    (policies / "keyless.yaml").write_text(
        yaml.safe_dump(policy("keyless", f"{HOST}/made/*", {"issuer": ISSUER, "subject": WORKFLOW}))
    )
    for repo in digests:
        (tmp / f"{repo}.yaml").write_text(yaml.safe_dump(_deployment("keyless", f"{HOST}/made/{repo}:v1")))
    return tmp, out, policies, root, digests


def _apply(offline, repo: str, *extra: str) -> dict:
    tmp, out, policies, _, _ = offline
    done = _run(
        "apply", "--policy-dir", str(policies), "--trust-data", str(out), "-o", "json", *extra,
        str(tmp / f"{repo}.yaml"),
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stdout + done.stderr
    (result,) = json.loads(done.stdout)["results"]
    return result


def test_apply_with_the_operators_root_admits_and_pins(offline):
    _, _, _, root, digests = offline
    result = _apply(offline, "good", "--sigstore-trusted-root", str(root))
    assert result["allowed"] is True, result["message"]
    pinned = [p["value"] for p in result["patch"] if p["path"].endswith("/image")]
    assert pinned == [f"{HOST}/made/good:v1@{digests['good']}"]


@pytest.mark.parametrize(
    ("repo", "reason"),
    [
        ("other-issuer", "certificate of issuer https://issuer.attacker.example"),
        ("unsigned", "no signature found"),
    ],
)
def test_apply_with_the_operators_root_denies_with_the_reason(offline, repo, reason):
    _, _, _, root, _ = offline
    result = _apply(offline, repo, "--sigstore-trusted-root", str(root))
    assert result["allowed"] is False
    assert "cosign keyless requirement" in result["message"] and reason in result["message"], result[
        "message"
    ]


def test_without_the_root_the_public_good_root_refuses_it(offline):
    result = _apply(offline, "good")
    assert result["allowed"] is False
    assert "is not in the trusted root" in result["message"], result["message"]


def test_an_unusable_root_stops_the_command(offline, tmp_path):
    bad = tmp_path / "root.json"
    bad.write_text("{}")
    tmp, out, policies, _, _ = offline
    done = _run(
        "apply", "--policy-dir", str(policies), "--trust-data", str(out), "--sigstore-trusted-root", str(bad),
        str(tmp / "good.yaml"),
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--sigstore-trusted-root" in done.stderr, done.stderr


def test_explain_with_the_operators_root(offline, tmp_path):
    tmp, out, policies, root, _ = offline
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-4000-8000-000000000002",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": "keyless",
            "operation": "CREATE",
            "userInfo": {"username": "someone"},
            "object": _deployment("keyless", f"{HOST}/made/good:v1"),
        },
    }
    path = tmp_path / "review.json"
    path.write_text(json.dumps(review))
    args = ("explain", str(path), "--policy-dir", str(policies), "--trust-data", str(out))
    done = _run(*args, "--sigstore-trusted-root", str(root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["response"]["allowed"] is True
    assert _run(*args).returncode == 1


def _test_file(offline, directory, root_field: bool) -> str:
    tmp, out, policies, root, digests = offline
    spec = {
        "policies": str(policies),
        "trustData": [str(out)],
        "cases": [
            {"name": "keyless good", "manifest": str(tmp / "good.yaml"),
             "expect": {"verdict": "allowed", "images": [{"pin": digests["good"]}]}},
            {"name": "keyless other issuer", "manifest": str(tmp / "other-issuer.yaml"),
             "expect": {"verdict": "denied", "message": "certificate of issuer https://issuer.attacker.example"}},
        ],
    }  # fmt: skip
    if root_field:
        spec["sigstoreTrustedRoot"] = str(root)
    path = directory / "keyless_test.yaml"
    path.write_text(
        yaml.safe_dump(
            {"apiVersion": "ostiary.dev/v1", "kind": "PolicyTest", "metadata": {"name": "k"}, "spec": spec}
        )
    )
    return str(path)


def test_ostiary_test_with_the_files_root(offline, tmp_path):
    done = _run("test", _test_file(offline, tmp_path, root_field=True))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2/2 passed" in done.stdout, done.stdout


def test_ostiary_test_with_the_option(offline, tmp_path):
    path = _test_file(offline, tmp_path, root_field=False)
    done = _run("test", "--sigstore-trusted-root", str(offline[3]), path)
    assert done.returncode == 0, done.stdout + done.stderr
    without = _run("test", path)
    assert without.returncode == 1 and "is not in the trusted root" in without.stdout, without.stdout


def test_trust_inspect_shows_each_keyless_signature(offline):
    _, out, _, root, digests = offline
    args = (
        "trust",
        "inspect",
        "--format",
        "cosign",
        "--trust-data",
        str(out),
        "--sigstore-trusted-root",
        str(root),
    )
    done = _run(*args, f"{HOST}/made/good:v1")
    assert done.returncode == 0, done.stdout + done.stderr
    (line,) = [entry for entry in done.stderr.splitlines() if entry.startswith(("valid", "invalid"))]
    assert line.startswith("valid   "), line
    assert f"subject {WORKFLOW}, issuer {ISSUER}" in line and "Rekor entry " in line, line
    assert f"signs {digests['good']} (the reference's digest)" in line, line
    facts = json.loads(done.stdout)
    assert facts["signatures"][0]["log_entry"]["integrated_time"] == "2026-12-06T20:00:00Z"
    done = _run(*args, f"{HOST}/made/unsigned:v1")
    assert done.returncode == 1
    assert f"cosign keyless: no signature found for {digests['unsigned']}" in done.stderr, done.stderr
