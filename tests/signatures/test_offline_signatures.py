"""Offline signatures: `ostiary trust capture --format cosign|simple` records what docker-registry and the
HTTPS lookaside serve; with the registry and the store stopped, `ostiary apply --trust-data` and
`ostiary explain --trust-data` decide every captured case exactly as the real tools did (and as the
webhook does, tests/signatures/test_cosign_admit.py and test_simple_admit.py), pinned to the same
digests. A capture that lacks what a verifier needs denies, naming what to capture.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.signatures.test_cosign_admit import CLI_ONLY, _cosign_cases, cosign_policy, secret
from tests.signatures.test_simple_admit import _identity, _simple_cases, image_policy, signed_by
from tests.support.serve import OSTIARY
from tests.support.simple_signing import FIXTURES, SigningWorld

HOST = "registry.test:5000"


def _cases() -> list[tuple[str, dict]]:
    return [("cosign", c) for c in _cosign_cases()] + [("simple", c) for c in _simple_cases()]


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(OSTIARY), *args], capture_output=True, text=True, timeout=300, input=stdin, check=False
    )


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """(capture dir, policy dir, manifests dir): captured from a world that is stopped afterwards."""
    tmp = tmp_path_factory.mktemp("offline-signatures")
    out, policies, manifests = tmp / "captured", tmp / "policies", tmp / "manifests"
    policies.mkdir()
    manifests.mkdir()
    with SigningWorld(tmp / "w") as w:
        w.replay_fixtures(
            "ostiary/cosign", "ostiary/cosign-bundle", "ostiary/simple", "ostiary/simple-mirror"
        )
        endpoint = ("--registry-endpoint", f"{HOST}={w.registry_url}")
        cosign_images = sorted({c["reference"] for f, c in _cases() if f == "cosign"})
        simple_images = sorted({c["reference"] for f, c in _cases() if f == "simple"})
        done = _run("trust", "capture", "--format", "cosign", *endpoint, "--out", str(out), *cosign_images)
        assert done.returncode == 0, done.stdout + done.stderr
        done = _run(
            "trust", "capture", "--format", "simple", "--store-url", w.store_url, "--ca-file", w.ca_file,
            *endpoint, "--out", str(out), *simple_images,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        store_url = w.store_url
    cosign_keys = {p.name: p.read_text() for p in (FIXTURES / "keys/public/cosign").glob("*.pub")}
    gpg_keys = {p.name: p.read_text() for p in (FIXTURES / "keys/public/gpg").glob("*.asc")}
    docs = []
    for i, (fmt, case) in enumerate(_cases()):
        ns = f"case-{i:02d}"
        if fmt == "cosign":
            docs += [
                secret("k", ns, key=cosign_keys[Path(case["settings"]["key"]).name]),
                cosign_policy(ns, f"{HOST}/*", "k"),
            ]
        else:
            key_file = Path(case["settings"]["policy"]["signedBy.keyPath"]).name
            docs += [
                secret("k", ns, key=gpg_keys[key_file]),
                image_policy(
                    ns, f"{HOST}/ostiary/*", [signed_by("k", _identity(case["settings"]))], store_url
                ),
            ]
        (manifests / f"{i:03d}.yaml").write_text(yaml.safe_dump(_deployment(ns, case["reference"])))
    for i, doc in enumerate(docs):
        (policies / f"{i:03d}.yaml").write_text(yaml.safe_dump(doc))
    return out, policies, manifests


def _deployment(namespace: str, image: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": image}]},
            },
        },
    }


def _expected(fmt: str, case: dict) -> str:
    return "accept" if fmt == "cosign" and case["id"].endswith(CLI_ONLY) else case["verdict"]


def test_apply_decides_captured_signatures_as_the_real_tools(captured):
    out, policies, manifests = captured
    done = _run(
        "apply", "--policy-dir", str(policies), "--trust-data", str(out), "-o", "json", str(manifests)
    )
    assert done.returncode in (0, 1), done.stdout + done.stderr
    results = {r["namespace"]: r for r in json.loads(done.stdout)["results"]}
    wrong = []
    for i, (fmt, case) in enumerate(_cases()):
        result = results[f"case-{i:02d}"]
        want = _expected(fmt, case)
        if (want == "accept") != result["allowed"]:
            wrong.append(f"{case['id']}: {result['verdict']} {result['message'][:300]}")
        elif want == "accept" and "@" not in case["reference"]:
            pinned = [p["value"] for p in result["patch"] if p["path"].endswith("/image")]
            if pinned != [f"{case['reference']}@{case['resolved_digest']}"]:
                wrong.append(f"{case['id']}: pinned {pinned}")
        elif want == "reject":
            label = "cosign key requirement 0" if fmt == "cosign" else "simple signing requirement 0"
            if label not in result["message"]:
                wrong.append(f"{case['id']}: {result['message'][:300]}")
    assert not wrong, "\n".join(wrong)
    assert sum(1 for r in results.values() if r["allowed"]) >= 10


def test_explain_uses_the_capture_too(captured, tmp_path):
    out, policies, _ = captured
    index = next(
        i
        for i, (f, c) in enumerate(_cases())
        if c["id"] == "cosign-legacy/distribution/cosign:alpha/cosign-trusted.pub"
    )
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-4000-8000-000000000001",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": f"case-{index:02d}",
            "operation": "CREATE",
            "userInfo": {"username": "someone"},
            "object": _deployment(f"case-{index:02d}", f"{HOST}/ostiary/cosign:alpha"),
        },
    }
    path = tmp_path / "review.json"
    path.write_text(json.dumps(review))
    done = _run("explain", str(path), "--policy-dir", str(policies), "--trust-data", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["response"]["allowed"] is True


def test_a_capture_without_the_image_denies_naming_what_to_capture(captured, tmp_path):
    out, policies, _ = captured
    index = next(i for i, (f, _) in enumerate(_cases()) if f == "cosign")
    manifest = tmp_path / "other.yaml"
    manifest.write_text(yaml.safe_dump(_deployment(f"case-{index:02d}", f"{HOST}/ostiary/not-captured:v1")))
    done = _run("apply", "--policy-dir", str(policies), "--trust-data", str(out), "-o", "json", str(manifest))
    assert done.returncode == 1, done.stdout + done.stderr
    (result,) = json.loads(done.stdout)["results"]
    assert "no captured signature data for registry.test:5000/ostiary/not-captured" in result["message"]
    assert "ostiary trust capture --format cosign" in result["message"]


LABEL = {"cosign": "cosign", "simple": "simple signing"}
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "signed-images" / "captured"
KEYS = FIXTURES / "keys" / "public"


@pytest.mark.parametrize(
    ("fmt", "image", "key", "ok", "why"),
    [
        ("cosign", "cosign:alpha", "cosign/cosign-trusted.pub", True, ""),
        ("cosign", "cosign:delta", "cosign/cosign-trusted.pub", False, "signs sha256:08203b7d"),
        ("cosign", "cosign:release", "cosign/cosign-trusted.pub", False, "no signature found"),
        ("cosign", "cosign:bravo", "cosign/cosign-trusted.pub", False, "does not verify with any key"),
        ("simple", "simple:alpha", "gpg/ed25519.pub.asc", True, ""),
        ("simple", "simple:bravo", "gpg/ed25519.pub.asc", False, "OpenPGP"),
    ],
)
def test_trust_inspect_shows_each_formats_facts(fmt, image, key, ok, why):
    done = _run(
        "trust", "inspect", "--format", fmt, "--key", str(KEYS / key), "--trust-data", str(EXAMPLE),
        "--store-url", "https://lookaside.registry.test/signatures", f"{HOST}/ostiary/{image}",
    )  # fmt: skip
    assert done.returncode == (0 if ok else 1), done.stdout + done.stderr
    facts = json.loads(done.stdout)
    assert facts["format"] == fmt and facts["verified"] is True
    assert why in done.stderr
    # one line per signature (app/signatures/inspect.py), or one saying none was found
    lines = [x for x in done.stderr.splitlines() if x.startswith(("valid ", "invalid ", f"{LABEL[fmt]}: "))]
    assert len(lines) == max(1, len(facts["signatures"])), done.stderr
    if ok:
        kind = "cosign key sha256:" if fmt == "cosign" else "OpenPGP key "
        assert any(
            x.startswith("valid   ") and kind in x and "(the reference's digest)" in x for x in lines
        ), lines
    else:
        assert not any(x.startswith("valid ") for x in lines), lines
