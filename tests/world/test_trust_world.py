"""scripts/trust_world.py: the documented trust world for CI (docs/policy-as-code.md).

Two runs on the same ports give the same GUNs, trust-server URL and digests (what a team commits in
policies and test files stays valid); the capture, the signer keys and a declarative test written
against them pass offline after the world is gone, with the unsigned image denied.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.world import free_port, missing_binaries

pytestmark = pytest.mark.world

ROOT = Path(__file__).resolve().parents[2]
OSTIARY = str(Path(sys.executable).parent / "ostiary")
SPEC = """\
images:
  - {repo: team/web, tag: v1, signers: [releaser]}
  - {repo: team/base, tag: "3.1"}
  - {repo: team/debug, tag: v1, signed: false}
"""


def world(spec: Path, out: Path, ports: tuple[int, int]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "trust_world.py"), "--spec", str(spec), "--out", str(out),
         "--notary-port", str(ports[0]), "--registry-port", str(ports[1])],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_two_runs_give_stable_names_and_a_capture_that_tests_offline(tmp_path):
    assert not missing_binaries(), missing_binaries()
    spec = tmp_path / "world.yaml"
    spec.write_text(SPEC)
    ports = (free_port(), free_port())
    first = world(spec, tmp_path / "first", ports)
    assert first.returncode == 0, first.stdout + first.stderr
    second = world(spec, tmp_path / "fixtures", ports)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "recorded as UNSIGNED" in second.stdout and "the capture verifies until" in second.stdout

    a = json.loads((tmp_path / "first" / "world.json").read_text())
    b = json.loads((tmp_path / "fixtures" / "world.json").read_text())
    assert a == b  # registry host, Notary URL, every image reference and digest
    assert a["notary_url"] == f"https://127.0.0.1:{ports[0]}" and a["registry"] == f"127.0.0.1:{ports[1]}"
    pem = (tmp_path / "fixtures" / "keys" / "releaser.pem").read_text()
    assert pem != (tmp_path / "first" / "keys" / "releaser.pem").read_text()  # keys are new per run

    # A team's policy repo, written against the stable names; the world is gone now.
    reg, url = b["registry"], b["notary_url"]
    repo = tmp_path / "repo"
    (repo / "policies").mkdir(parents=True)
    secret = {
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "releaser", "namespace": "ostiary-system"},
        "data": {"name": base64.b64encode(b"releaser").decode(), "publicKey": base64.b64encode(pem.encode()).decode()},
    }  # fmt: skip
    policy = {
        "apiVersion": "ostiary.dev/v1", "kind": "ClusterImagePolicy", "metadata": {"name": "team"},
        "spec": {"repositories": [
            {"name": f"{reg}/team/*", "policy": {"trust": {"enabled": True, "trustServer": url}}},
            {"name": f"{reg}/team/web", "policy": {"trust": {"enabled": True, "trustServer": url,
                                                             "signerSecrets": [{"name": "releaser"}]}}},
        ]},
    }  # fmt: skip
    (repo / "policies" / "policy.json").write_text(json.dumps(policy))
    (repo / "policies" / "secret.json").write_text(json.dumps(secret))
    digests = {i["image"]: i["digest"] for i in b["images"]}

    def pod(image: str) -> dict:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "image": image}]}}  # fmt: skip

    test = {
        "apiVersion": "ostiary.dev/v1", "kind": "PolicyTest", "metadata": {"name": "world"},
        "spec": {"policies": "policies", "trustData": [str(tmp_path / "fixtures" / "trust")], "cases": [
            {"name": "web by releaser", "object": pod(f"{reg}/team/web:v1"),
             "expect": {"verdict": "allowed", "images": [{"pin": digests[f"{reg}/team/web:v1"]}]}},
            {"name": "base by the repository key", "object": pod(f"{reg}/team/base:3.1"),
             "expect": {"verdict": "allowed", "images": [{"pin": digests[f"{reg}/team/base:3.1"]}]}},
            {"name": "debug is unsigned", "object": pod(f"{reg}/team/debug:v1"),
             "expect": {"verdict": "denied"}},
        ]},
    }  # fmt: skip
    (repo / "world_test.yaml").write_text(json.dumps(test))
    result = subprocess.run(
        [OSTIARY, "test", str(repo)], capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3/3 passed" in result.stdout, result.stdout


def test_a_bad_spec_is_refused_before_anything_starts(tmp_path):
    spec = tmp_path / "world.yaml"
    spec.write_text("images:\n  - {repo: team/web, tag: v1, signer: [x]}\n")
    result = world(spec, tmp_path / "out", (free_port(), free_port()))
    assert result.returncode == 2 and "unknown field(s) signer" in result.stderr
    assert not (tmp_path / "out").exists()
