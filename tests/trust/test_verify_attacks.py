"""Attacks on Notary v1 trust data, forged with tests/trust/forge.py, each refused with a precise error.

Every refusal asserts the exception class and that the message names the role.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from app.notary.errors import (
    BadRootRotation,
    BadSignature,
    CertificateError,
    DelegationError,
    ExpiredMetadata,
    HashMismatch,
    KeyIdMismatch,
    LengthMismatch,
    LoadOrderError,
    MalformedMetadata,
    MissingRole,
    RollbackAttack,
    ThresholdNotMet,
    TrustError,
    UnknownKeyType,
    WrongType,
)
from app.notary.trusted import TrustedRepository
from tests.trust.forge import (
    DIGEST_A,
    DIGEST_B,
    GUN,
    NOW,
    ForgedRepo,
    ecdsa_key,
    ed25519_key,
    envelope,
    file_meta,
    load,
    rsa_key,
    x509_key,
)

ALL_ROLES = ["root", "timestamp", "snapshot", "targets", "targets/releases"]


def with_releases(**kwargs: Any) -> ForgedRepo:
    repo = ForgedRepo(**kwargs)
    repo.add_delegation("targets/releases", targets={"latest": DIGEST_B})
    return repo


def refused(files: dict[str, bytes], error: type[TrustError], role: str, **kwargs: Any) -> TrustError:
    with pytest.raises(error) as raised:
        load(files, **kwargs)
    assert raised.value.role == role
    assert str(raised.value).startswith(f"{role}: ")
    return raised.value


# --- the baseline: forged data verifies ---------------------------------------------------------


def test_forged_repository_verifies_and_releases_wins() -> None:
    repo = with_releases()
    facts = load(repo.build()).facts("latest", None, [])
    assert facts["verified"] is True
    assert facts["targets"]["latest"] == {
        "released": "sha256:" + DIGEST_B,
        "refused": None,
        "roles": {"targets": "sha256:" + DIGEST_A, "targets/releases": "sha256:" + DIGEST_B},
    }
    releases = repo.delegation("targets/releases").keys[0]
    assert facts["roles"]["targets/releases"] == {
        "keyids": [releases.keyid],
        "threshold": 1,
        "signed_by": [releases.keyid],
    }


# --- signatures and thresholds -------------------------------------------------------------------


@pytest.mark.parametrize("role", ALL_ROLES)
def test_empty_signature_list_is_refused(role: str) -> None:
    repo = with_releases()
    repo.signers[role] = []
    error = refused(repo.build(), ThresholdNotMet, role)
    assert "no signatures" in error.reason


@pytest.mark.parametrize(
    ("role", "other"),
    [
        ("timestamp", "snapshot"),
        ("snapshot", "timestamp"),
        ("targets", "snapshot"),
        ("root", "targets"),
    ],
)
def test_role_signed_by_another_roles_key_is_refused(role: str, other: str) -> None:
    repo = with_releases()
    repo.signers[role] = repo.role_keys[other]
    refused(repo.build(), ThresholdNotMet, role)


def test_delegation_signed_by_the_targets_key_is_refused() -> None:
    repo = with_releases()
    repo.signers["targets/releases"] = repo.role_keys["targets"]
    refused(repo.build(), ThresholdNotMet, "targets/releases")


def test_threshold_two_is_not_met_by_one_key_signing_twice() -> None:
    repo = with_releases()
    first, second = ecdsa_key(), ecdsa_key()
    repo.role_keys["targets"] = [first, second]
    repo.thresholds["targets"] = 2
    repo.signers["targets"] = [first, first]
    error = refused(repo.build(), ThresholdNotMet, "targets")
    assert "1 of 2" in error.reason


def test_threshold_two_is_met_by_two_distinct_keys() -> None:
    repo = with_releases()
    first, second = ecdsa_key(), ecdsa_key()
    repo.role_keys["targets"] = [first, second]
    repo.thresholds["targets"] = 2
    facts = load(repo.build()).facts("latest", None, [])
    assert facts["roles"]["targets"]["signed_by"] == sorted([first.keyid, second.keyid])
    assert facts["roles"]["targets"]["threshold"] == 2


def test_delegation_threshold_two_needs_two_distinct_delegation_keys() -> None:
    repo = ForgedRepo()
    first, second = ecdsa_key(), ecdsa_key()
    repo.add_delegation("targets/releases", [first, second], threshold=2, targets={"latest": DIGEST_B})
    repo.signers["targets/releases"] = [first, first]
    refused(repo.build(), ThresholdNotMet, "targets/releases")


def test_delegation_signed_by_a_key_not_in_the_parents_delegation_is_refused() -> None:
    repo = with_releases()
    repo.signers["targets/releases"] = [ecdsa_key()]
    refused(repo.build(), ThresholdNotMet, "targets/releases")


def test_delegation_signed_by_another_delegations_key_is_refused() -> None:
    repo = with_releases()
    repo.add_delegation("targets/alice", targets={"latest": DIGEST_B})
    repo.signers["targets/releases"] = repo.delegation("targets/alice").keys
    refused(repo.build(), ThresholdNotMet, "targets/releases")


@pytest.mark.parametrize("role", ALL_ROLES)
def test_der_encoded_ecdsa_signature_is_refused(role: str) -> None:
    repo = with_releases()
    repo.der.add(role)
    error = refused(repo.build(), BadSignature, role)
    assert "does not verify" in error.reason


@pytest.mark.parametrize("role", ["timestamp", "targets", "targets/releases"])
def test_signature_over_other_content_is_refused(role: str) -> None:
    repo = with_releases()
    files = repo.build()
    document = json.loads(files[role])
    document["signed"]["version"] += 1  # the signature no longer covers "signed"
    files[role] = envelope(document["signed"], document["signatures"])
    if role == "timestamp":
        refused(files, BadSignature, role)
    else:  # the bytes changed, so the hash in the snapshot catches it first
        refused(files, HashMismatch, role)


def test_method_that_does_not_fit_the_key_type_is_refused() -> None:
    repo = with_releases()
    repo.methods["timestamp"] = "eddsa"  # an ecdsa key
    refused(repo.build(), BadSignature, "timestamp")


def test_unknown_signature_keyids_are_ignored_when_threshold_is_met() -> None:
    repo = with_releases()
    repo.signers["snapshot"] = [ecdsa_key(), *repo.role_keys["snapshot"], repo.role_keys["targets"][0]]
    load(repo.build())


# --- expiry --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ALL_ROLES)
def test_expired_role_is_refused(role: str) -> None:
    repo = with_releases()
    repo.expires[role] = NOW - timedelta(seconds=1)
    error = refused(repo.build(), ExpiredMetadata, role)
    assert "expired at" in error.reason


def test_expiry_instant_itself_counts_as_expired() -> None:
    repo = with_releases()
    repo.expires["timestamp"] = NOW
    refused(repo.build(), ExpiredMetadata, "timestamp")


def test_nested_delegation_expiry_is_checked() -> None:
    repo = with_releases()
    repo.add_delegation("targets/releases/team", targets={"latest": DIGEST_B})
    repo.expires["targets/releases/team"] = NOW - timedelta(days=1)
    refused(repo.build(), ExpiredMetadata, "targets/releases/team")


# --- rollback ------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ALL_ROLES)
def test_rollback_of_each_role_is_refused(role: str) -> None:
    repo = with_releases()
    repo.versions[role] = 4
    error = refused(repo.build(), RollbackAttack, role, seen_versions={role: 5})
    assert "lower than" in error.reason


@pytest.mark.parametrize("role", ALL_ROLES)
def test_same_version_as_seen_is_accepted(role: str) -> None:
    repo = with_releases()
    repo.versions[role] = 5
    assert load(repo.build(), seen_versions={role: 5}).versions[role] == 5


def test_versions_are_kept_for_roles_not_loaded_this_time() -> None:
    repo = ForgedRepo()
    versions = load(repo.build(), seen_versions={"targets/gone": 7}).versions
    assert versions["targets/gone"] == 7
    assert versions["timestamp"] == 1


# --- hashes and lengths --------------------------------------------------------------------------


def _flip_inside(data: bytes) -> bytes:
    """Same length, different bytes: change one digit of the version."""
    marker = b'"version":1'
    assert marker in data
    return data.replace(marker, b'"version":2')


@pytest.mark.parametrize(
    ("role", "listed_in"),
    [
        ("snapshot", "timestamp"),
        ("targets", "snapshot"),
        ("targets/releases", "snapshot"),
    ],
)
def test_hash_mismatch_is_refused(role: str, listed_in: str) -> None:
    files = with_releases().build()
    files[role] = _flip_inside(files[role])
    error = refused(files, HashMismatch, role)
    assert listed_in in error.reason


@pytest.mark.parametrize("role", ["snapshot", "targets", "targets/releases"])
def test_length_mismatch_is_refused(role: str) -> None:
    files = with_releases().build()
    files[role] = files[role] + b" "
    refused(files, LengthMismatch, role)


def test_root_that_differs_from_the_snapshots_root_meta_is_refused() -> None:
    repo = ForgedRepo()
    files = repo.build()
    repo.versions["root"] = 2  # a root the snapshot does not list
    files["root"] = repo.build()["root"]
    refused(files, HashMismatch, "root")


def test_delegation_listed_in_snapshot_but_not_served_is_refused() -> None:
    files = with_releases().build()
    del files["targets/releases"]
    error = refused(files, MissingRole, "targets/releases")
    assert "does not serve" in error.reason


def test_delegation_not_listed_in_snapshot_is_skipped_as_unpublished() -> None:
    repo = with_releases()
    repo.unlisted.add("targets/releases")
    repo_state = load(repo.build())
    assert repo_state.loaded_roles == ["targets"]
    assert repo_state.facts("latest", None, [])["targets"]["latest"]["released"] == "sha256:" + DIGEST_A


def test_snapshot_without_targets_meta_is_refused() -> None:
    repo = ForgedRepo()
    repo.unlisted.add("targets")
    refused(repo.build(), MissingRole, "targets")


# --- root certificates, key IDs, types ----------------------------------------------------------


def test_root_certificate_for_another_gun_is_refused() -> None:
    repo = ForgedRepo()
    repo.role_keys["root"] = [x509_key("docker.io/evil/app")]
    error = refused(repo.build(), CertificateError, "root")
    assert "docker.io/evil/app" in error.reason


def test_root_data_of_one_gun_is_refused_for_another() -> None:
    files = ForgedRepo(gun="docker.io/acme/other").build()
    refused(files, CertificateError, "root")


def test_expired_root_certificate_is_refused() -> None:
    repo = ForgedRepo()
    repo.role_keys["root"] = [
        x509_key(not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=1))
    ]
    error = refused(repo.build(), CertificateError, "root")
    assert "expired" in error.reason


def test_not_yet_valid_root_certificate_is_refused() -> None:
    repo = ForgedRepo()
    repo.role_keys["root"] = [x509_key(not_before=NOW + timedelta(days=2))]
    refused(repo.build(), CertificateError, "root")


def test_root_certificate_from_a_clock_running_ahead_gets_a_day_of_leeway() -> None:
    repo = ForgedRepo()
    repo.role_keys["root"] = [x509_key(not_before=NOW + timedelta(hours=23))]
    load(repo.build())


def test_root_key_that_is_not_a_certificate_is_refused() -> None:
    repo = ForgedRepo()
    repo.role_keys["root"] = [ecdsa_key()]
    refused(repo.build(), CertificateError, "root")


def test_expired_delegation_certificate_does_not_count() -> None:
    repo = ForgedRepo()
    repo.add_delegation(
        "targets/releases",
        [x509_key("alice", not_after=NOW - timedelta(hours=1))],
        targets={"latest": DIGEST_B},
    )
    refused(repo.build(), CertificateError, "targets/releases")


@pytest.mark.parametrize("role", ["root", "timestamp", "snapshot", "targets"])
def test_wrong_type_is_refused(role: str) -> None:
    repo = with_releases()
    repo.edit[role] = lambda signed: signed.update({"_type": "Targets" if role != "targets" else "Root"})
    error = refused(repo.build(), WrongType, role)
    assert isinstance(error, MalformedMetadata)


def test_delegation_with_root_type_is_refused() -> None:
    repo = with_releases()
    repo.edit["targets/releases"] = lambda signed: signed.update({"_type": "Root"})
    refused(repo.build(), WrongType, "targets/releases")


def _rekey(keys: dict[str, Any], old: str, new: str) -> None:
    keys[new] = keys.pop(old)


def test_root_key_id_that_does_not_match_its_key_is_refused() -> None:
    repo = ForgedRepo()
    timestamp_id = repo.role_keys["timestamp"][0].keyid
    forged_id = "0" * 64

    def edit(signed: dict[str, Any]) -> None:
        _rekey(signed["keys"], timestamp_id, forged_id)
        signed["roles"]["timestamp"]["keyids"] = [forged_id]

    repo.edit["root"] = edit
    error = refused(repo.build(), KeyIdMismatch, "root")
    assert forged_id in error.reason


def test_delegation_key_id_that_does_not_match_its_key_is_refused() -> None:
    repo = with_releases()
    releases_id = repo.delegation("targets/releases").keys[0].keyid
    other = ecdsa_key()

    def edit(signed: dict[str, Any]) -> None:  # a key listed under another key's ID
        signed["delegations"]["keys"][releases_id] = other.to_json()

    repo.edit["targets"] = edit
    refused(repo.build(), KeyIdMismatch, "targets")


def test_unknown_key_type_bound_to_a_role_is_refused() -> None:
    repo = ForgedRepo()

    def edit(signed: dict[str, Any]) -> None:
        key = {"keytype": "dsa", "keyval": {"private": None, "public": "AAAA"}}
        from app.notary.keys import key_id

        new_id = key_id("dsa", "AAAA")
        signed["keys"][new_id] = key
        signed["roles"]["snapshot"]["keyids"].append(new_id)

    repo.edit["root"] = edit
    refused(repo.build(), UnknownKeyType, "snapshot")


@pytest.mark.parametrize("threshold", [0, -1, True, "1"])
def test_threshold_below_one_or_not_an_integer_is_refused(threshold: Any) -> None:
    repo = ForgedRepo()
    repo.edit["root"] = lambda signed: signed["roles"]["targets"].update({"threshold": threshold})
    refused(repo.build(), MalformedMetadata, "root")


# --- root rotation -------------------------------------------------------------------------------


def _rotated(repo: ForgedRepo, signers: str) -> tuple[bytes, dict[str, bytes]]:
    old_files = repo.build()
    old_key = repo.role_keys["root"][0]
    new_key = x509_key()
    repo.role_keys["root"] = [new_key]
    repo.versions["root"] = 2
    repo.signers["root"] = {"both": [old_key, new_key], "new": [new_key], "old": [old_key]}[signers]
    return old_files["root"], repo.build()


def test_root_rotation_signed_by_old_and_new_keys_is_accepted() -> None:
    trusted, files = _rotated(ForgedRepo(), "both")
    repo = load(files, trusted_root=trusted)
    assert repo.root_bytes == files["root"]
    assert repo.versions["root"] == 2


def test_root_rotation_signed_only_by_the_new_key_is_refused() -> None:
    trusted, files = _rotated(ForgedRepo(), "new")
    error = refused(files, BadRootRotation, "root", trusted_root=trusted)
    assert "trusted root" in error.reason


def test_root_rotation_signed_only_by_the_old_key_is_refused() -> None:
    trusted, files = _rotated(ForgedRepo(), "old")
    refused(files, ThresholdNotMet, "root", trusted_root=trusted)


def test_root_rotation_when_old_root_certificate_expired_is_accepted() -> None:
    repo = ForgedRepo()
    repo.role_keys["root"] = [
        x509_key(not_before=NOW - timedelta(days=800), not_after=NOW - timedelta(days=1))
    ]
    trusted, files = _rotated(repo, "both")
    load(files, trusted_root=trusted)


def test_root_rotation_to_a_lower_version_is_refused() -> None:
    repo = ForgedRepo()
    repo.versions["root"] = 3
    trusted = repo.build()["root"]
    repo.versions["root"] = 2
    refused(repo.build(), RollbackAttack, "root", trusted_root=trusted)


def test_chain_of_root_rotations_is_walked_and_cannot_go_back() -> None:
    repo = ForgedRepo()
    roots = [repo.build()["root"]]
    for version in (2, 3):
        old_key, new_key = repo.role_keys["root"][0], x509_key()
        repo.role_keys["root"] = [new_key]
        repo.versions["root"] = version
        repo.signers["root"] = [old_key, new_key]
        roots.append(repo.build()["root"])
    files = repo.build()
    trusted = TrustedRepository(GUN, NOW, trusted_root=roots[0])
    trusted.update_root(roots[1])
    trusted.update_root(roots[2])
    assert trusted.versions["root"] == 3
    with pytest.raises(BadRootRotation):  # v2 is not signed by v3's key
        trusted.update_root(roots[1])
    trusted.update_timestamp(files["timestamp"])


def test_root_signed_by_the_trusted_keys_but_older_is_refused() -> None:
    repo = ForgedRepo()
    repo.versions["root"] = 3
    trusted = repo.build()["root"]
    repo.versions["root"] = 2
    chain = TrustedRepository(GUN, NOW)
    chain.update_root(trusted)
    with pytest.raises(RollbackAttack) as raised:
        chain.update_root(repo.build()["root"])
    assert raised.value.role == "root" and "lower than trusted version 3" in raised.value.reason


def test_trusted_root_without_a_new_root_must_still_be_current() -> None:
    repo = ForgedRepo()
    repo.expires["root"] = NOW + timedelta(days=1)
    files = repo.build()
    later = TrustedRepository(GUN, NOW + timedelta(days=2), trusted_root=files["root"])
    with pytest.raises(ExpiredMetadata) as raised:
        later.update_timestamp(files["timestamp"])
    assert raised.value.role == "root"


def test_trusted_root_is_reused_without_fetching_root_again() -> None:
    files = ForgedRepo().build()
    repo = TrustedRepository(GUN, NOW, trusted_root=files["root"])
    repo.update_timestamp(files["timestamp"])
    repo.update_snapshot(files["snapshot"])
    repo.update_targets(files["targets"])
    assert repo.facts("latest", None, [])["targets"]["latest"]["released"] == "sha256:" + DIGEST_A


def test_a_different_root_for_the_same_gun_is_refused_after_trust_on_first_use() -> None:
    trusted = ForgedRepo().build()["root"]
    impostor = ForgedRepo().build()
    refused(impostor, BadRootRotation, "root", trusted_root=trusted)


# --- delegations ---------------------------------------------------------------------------------


def test_delegated_target_outside_the_roles_paths_is_refused() -> None:
    repo = ForgedRepo()
    repo.add_delegation("targets/releases", paths=["stable-"], targets={"latest": DIGEST_B})
    error = refused(repo.build(), DelegationError, "targets/releases")
    assert "'latest'" in error.reason


def test_delegated_target_inside_the_roles_paths_is_accepted() -> None:
    repo = ForgedRepo()
    repo.add_delegation("targets/releases", paths=["lat"], targets={"latest": DIGEST_B})
    assert (
        load(repo.build()).facts("latest", None, [])["targets"]["latest"]["released"] == "sha256:" + DIGEST_B
    )


def test_delegation_with_no_paths_may_sign_nothing() -> None:
    repo = ForgedRepo()
    repo.add_delegation("targets/releases", paths=[], targets={"latest": DIGEST_B})
    refused(repo.build(), DelegationError, "targets/releases")


def test_nested_delegation_cannot_widen_its_parents_paths() -> None:
    repo = ForgedRepo()
    repo.add_delegation("targets/team", paths=["team-"], targets={"team-1": DIGEST_A})
    repo.add_delegation("targets/team/ci", paths=[""], targets={"latest": DIGEST_B})
    refused(repo.build(), DelegationError, "targets/team/ci")


def test_nested_delegations_load_parents_first() -> None:
    repo = ForgedRepo()
    repo.add_delegation("targets/team", targets={"v1": DIGEST_A})
    repo.add_delegation("targets/team/ci", paths=["v"], targets={"v1": DIGEST_B})
    files = repo.build()
    trusted = TrustedRepository(GUN, NOW)
    trusted.update_root(files["root"])
    trusted.update_timestamp(files["timestamp"])
    trusted.update_snapshot(files["snapshot"])
    trusted.update_targets(files["targets"])
    assert trusted.pending_delegations() == ["targets/team"]
    with pytest.raises(LoadOrderError):
        trusted.update_delegation("targets/team/ci", files["targets/team/ci"])
    trusted.update_delegation("targets/team", files["targets/team"])
    assert trusted.pending_delegations() == ["targets/team/ci"]
    trusted.update_delegation("targets/team/ci", files["targets/team/ci"])
    facts = trusted.facts("v1", None, [])
    assert facts["targets"]["v1"]["roles"] == {
        "targets/team": "sha256:" + DIGEST_A,
        "targets/team/ci": "sha256:" + DIGEST_B,
    }
    assert facts["targets"]["v1"]["released"] is None


def test_snapshot_role_the_parent_does_not_delegate_is_never_pending() -> None:
    repo = with_releases()
    stray = ForgedRepo()
    stray.add_delegation("targets/stray", targets={"latest": DIGEST_A})
    stray_bytes = stray.build()["targets/stray"]
    # the snapshot (server key) lists a role no targets role delegates: it can carry no trust
    repo.edit["snapshot"] = lambda signed: signed["meta"].update({"targets/stray": file_meta(stray_bytes)})
    trusted = load(repo.build())
    assert trusted.loaded_roles == ["targets", "targets/releases"]
    assert trusted.pending_delegations() == []


def test_digest_reference_lists_every_tag_signed_with_the_digest() -> None:
    repo = with_releases()
    repo.targets = {"latest": DIGEST_A, "v1": DIGEST_A, "v2": DIGEST_B}
    facts = load(repo.build()).facts(None, "sha256:" + DIGEST_A, [])
    assert sorted(facts["targets"]) == ["latest", "v1"]
    assert facts["targets"]["latest"]["released"] == "sha256:" + DIGEST_B  # releases re-signed latest


def test_role_the_parent_does_not_delegate_is_refused() -> None:
    repo = with_releases()
    files = repo.build()
    trusted = TrustedRepository(GUN, NOW)
    for role in ("root", "timestamp", "snapshot", "targets"):
        getattr(trusted, f"update_{role}")(files[role])
    with pytest.raises(DelegationError) as raised:
        trusted.update_delegation("targets/alice", files["targets/releases"])
    assert raised.value.role == "targets/alice"


def test_delegation_that_is_not_a_direct_child_is_refused() -> None:
    repo = ForgedRepo()
    repo.add_delegation("targets/releases", targets={"latest": DIGEST_B})
    repo.edit["targets"] = lambda signed: signed["delegations"]["roles"][0].update({"name": "targets/a/b"})
    refused(repo.build(), DelegationError, "targets")


# --- signature methods ---------------------------------------------------------------------------


def test_eddsa_signatures_verify() -> None:
    repo = with_releases()
    repo.role_keys["timestamp"] = [ed25519_key()]
    repo.role_keys["snapshot"] = [ed25519_key()]
    repo.delegation("targets/releases").keys = [ed25519_key()]
    facts = load(repo.build()).facts("latest", None, [])
    assert facts["roles"]["targets/releases"]["signed_by"] == [
        repo.delegation("targets/releases").keys[0].keyid
    ]


@pytest.mark.parametrize("method", ["rsapss", "rsapkcs1v15"])
def test_rsa_signatures_verify(method: str) -> None:
    repo = with_releases()
    repo.role_keys["targets"] = [rsa_key()]
    repo.methods["targets"] = method
    facts = load(repo.build()).facts("latest", None, [])
    assert facts["roles"]["targets"]["signed_by"] == [repo.role_keys["targets"][0].keyid]


def test_rsa_x509_root_verifies() -> None:
    repo = ForgedRepo()
    repo.role_keys["root"] = [x509_key(private=rsa_key().private)]
    repo.methods["root"] = "rsapkcs1v15"
    load(repo.build())


def test_rsa_key_signing_with_ecdsa_method_is_refused() -> None:
    repo = ForgedRepo()
    repo.role_keys["targets"] = [rsa_key()]
    repo.methods["targets"] = "ecdsa"
    refused(repo.build(), BadSignature, "targets")


def test_ecdsa_x509_delegation_key_and_certificate_signer() -> None:
    repo = ForgedRepo()
    alice = x509_key("alice")
    repo.add_delegation("targets/alice", [alice], targets={"latest": DIGEST_B})
    from cryptography.hazmat.primitives import serialization

    from app.notary.keys import load_certificate

    cert_pem = load_certificate(alice.public).public_bytes(serialization.Encoding.PEM).decode()
    facts = load(repo.build()).facts(
        "latest", None, [("alice-cert", "alice", cert_pem), ("alice-key", "alice", alice.public_pem())]
    )
    signed_by = facts["roles"]["targets/alice"]["signed_by"]
    assert signed_by == [alice.keyid]
    assert all(alice.keyid in signer["keyids"] for signer in facts["signers"])


# --- misuse and malformed input ------------------------------------------------------------------


def test_load_order_is_enforced() -> None:
    files = ForgedRepo().build()
    repo = TrustedRepository(GUN, NOW)
    with pytest.raises(LoadOrderError):
        repo.update_timestamp(files["timestamp"])
    repo.update_root(files["root"])
    with pytest.raises(LoadOrderError):
        repo.update_snapshot(files["snapshot"])
    with pytest.raises(LoadOrderError):
        repo.facts("latest", None, [])
    repo.update_timestamp(files["timestamp"])
    with pytest.raises(LoadOrderError):
        repo.update_root(files["root"])
    with pytest.raises(LoadOrderError):
        repo.update_timestamp(files["timestamp"])
    with pytest.raises(LoadOrderError):
        repo.update_targets(files["targets"])


def test_facts_refuse_while_delegations_are_pending() -> None:
    files = with_releases().build()
    repo = TrustedRepository(GUN, NOW)
    for role in ("root", "timestamp", "snapshot", "targets"):
        getattr(repo, f"update_{role}")(files[role])
    with pytest.raises(LoadOrderError):
        repo.facts("latest", None, [])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b"{}",
        b'{"signed": [], "signatures": []}',
        b'{"signed": {}, "signatures": {}}',
        b'{"signed": {"_type": "Root"}, "signatures": []}',
        b"\xff\xfe",
        b'{"a": 1.5}',
        b'{"a": NaN}',
        b'{"signed": {}, "signed": {}, "signatures": []}',
        b"[" * 100000,
    ],
)
def test_garbage_root_is_malformed_not_a_crash(data: bytes) -> None:
    with pytest.raises(MalformedMetadata) as raised:
        TrustedRepository(GUN, NOW).update_root(data)
    assert raised.value.role == "root"


MUTATIONS: list[tuple[str, Any]] = [
    ("version", "1"),
    ("version", None),
    ("version", -1),
    ("expires", 5),
    ("expires", "2030-13-01T00:00:00Z"),
    ("expires", "tomorrow"),
    ("expires", "0001-01-01T00:00:00+01:00"),
    ("expires", "9999-12-31T23:59:59-01:00"),
    ("expires", "2030-01-01T00:00:00+24:00"),
    ("expires", "2030-01-01T00:00:60Z"),
    ("expires", "2030-01-01 00:00:00Z"),
    ("expires", "2030-01-01T00:00:00Z\n"),
    ("expires", "\u0662\u0660\u0663\u0660-01-01T00:00:00Z"),
    ("keys", []),
    ("roles", None),
    ("meta", []),
    ("meta", {"snapshot": {"hashes": {"sha256": 5}, "length": 1}}),
    ("meta", {"snapshot": {"hashes": {}, "length": 1}}),
    ("targets", []),
    ("targets", {"x": {"hashes": []}}),
    ("delegations", []),
    ("delegations", {"keys": {}, "roles": [{"name": 5}]}),
]


RELEVANT = {
    "root": {"keys", "roles"},
    "timestamp": {"meta"},
    "snapshot": {"meta"},
    "targets": {"targets", "delegations"},
}


@pytest.mark.parametrize(("field", "value"), MUTATIONS)
@pytest.mark.parametrize("role", ["root", "timestamp", "snapshot", "targets"])
def test_wrong_field_types_are_malformed_never_a_crash(role: str, field: str, value: Any) -> None:
    repo = ForgedRepo()
    repo.edit[role] = lambda signed: signed.update({field: value})
    if field in RELEVANT[role] | {"version", "expires"}:
        refused(repo.build(), MalformedMetadata, role)
    else:  # a field the role does not have is ignored
        load(repo.build())


def test_float_in_signed_is_malformed() -> None:
    files = ForgedRepo().build()
    files["timestamp"] = files["timestamp"].replace(b'"version":1', b'"version":1.0')
    error = refused(files, MalformedMetadata, "timestamp")
    assert "not an integer" in error.reason


def test_signature_entries_of_wrong_shape_are_malformed() -> None:
    files = ForgedRepo().build()
    document = json.loads(files["timestamp"])
    document["signatures"][0]["sig"] = "%%%"
    files["timestamp"] = envelope(document["signed"], document["signatures"])
    refused(files, MalformedMetadata, "timestamp")


def test_non_bytes_input_is_malformed() -> None:
    with pytest.raises(MalformedMetadata):
        TrustedRepository(GUN, NOW).update_root("{}")  # type: ignore[arg-type]


# --- fuzz: any signed structure gives a TrustError or verified facts, never another exception ----

FUZZ_VALUES: list[Any] = [
    None,
    0,
    1,
    -1,
    2**70,
    "",
    "x",
    "targets/x",
    "targets/releases/x",
    [],
    {},
    [1],
    {"a": 1},
    True,
    "2030-01-01T00:00:00Z",
    {"hashes": {"sha256": "AAAA"}, "length": 1},
    {"keyids": [], "threshold": 1},
]


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@pytest.mark.parametrize("seed", range(200))
def test_signed_fuzz_never_crashes(seed: int) -> None:
    import copy
    import random

    rnd = random.Random(seed)
    role = rnd.choice(["root", "timestamp", "snapshot", "targets", "targets/releases", "targets/releases/a"])

    def mutate(signed: dict[str, Any]) -> None:
        path = rnd.choice(_paths(signed))
        parent: Any = signed
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and rnd.random() < 0.2:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(rnd.choice(FUZZ_VALUES))

    # Some mutations make the document unsignable by the forge itself (e.g. a float for canonical
    # JSON); draw another mutation from the same seeded stream rather than skip the seed.
    for _ in range(50):
        repo = with_releases()
        repo.add_delegation("targets/releases/a", targets={"latest": DIGEST_B})
        repo.edit[role] = mutate
        try:
            files = repo.build()
            break
        except (TypeError, ValueError):
            continue
    else:
        pytest.fail(f"seed {seed}: no signable mutation in 50 draws")
    try:
        verified = load(files)
    except TrustError as error:
        assert error.role is not None
        return
    for tag, digest in (("latest", None), (None, "sha256:" + DIGEST_B), (None, None)):
        json.dumps(verified.facts(tag, digest, [("secret", "alice", "not a pem")]))
