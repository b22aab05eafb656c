"""Pinned roots (policy `trust.rootSecrets`) through `ostiary serve`, against the real notary-server.

- REG/roots-pinned/good: published by publisher A; the ClusterImagePolicy pins A's root certificate
  as written by `ostiary trust pin --pem` (Secret hub-root in the system namespace): admitted, root trusted
  as "pinned", no TOFU record.
- REG/roots-pinned/other: published by publisher B (other root keys) under the same pin: denied.
- REG/roots-pinned/missing: pins a Secret that does not exist: denied, naming it.
- REG/roots-default/*: no rootSecrets, but `serve --root-pins` pins publisher A's root key for the
  world's server: A's repository is admitted, B's denied.
- Namespace "team" has an ImagePolicy whose `hub-root` Secret (in "team") holds B's key: "good" is
  denied there, which shows the Secret is read from the policy's own namespace.
"""

from __future__ import annotations

import base64
import json
import subprocess

import pytest
import requests

from app.notary.state import FileRecordStore
from tests.support.serve import OSTIARY, cluster_policy, deployment_review, stop
from tests.world.test_roots import Publisher, start

pytestmark = pytest.mark.world
SYSTEM_NS = "ostiary-system"


def root_certificate_pem(world, repo: str) -> str:
    signed = world.tuf(repo, "root").json()["signed"]
    (keyid,) = signed["roles"]["root"]["keyids"]
    return base64.b64decode(signed["keys"][keyid]["keyval"]["public"]).decode()


def root_secret(name: str, namespace: str, pem: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"publicKeys": base64.b64encode(pem.encode()).decode()},
    }


@pytest.fixture(scope="module")
def pinned(world, tmp_path_factory):
    w = world.world
    tmp = tmp_path_factory.mktemp("roots-pinned")
    a, b = Publisher(w, "pin-a"), Publisher(w, "pin-b")
    refs = {}
    for name, publisher in (("good", a), ("other", b), ("missing", a), ("default-a", a), ("default-b", b)):
        repo = f"roots-pinned/{name}" if not name.startswith("default") else f"roots-default/{name}"
        img = w.push(repo, "v1", seed=f"pinned-{name}")
        publisher.init(w.gun(repo))
        publisher.sign(w.gun(repo), "v1", img.digest, img.size)
        refs[name] = f"{w.gun(repo)}:v1"
    # the documented way to get a repository's root certificates for a Secret: `ostiary trust pin --pem`
    pem_file = tmp / "good-root.pem"
    cp = subprocess.run(
        [
            str(OSTIARY),
            "trust",
            "pin",
            refs["good"],
            "--trust-server",
            w.notary_url,
            "--ca-file",
            w.ca_file,
            "--state-dir",
            str(tmp / "operator-state"),
            "--pem",
            str(pem_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert cp.returncode == 0, cp.stderr
    good_pem, other_pem = pem_file.read_text(), root_certificate_pem(w, "roots-pinned/other")
    assert good_pem == root_certificate_pem(w, "roots-pinned/good")
    reg = world.registry_host

    def trust(*roots: str) -> dict:
        return {
            "trust": {
                "enabled": True,
                "trustServer": w.notary_url,
                "rootSecrets": [{"name": r} for r in roots],
            }
        }

    policies = tmp / "policies"
    policies.mkdir()
    docs = [
        cluster_policy(
            "pinned",
            [
                {"name": f"{reg}/roots-pinned/*", "policy": trust("hub-root")},
                {"name": f"{reg}/roots-pinned/missing", "policy": trust("nope")},
                {"name": f"{reg}/roots-default/*", "policy": trust()},  # no rootSecrets: --root-pins applies
            ],
        ),
        root_secret("hub-root", SYSTEM_NS, good_pem),
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ImagePolicy",
            "metadata": {"name": "team", "namespace": "team"},
            "spec": {"repositories": [{"name": f"{reg}/roots-pinned/*", "policy": trust("hub-root")}]},
        },
        root_secret("hub-root", "team", other_pem),
    ]
    for i, doc in enumerate(docs):
        (policies / f"{i:02d}.json").write_text(json.dumps(doc))
    state = tmp / "state"
    # serve --root-pins: the world's server pins publisher A's root key for entries without rootSecrets
    import yaml

    (tmp / "root-pins.yaml").write_text(yaml.safe_dump({w.notary_url: {"publicKeys": good_pem}}))
    served = start(tmp, policies, w.ca_file, state, "--root-pins", str(tmp / "root-pins.yaml"))
    try:
        out = {
            name: served.response(deployment_review(ref))
            for name, ref in refs.items()
            if not name.startswith("default")
        }
        out["default-a"] = served.response(deployment_review(refs["default-a"]))
        out["default-b"] = served.response(deployment_review(refs["default-b"]))
        out["team-good"] = served.response(deployment_review(refs["good"], namespace="team"))
        out["again"] = served.response(deployment_review(refs["good"]))
        out["metrics"] = requests.get(f"{served.url}/metrics", timeout=10).text
    finally:
        stop(served.proc)
    out["records"] = FileRecordStore(state).records()
    out["refs"] = refs
    return out


def _message(response: dict) -> str:
    return (response.get("status") or {}).get("message", "")


def test_a_pinned_root_admits_its_signed_image(pinned) -> None:
    assert pinned["good"]["allowed"] is True, _message(pinned["good"])
    assert pinned["again"]["allowed"] is True
    assert 'ostiary_trust_root_trust_total{how="pinned"} 3.0' in pinned["metrics"]


def test_a_root_signed_by_another_key_is_denied(pinned) -> None:
    answer = pinned["other"]
    assert answer["allowed"] is False
    assert "pinned in secret(s) ostiary-system/hub-root" in _message(answer)
    assert "no trust on first use" in _message(answer)


def test_a_missing_root_secret_denies(pinned) -> None:
    assert pinned["missing"]["allowed"] is False
    assert f"root secret nope not found in namespace {SYSTEM_NS}" in _message(pinned["missing"])


def test_an_image_policy_reads_root_secrets_from_its_namespace(pinned) -> None:
    answer = pinned["team-good"]
    assert answer["allowed"] is False
    assert "team/hub-root" in _message(answer)


def test_serve_root_pins_pin_entries_without_root_secrets(pinned) -> None:
    assert pinned["default-a"]["allowed"] is True, _message(pinned["default-a"])  # A's root key: pinned
    denied = pinned["default-b"]
    assert denied["allowed"] is False and "root-pins.yaml" in _message(denied)


def test_pinned_repositories_leave_no_first_use_record(pinned) -> None:
    assert pinned["records"] == []
