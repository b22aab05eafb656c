"""`ostiary trust capture` against a real notary-server, then offline verification of the captured bytes.

This module builds its own world (notary-server, notary-signer, docker-registry) so that it can stop
it: everything after the capture runs with the Notary server gone, and still verifies for real
(signatures, hashes, expiry at `--at`). The live webhook (`ostiary serve`, as
tests/integration/test_server.py starts it) decides the same reviews while the world is up, and
`ostiary apply --trust-data` must reach the same verdicts offline.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.offline.engine import admission_review
from tests.integration.test_server import Served
from tests.support.world import NotaryWorld, WorldError, build_scenario, missing_binaries

pytestmark = pytest.mark.world

OSTIARY = str(Path(sys.executable).parent / "ostiary")
ROLES = {
    "signed": ("root", "timestamp", "snapshot", "targets", "targets/releases"),
    "signer-pem": ("root", "timestamp", "snapshot", "targets", "targets/releases", "targets/alice"),
    "unsigned": ("root", "timestamp", "snapshot", "targets"),
}


def run(*args, stdin=None, env=None):
    return subprocess.run(
        [OSTIARY, *args], check=False, capture_output=True, text=True, timeout=120, input=stdin, env=env
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def pod(name: str, *images: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]},
    }


class Captured:
    """What the module fixture leaves behind once the world is stopped."""

    def __init__(
        self,
        scenario,
        out: Path,
        policies: Path,
        served: dict[str, dict],
        live: dict[str, dict],
        capture: subprocess.CompletedProcess,
        pods: dict[str, dict],
    ):
        self.images = {k: v for k, v in scenario.images.items()}
        self.mallory_pem = scenario.mallory_pem
        self.out, self.policies, self.served, self.live, self.capture, self.pods = (
            out,
            policies,
            served,
            live,
            capture,
            pods,
        )
        self.notary_url = scenario.notary_url


def write_policies(directory: Path, scenario) -> None:
    reg, url = scenario.registry_host, scenario.notary_url
    directory.mkdir()
    docs = [
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": "world"},
            "spec": {
                "repositories": [
                    {"name": f"{reg}/ostiary/*", "policy": {"trust": {"enabled": True, "trustServer": url}}},
                    {
                        "name": f"{reg}/ostiary/signer-pem",
                        "policy": {
                            "trust": {
                                "enabled": True,
                                "trustServer": url,
                                "signerSecrets": [{"name": "alice"}],
                            }
                        },
                    },
                ]
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "alice", "namespace": "ostiary-system"},
            "data": {"name": b64("alice"), "publicKey": b64(scenario.alice_pem)},
        },
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ImagePolicy",
            "metadata": {"name": "strict", "namespace": "strict"},
            "spec": {
                "repositories": [
                    {
                        "name": f"{reg}/ostiary/*",
                        "policy": {
                            "trust": {
                                "enabled": True,
                                "trustServer": url,
                                "signerSecrets": [{"name": "alice"}],
                            }
                        },
                    }
                ]
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "alice", "namespace": "strict"},
            "data": {"name": b64("alice"), "publicKey": b64(scenario.mallory_pem)},
        },
    ]
    for number, doc in enumerate(docs):
        (directory / f"{number}.json").write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> Captured:
    missing = missing_binaries()
    if missing:
        pytest.fail(
            "the notary test world needs: " + "; ".join(f"{b} ({h})" for b, h in missing.items()),
            pytrace=False,
        )
    tmp = tmp_path_factory.mktemp("capture")
    world = NotaryWorld()
    try:
        world.start()
        scenario = build_scenario(world)
    except WorldError as exc:
        world.stop()
        pytest.fail(f"could not build the notary test world: {exc}", pytrace=False)
    try:
        out = tmp / "trust"
        pods = {
            "signed": pod("signed", scenario["signed"].reference),
            "alice": pod("alice", scenario["signer-pem"].reference),
            "unsigned": pod("unsigned", scenario["unsigned"].reference),
            "no-trust": pod("no-trust", scenario["no-trust"].reference),
            "strict": {
                **pod("strict", scenario["signer-pem"].reference),
                "metadata": {"name": "strict", "namespace": "strict"},
            },
        }
        # As a team captures for its CI: the manifests it deploys (-f), the trust server named per
        # registry host; one image also named on the command line (captured once).
        manifests = tmp / "manifests"
        manifests.mkdir()
        for name in ("signed", "alice", "unsigned"):
            (manifests / f"{name}.yaml").write_text(json.dumps(pods[name]))
        capture = run(
            "trust",
            "capture",
            scenario["no-trust"].reference,
            scenario["signed"].reference,
            "-f",
            str(manifests),
            "--out",
            str(out),
            "--trust-server",
            f"{scenario.registry_host}={scenario.notary_url}",
            "--ca-file",
            scenario.ca_file,
        )
        served = {
            key: {role: world.tuf(scenario[key].repo, role).content for role in roles}
            for key, roles in ROLES.items()
        }
        policies = tmp / "policies"
        write_policies(policies, scenario)
        server = Served("--policy-dir", str(policies), "--ca-file", scenario.ca_file)
        try:
            server.wait_ready()
            live = {
                name: server.admit(admission_review(obj, uid=f"live-{name}")).json()["response"]
                for name, obj in pods.items()
            }
        finally:
            server.stop()
    finally:
        world.stop()  # from here on there is no Notary server
    return Captured(scenario, out, policies, served, live, capture, pods)


def apply(captured: Captured, *names: str, trust: Path | None = None, at: str | None = None):
    manifests = "\n---\n".join(json.dumps(captured.pods[n]) for n in names)
    args = [
        "apply",
        "-",
        "--policy-dir",
        str(captured.policies),
        "-o",
        "json",
        "--trust-data",
        str(trust or captured.out),
    ]
    if at:
        args += ["--at", at]
    result = run(*args, stdin=manifests)
    assert result.returncode in (0, 1), result.stderr
    return {r["name"]: r for r in json.loads(result.stdout)["results"]}


def test_capture_records_every_role_byte_for_byte(captured):
    # no-trust (no trust data) and unsigned (v1 not signed) are negative fixtures, not failures
    out = captured.capture.stdout
    assert captured.capture.returncode == 0, out + captured.capture.stderr
    lines = out.splitlines()
    assert len([line for line in lines if "verifies now" in line]) == 2, out  # signed, signer-pem
    assert len([line for line in lines if "recorded as UNSIGNED" in line]) == 2, out
    assert "does NOT verify now" not in out
    no_trust = next(line for line in lines if line.startswith(captured.images["no-trust"].reference))
    assert "has no trust data for" in no_trust
    unsigned = next(line for line in lines if line.startswith(captured.images["unsigned"].reference))
    assert "verifies but tag v1 is not signed" in unsigned
    # how long the capture stays valid: per repository, and for the whole capture
    signed = next(line for line in lines if line.startswith(captured.images["signed"].reference))
    assert "; valid until 20" in signed and "expires first)" in signed
    assert lines[-1].startswith("the capture verifies until 20"), out
    assert sum(1 for line in lines if line.startswith(captured.images["signed"].reference)) == 1
    index = json.loads((captured.out / "ostiary-trust.json").read_text())
    entries = {e["gun"]: e for e in index["repositories"]}
    for key, roles in ROLES.items():
        entry = entries[captured.images[key].gun]
        assert entry["server"] == captured.notary_url
        assert sorted(entry["files"]) == sorted(roles)
        for role in roles:
            assert (captured.out / entry["path"] / f"{role}.json").read_bytes() == captured.served[key][
                role
            ], (key, role)
    assert entries[captured.images["no-trust"].gun]["not_served"] == ["root"]


def test_offline_verdicts_equal_the_live_webhook_with_the_server_stopped(captured):
    offline = apply(captured, *captured.pods)
    for name, live in captured.live.items():
        mine = offline[name]
        assert mine["allowed"] is live["allowed"], (name, live)
        patch = json.loads(base64.b64decode(live["patch"])) if "patch" in live else []
        assert mine["patch"] == patch, name
        assert mine["message"] == (live.get("status") or {}).get("message", ""), name
        assert mine["warnings"] == live.get("warnings", []), name
    signed = captured.images["signed"]
    assert offline["signed"]["patch"] == [
        {"op": "replace", "path": "/spec/containers/0/image", "value": signed.pinned},
        {
            "op": "add",
            "path": "/metadata/annotations",
            "value": {
                "ostiary.dev/original-images": json.dumps(
                    {"containers/c0": signed.reference}, separators=(",", ":")
                )
            },
        },
    ]
    facts = offline["alice"]["images"][0]["trust"]
    assert facts["verified"] is True and facts["signers"][0]["role"] == "targets/alice"
    assert offline["unsigned"]["allowed"] is False and "v1" in offline["unsigned"]["message"]
    assert offline["no-trust"]["allowed"] is False and "not signed there" in offline["no-trust"]["message"]
    assert offline["strict"]["allowed"] is False  # alice's secret in namespace strict holds mallory's key


def test_captured_bytes_are_verified_at_the_given_time(captured):
    later = (datetime.now(UTC) + timedelta(days=3650)).strftime("%Y-%m-%dT%H:%M:%SZ")
    expired = apply(captured, "signed", at=later)["signed"]
    assert expired["allowed"] is False and "expired" in expired["message"]
    assert apply(captured, "signed", at=datetime.now(UTC).isoformat())["signed"]["allowed"] is True


@pytest.mark.parametrize("role", ["targets/alice", "targets", "snapshot", "timestamp", "root"])
def test_tampered_captured_bytes_are_refused(captured, tmp_path, role):
    copy = tmp_path / "trust"
    shutil.copytree(captured.out, copy)
    entry = next(
        e
        for e in json.loads((copy / "ostiary-trust.json").read_text())["repositories"]
        if e["gun"] == captured.images["signer-pem"].gun
    )
    path = copy / entry["path"] / f"{role}.json"
    doc = json.loads(path.read_bytes())
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"  # what a forger would like to extend
    path.write_bytes(json.dumps(doc, separators=(",", ":")).encode())
    result = apply(captured, "alice", trust=copy)["alice"]
    assert result["allowed"] is False
    assert result["images"][0]["trust"]["verified"] is False
    assert result["images"][0]["trust"]["error_role"] == role  # refused where the bytes were changed


def test_a_missing_repository_or_file_is_a_denial_not_an_allow(captured, tmp_path):
    copy = tmp_path / "trust"
    shutil.copytree(captured.out, copy)
    entry = next(
        e
        for e in json.loads((copy / "ostiary-trust.json").read_text())["repositories"]
        if e["gun"] == captured.images["signer-pem"].gun
    )
    (copy / entry["path"] / "targets" / "alice.json").unlink()
    result = apply(captured, "alice", trust=copy)["alice"]
    assert result["allowed"] is False and "capture it again" in result["message"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "ostiary-trust.json").write_text(
        json.dumps({"format": "ostiary.dev/trust-capture/v1", "repositories": []})
    )
    nothing = apply(captured, "signed", trust=other)["signed"]
    assert nothing["allowed"] is False and "no captured trust data" in nothing["message"]


def test_explain_verifies_captured_trust_data(captured):
    review = admission_review(captured.pods["alice"], uid="explain-1")
    result = run(
        "explain",
        "-",
        "--policy-dir",
        str(captured.policies),
        "--trust-data",
        str(captured.out),
        stdin=json.dumps(review),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["response"]["allowed"] is True


def test_a_declarative_test_on_the_capture_runs_without_the_server(captured, tmp_path):
    """The walk-through of docs/policy-as-code.md: captured data, a policy, a custom rule, a test file."""
    (tmp_path / "rego").mkdir()
    (tmp_path / "rego" / "pinned.rego").write_text(
        "package ostiary.custom.pinned\n\nimport rego.v1\n\n"
        'warn contains sprintf("image %s is not pinned by digest", [img.image]) if {\n'
        "\tsome img in input.images\n\timg.ref.digest == null\n}\n"
    )
    (tmp_path / "pods.yaml").write_text(
        "\n---\n".join(json.dumps(captured.pods[n]) for n in ("signed", "unsigned"))
    )
    signed = captured.images["signed"]
    test = {
        "apiVersion": "ostiary.dev/v1",
        "kind": "PolicyTest",
        "metadata": {"name": "world"},
        "spec": {
            "policies": str(captured.policies),
            "rego": "rego",
            "trustData": [str(captured.out)],
            "cases": [
                {
                    "name": "signed is pinned, unsigned is denied",
                    "manifest": "pods.yaml",
                    "expect": [
                        {
                            "verdict": "allowed",
                            "warnings": [f"pinned: image {signed.reference} is not pinned by digest"],
                            "patch": [
                                {"op": "replace", "path": "/spec/containers/0/image", "value": signed.pinned},
                                {
                                    "op": "add",
                                    "path": "/metadata/annotations",
                                    "value": {
                                        "ostiary.dev/original-images": json.dumps(
                                            {"containers/c0": signed.reference}, separators=(",", ":")
                                        )
                                    },
                                },
                            ],
                            "images": [{"trusted": True, "pin": signed.digest}],
                        },
                        {"verdict": "denied", "denials": ["tag v1 is not signed"]},
                    ],
                },
                {
                    "name": "alice in the strict namespace is held to mallory's key",
                    "object": captured.pods["strict"],
                    "expect": {
                        "verdict": "denied",
                        "denials": ["role targets/alice is not signed with the key in the secret"],
                    },
                },
            ],
        },
    }
    (tmp_path / "world_test.yaml").write_text(json.dumps(test))
    result = run("test", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2/2 passed" in result.stdout
