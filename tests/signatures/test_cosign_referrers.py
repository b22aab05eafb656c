"""cosign bundles found through the OCI 1.1 referrers API: `ostiary serve --policy-dir` (a real
subprocess with its local OPA) admits or denies through POST /admit against go-containerregistry's
registry with the referrers API on (tools/refreg, built by `scripts/setup-tools.sh refreg`).

cosign v2.6.5 wrote no fallback tag on this registry, so the captured bundles can only be found
through the API: every cosign-bundle verdict of expected.json for the referrers-API registry must
be Ostiary's. Bundles made now in Python (tests/support/cosign_signing.py) add an attestation made
with the trusted key (not a signature), another kind of referrer beside a real bundle (skipped),
and a bundle listed only by the API.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.signatures.test_cosign_admit import CLI_ONLY, admit, cosign_policy, pinned_to, secret
from tests.support import cosign_signing as cs
from tests.support.procs import die_with_parent
from tests.support.serve import message, stop
from tests.support.simple_signing import FIXTURES, serve_policies
from tests.support.world import free_port

ROOT = Path(__file__).resolve().parents[2]
HOST = "registry.test:5000"


def _cases() -> list[dict]:
    cases = json.loads((FIXTURES / "expected.json").read_text())["cases"]
    return [c for c in cases if c["format"] == "cosign-bundle" and c["registry"] == "referrers-api"]


def _refreg() -> str:
    """The refreg binary (OSTIARY_REFREG, or built by setup-tools.sh when needed: instant when built)."""
    binary = os.environ.get("OSTIARY_REFREG")
    if binary:
        return binary
    built = subprocess.run(
        [str(ROOT / "scripts" / "setup-tools.sh"), "refreg"], capture_output=True, text=True, timeout=900
    )
    assert built.returncode == 0, (
        f"scripts/setup-tools.sh refreg failed (needs Go):\n{built.stdout}{built.stderr}"
    )
    tools = Path(os.environ.get("OSTIARY_TOOLS_DIR") or ROOT / ".tools")
    return str(tools / "bin" / "refreg")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refreg")
    port = free_port()
    with open(tmp / "refreg.log", "ab") as log:
        proc = subprocess.Popen(
            [_refreg(), f"127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if requests.get(f"{url}/v2/", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, (
                "refreg did not start: " + (tmp / "refreg.log").read_text()[-500:]
            )
            time.sleep(0.1)
        done = subprocess.run(
            [
                "python3", str(FIXTURES / "replay.py"), url, "--capture", "referrers-api",
                "--repo", "ostiary/cosign-bundle", "--repo", "keyless/cosign-attestation",
            ],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"replay.py failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        yield url, f"127.0.0.1:{port}"
    finally:
        stop(proc)


class Made:
    def __init__(self, url: str, host: str):
        push = cs.Pusher(url)
        self.reg = host
        self.key = cs.new_key("p256")
        self.digests = {}
        d = self.digests["api"] = push.image("made/api", "v1")
        push.bundle_signature("made/api", d, cs.bundle(self.key, cs.statement(d)), fallback=False)
        d = self.digests["attest"] = push.image("made/attest", "v1")
        attestation = cs.bundle(self.key, cs.statement(d, "https://slsa.dev/provenance/v1"))
        push.bundle_signature("made/attest", d, attestation, fallback=False)
        d = self.digests["mixed"] = push.image("made/mixed", "v1")
        push.bundle_signature(
            "made/mixed",
            d,
            b"not a bundle",
            artifact_type="application/vnd.cncf.notary.signature",
            fallback=False,
        )
        push.bundle_signature("made/mixed", d, cs.bundle(self.key, cs.statement(d)), fallback=False)


@pytest.fixture(scope="module")
def made(registry):
    return Made(*registry)


@pytest.fixture(scope="module")
def ostiary(registry, made, tmp_path_factory):
    url, host = registry
    keys = {p.name: p.read_text() for p in (FIXTURES / "keys/public/cosign").glob("*.pub")}
    docs: list[dict] = []
    for i, case in enumerate(_cases()):
        docs += [
            secret("k", f"case-{i:02d}", key=keys[Path(case["settings"]["key"]).name]),
            cosign_policy(f"case-{i:02d}", f"{HOST}/*", "k"),
        ]
    docs += [secret("k", "made", key=cs.public_pem(made.key)), cosign_policy("made", f"{host}/made/*", "k")]
    with serve_policies(
        tmp_path_factory.mktemp("ostiary-referrers"),
        docs,
        "--registry-endpoint", f"{HOST}={url}",
        "--registry-endpoint", f"{host}={url}",
    ) as server:  # fmt: skip
        yield server


@pytest.mark.parametrize("index", range(len(_cases())), ids=[c["id"] for c in _cases()])
def test_fixture_verdicts_are_the_real_tools(ostiary, index):
    case = _cases()[index]
    response = admit(ostiary, case["reference"], f"case-{index:02d}")
    expected = "accept" if case["id"].endswith(CLI_ONLY) else case["verdict"]
    name = case["reference"].split("@")[0]
    if expected == "accept":
        assert response["allowed"] is True, message(response)
        if "@" not in case["reference"]:
            assert pinned_to(response) == f"{name}@{case['resolved_digest']}"
    else:
        assert response["allowed"] is False, f"{case['id']} was admitted; cosign said: {case['tool_output']}"
        assert "cosign key requirement 0" in message(response), message(response)


def test_captured_bundles_have_no_fallback_tag(registry):
    """So the accepts above were found through the referrers API."""
    url, _ = registry
    alpha = "sha256-08203b7d9d37c422170036633938611837d32e343f0d60d795cf38040d6e27aa"
    assert requests.get(f"{url}/v2/ostiary/cosign-bundle/manifests/{alpha}", timeout=5).status_code == 404


def test_bundle_listed_only_by_the_api_is_admitted(ostiary, made):
    response = admit(ostiary, f"{made.reg}/made/api:v1", "made")
    assert response["allowed"] is True, message(response)
    assert pinned_to(response) == f"{made.reg}/made/api:v1@{made.digests['api']}"


def test_other_referrers_are_skipped(ostiary, made):
    response = admit(ostiary, f"{made.reg}/made/mixed:v1", "made")
    assert response["allowed"] is True, message(response)


def test_attestation_is_not_a_signature(ostiary, made):
    response = admit(ostiary, f"{made.reg}/made/attest:v1", "made")
    assert response["allowed"] is False
    assert "an attestation" in message(response), message(response)
