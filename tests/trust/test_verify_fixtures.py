"""Real Docker Hub trust data (shared/fixtures/notary/dockerhub-captured) through the pure verifier.

Every expectation of expected.json must hold. The digests come only from expected.json; the decision
made here from the facts is the one the Rego policy makes (released digest; with signers, each
signer's role signed the released digest with the signer's key).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from app.notary.errors import ExpiredMetadata, MissingRole, TrustError
from app.notary.facts import failure_facts
from app.notary.keys import material_fingerprint, signer_key_ids
from app.notary.trusted import TrustedRepository
from app.notary.walker import load_all

CAPTURED = Path(__file__).parents[2].parent / "shared" / "fixtures" / "notary" / "dockerhub-captured"
EXPECTED = json.loads((CAPTURED / "expected.json").read_text())
SERVER = "https://notary.docker.io"


def _valid_at(case: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(case["valid_at"])


def _signer_pem(name: str) -> str:
    return (CAPTURED / "signer-keys" / f"{name}.pub").read_text()


def load_directory(name: str, now: datetime | None = None) -> TrustedRepository:
    case = EXPECTED["cases"][name]
    directory = CAPTURED / name
    repo = TrustedRepository(case["gun"], now or _valid_at(case), server=SERVER)
    return load_all(repo, lambda role: _read(directory / f"{role}.json"))


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def gather(name: str, tag: str, signer_names: list[str]) -> dict[str, Any]:
    """The facts document, as the trust service would produce it (failures included)."""
    case = EXPECTED["cases"][name]
    signers = [(f"{n}-secret", n, _signer_pem(n)) for n in signer_names]
    try:
        return load_directory(name).facts(tag, None, signers)
    except TrustError as error:
        return failure_facts(SERVER, case["gun"], tag, None, error, signers)


def decide(facts: dict[str, Any], tag: str, signer_names: list[str]) -> str | None:
    """The digest an image would be pinned to, or None for a denial (what the policy computes)."""
    if not facts["verified"]:
        return None
    entry = facts["targets"][tag]
    released = entry["released"]
    if released is None:
        return None
    for signer in facts["signers"]:
        assert signer["error"] is None
        role = facts["roles"].get(signer["role"])
        if role is None or not set(signer["keyids"]) & set(role["signed_by"]):
            return None
        if entry["roles"].get(signer["role"]) != released:
            return None
    return released


CASES = [
    pytest.param(
        name, expectation, id=f"{name}-{expectation['tag']}-{'+'.join(expectation.get('signers', []))}"
    )
    for name, case in EXPECTED["cases"].items()
    for expectation in case["expect"]
]


@pytest.mark.parametrize(("name", "expectation"), CASES)
def test_expected_json_holds(name: str, expectation: dict[str, Any]) -> None:
    signer_names = expectation.get("signers", [])
    wanted = expectation["digest"] if "signers" in expectation else expectation["no_signers"]
    facts = gather(name, expectation["tag"], signer_names)
    assert decide(facts, expectation["tag"], signer_names) == wanted
    if "signers" in expectation and wanted is not None:
        for signer_name in signer_names:
            role = facts["roles"][f"targets/{signer_name}"]
            assert set(signer_key_ids(_signer_pem(signer_name))) & set(role["signed_by"])
            assert facts["targets"][expectation["tag"]]["roles"][f"targets/{signer_name}"] == wanted


def test_every_captured_directory_is_covered() -> None:
    directories = {p.name for p in CAPTURED.iterdir() if p.is_dir() and p.name != "signer-keys"}
    assert directories == set(EXPECTED["cases"])


def test_eve_image_fails_because_listed_delegations_are_missing() -> None:
    with pytest.raises(MissingRole) as raised:
        load_directory("eve-image")
    assert (raised.value.role or "").startswith("targets/")
    facts = gather("eve-image", "test", ["del1"])
    assert facts["verified"] is False
    assert facts["error_role"] == raised.value.role
    assert facts["error"] == str(raised.value)
    assert facts["targets"] == {} and facts["roles"] == {}
    assert facts["signers"] == [
        {
            "name": "del1",
            "secret": "del1-secret",
            "role": "targets/del1",
            "keyids": signer_key_ids(_signer_pem("del1")),
            "error": None,
            "key": material_fingerprint(_signer_pem("del1")),
        }
    ]


def test_releases_wins_over_targets_in_charlie() -> None:
    facts = gather("charlie-image", "test", [])
    entry = facts["targets"]["test"]
    assert entry["roles"]["targets"] != entry["roles"]["targets/releases"]
    assert entry["released"] == entry["roles"]["targets/releases"]


def test_dave_del2_signed_a_different_digest_than_released() -> None:
    facts = gather("dave-image", "test", ["del2"])
    entry = facts["targets"]["test"]
    assert entry["roles"]["targets/del2"] != entry["released"]
    assert entry["roles"]["targets/del2"].startswith("sha256:a825e8e9")


def test_signer_key_ids_are_the_delegation_key_ids_in_the_trust_data() -> None:
    facts = gather("alice-image", "test", ["phbelitz", "chamsen"])
    for signer in facts["signers"]:
        role = facts["roles"][signer["role"]]
        assert set(signer["keyids"]) & set(role["keyids"])
        assert set(signer_key_ids(_signer_pem(signer["name"]))) <= set(signer["keyids"])


def test_digest_only_reference_lists_every_tag_signed_with_it() -> None:
    released = gather("sample-image", "v1", [])["targets"]["v1"]["released"]
    facts = load_directory("sample-image").facts(None, released, [])
    assert list(facts["targets"]) == ["v1"]
    assert facts["tag"] is None and facts["digest"] == released
    assert load_directory("sample-image").facts(None, "sha256:" + "0" * 64, [])["targets"] == {}


def test_unsigned_tag_has_no_release_and_no_roles() -> None:
    facts = gather("alice-image", "missing-tag", [])
    assert facts["verified"] is True
    assert facts["targets"] == {
        "missing-tag": {
            "released": None,
            "refused": "'missing-tag' is not signed in targets/releases or targets",
            "roles": {},
        }
    }


def test_facts_document_shape() -> None:
    facts = gather("alice-image", "test", ["phbelitz"])
    assert set(facts) == {
        "verified",
        "error",
        "error_role",
        "server",
        "gun",
        "tag",
        "digest",
        "targets",
        "roles",
        "signers",
        "root_trust",
        "root_pins",
    }
    assert facts["root_trust"] == "first-use"  # no anchor was given: trusted on first use
    assert facts["root_pins"] == []
    assert facts["server"] == SERVER and facts["gun"] == "docker.io/phbelitz/alice-image"
    assert set(facts["roles"]) == {"targets", "targets/releases", "targets/phbelitz", "targets/chamsen"}
    assert facts["signers"][0] == {
        "name": "phbelitz",
        "secret": "phbelitz-secret",
        "role": "targets/phbelitz",
        "keyids": facts["signers"][0]["keyids"],
        "error": None,
        "key": material_fingerprint(_signer_pem("phbelitz")),
    }
    json.dumps(facts)  # plain JSON for OPA


def test_unparseable_signer_key_is_reported_not_raised() -> None:
    repo = load_directory("alice-image")
    facts = repo.facts("test", None, [("bad-secret", "phbelitz", "not a pem")])
    assert facts["signers"][0]["keyids"] == []
    assert (
        facts["signers"][0]["error"] == "secret bad-secret: publicKey is not a PEM public key or certificate"
    )


@pytest.mark.parametrize("name", sorted(EXPECTED["cases"]))
def test_captured_data_is_expired_today(name: str) -> None:
    with pytest.raises(ExpiredMetadata) as raised:
        load_directory(name, now=datetime.fromisoformat("2026-01-01T00:00:00+00:00"))
    assert raised.value.role == "timestamp"
    assert str(raised.value).startswith("timestamp: expired at ")


@pytest.mark.parametrize("name", sorted(set(EXPECTED["cases"]) - {"eve-image"}))
def test_versions_and_root_are_remembered_for_the_next_refresh(name: str) -> None:
    first = load_directory(name)
    case = EXPECTED["cases"][name]
    again = TrustedRepository(
        case["gun"], _valid_at(case), trusted_root=first.root_bytes, seen_versions=first.versions
    )
    directory = CAPTURED / name
    again.update_root((directory / "root.json").read_bytes())
    again.update_timestamp((directory / "timestamp.json").read_bytes())
    assert again.versions["timestamp"] == first.versions["timestamp"]
