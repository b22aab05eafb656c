"""Captured Docker Hub trust data (../shared/fixtures/notary/dockerhub-captured) through `ostiary apply`.

Each directory there is a bare repository (root, timestamp, snapshot, targets, targets/NAME.json as
notary.docker.io served them); expected.json says, per tag and per set of required signers, which digest
a correct verifier finds (null: deny). The same replay `--trust-data` uses for captures reads them;
the real verifier decides at `valid_at`, through the webhook's Reviewer in a real OPA.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.offline.replay import ReplayClient, TrustDataError, gun_of_root, load_trust_data

OSTIARY = str(Path(sys.executable).parent / "ostiary")
FIXTURES = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "notary" / "dockerhub-captured"
)
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def project_for(case: dict, directory: Path) -> tuple[Path, str]:
    """A policy directory with one namespace per expectation (its own signers), and the manifests."""
    policies = directory / "policies"
    policies.mkdir()
    docs, pods = [], []
    repository = case["gun"]
    for number, expect in enumerate(case["expect"]):
        namespace = f"case-{number}"
        signers = expect.get("signers") or []
        trust: dict = {"enabled": True}
        if signers:
            trust["signerSecrets"] = [{"name": f"signer-{s}"} for s in signers]
        docs.append(
            {
                "apiVersion": "ostiary.dev/v1",
                "kind": "ImagePolicy",
                "metadata": {"name": "hub", "namespace": namespace},
                "spec": {"repositories": [{"name": repository, "policy": {"trust": trust}}]},
            }
        )
        for s in signers:
            pem = (FIXTURES / "signer-keys" / f"{s}.pub").read_text()
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": f"signer-{s}", "namespace": namespace},
                    "data": {"name": b64(s), "publicKey": b64(pem)},
                }
            )
        image = repository.removeprefix("docker.io/") + ":" + expect["tag"]
        pods.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"p{number}", "namespace": namespace},
                "spec": {"containers": [{"name": "c", "image": image}]},
            }
        )
    for number, doc in enumerate(docs):
        (policies / f"{number:02d}.json").write_text(json.dumps(doc))
    return policies, "\n---\n".join(json.dumps(p) for p in pods)


@pytest.mark.parametrize("name", sorted(EXPECTED["cases"]))
def test_docker_hub_captures_give_the_expected_verdicts(name, tmp_path):
    case = EXPECTED["cases"][name]
    policies, manifests = project_for(case, tmp_path)
    result = subprocess.run(
        [
            OSTIARY,
            "apply",
            "-",
            "--policy-dir",
            str(policies),
            "--trust-data",
            str(FIXTURES / name),
            "--at",
            case["valid_at"],
            "-o",
            "json",
        ],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr
    results = json.loads(result.stdout)["results"]
    for number, expect in enumerate(case["expect"]):
        want = expect["no_signers"] if "no_signers" in expect else expect["digest"]
        got = results[number]
        label = f"{name} {expect}"
        if want is None:
            assert got["allowed"] is False, label
        else:
            assert got["allowed"] is True, (label, got["message"])
            assert got["images"][0]["pin"] == want, label
            assert got["images"][0]["trust"]["gun"] == case["gun"], label
    assert result.returncode == (
        1 if any((e.get("no_signers", e.get("digest"))) is None for e in case["expect"]) else 0
    )


def test_bare_directories_name_their_gun_and_clash_when_two_claim_one(tmp_path):
    assert gun_of_root(FIXTURES / "alice-image" / "root.json") == "docker.io/phbelitz/alice-image"
    repos = load_trust_data([FIXTURES / "bob-image", FIXTURES / "alice-image"])
    assert [(r.server, r.gun) for r in repos] == [
        ("https://notary.docker.io", "docker.io/phbelitz/delegation"),
        ("https://notary.docker.io", "docker.io/phbelitz/alice-image"),
    ]
    with pytest.raises(TrustDataError, match="captured twice"):
        ReplayClient(load_trust_data([FIXTURES / "bob-image", FIXTURES / "charlie-image"]))
    with pytest.raises(TrustDataError, match="neither a capture"):
        load_trust_data([tmp_path])


def test_a_docker_hub_capture_outside_its_validity_or_tampered_is_denied(tmp_path):
    case = EXPECTED["cases"]["sample-image"]
    policies, manifests = project_for({**case, "expect": case["expect"][:1]}, tmp_path)
    copy = tmp_path / "sample"
    shutil.copytree(FIXTURES / "sample-image", copy)
    targets = json.loads((copy / "targets.json").read_bytes())
    first = next(iter(targets["signed"]["targets"].values()))
    first["hashes"]["sha256"] = base64.b64encode(b"\x00" * 32).decode()
    (copy / "targets.json").write_bytes(json.dumps(targets, separators=(",", ":")).encode())
    for trust, at, why in (
        (FIXTURES / "sample-image", "2030-01-01T00:00:00Z", "expired"),
        (copy, case["valid_at"], "targets"),
    ):
        result = subprocess.run(
            [
                OSTIARY,
                "apply",
                "-",
                "--policy-dir",
                str(policies),
                "--trust-data",
                str(trust),
                "--at",
                at,
                "-o",
                "json",
            ],
            input=manifests,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        got = json.loads(result.stdout)["results"][0]
        assert got["allowed"] is False and why in got["message"], got["message"]
