"""Issue 14 from the attacker's side, through the pure core: hostile metadata is refused (or answered)
with bounded work and the real reason, and tags resolve as Docker resolves them.

Timing bounds here are the property ("not frozen") and generous; they never measure speed.
"""

from __future__ import annotations

import base64
import time
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from app.notary.errors import (
    DeadlineExceeded,
    ExpiredMetadata,
    LimitExceeded,
    MalformedMetadata,
    ThresholdNotMet,
)
from app.notary.keys import MAX_PEM_CHARS, KeyFormatError, parse_pem
from app.notary.metadata import (
    MAX_DELEGATIONS_PER_ROLE,
    MAX_KEYS,
    MAX_PATHS_PER_DELEGATION,
    MAX_TARGETS_PER_ROLE,
    PrefixIndex,
    restrict_paths,
)
from app.notary.trusted import TrustedRepository
from tests.trust.forge import (
    DIGEST_A,
    DIGEST_B,
    GUN,
    NOW,
    ForgedKey,
    ForgedRepo,
    certificate,
    ecdsa_key,
    load,
    target,
    x509_key,
)

NOT_FROZEN = 5.0  # seconds; the quadratic PEM search took minutes on inputs of this size


def _hostile_pem(size: int) -> str:
    return "-----BEGIN CERTIFICATE-----\n" * (size // 28)


# --- PEM: linear, bounded ------------------------------------------------------------------------


def test_many_unterminated_begin_lines_are_refused_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(KeyFormatError, match="no PEM block"):
        parse_pem(_hostile_pem(MAX_PEM_CHARS - 100))
    with pytest.raises(KeyFormatError, match="more than the limit"):
        parse_pem(_hostile_pem(4 * MAX_PEM_CHARS))
    assert time.monotonic() - started < NOT_FROZEN


def test_pem_scanner_still_reads_headers_crlf_and_surrounding_text() -> None:
    key = ecdsa_key()
    pem = key.public_pem().replace("\n", "\r\n")
    lines = pem.splitlines()
    text = "junk before\r\n" + lines[0] + "\r\nrole: alice\r\n\r\n" + "\r\n".join(lines[1:]) + "trailing"
    kind, der = parse_pem(text)
    assert kind == "PUBLIC KEY"
    assert base64.b64encode(der).decode() == key.public
    # an END of another type does not close the block; a later BEGIN restarts it
    mixed = "-----BEGIN CERTIFICATE-----\nxx\n-----END PUBLIC KEY-----\n" + key.public_pem()
    assert parse_pem(mixed)[0] == "PUBLIC KEY"


def _hostile_x509_key(size: int) -> ForgedKey:
    public = base64.b64encode(_hostile_pem(size).encode()).decode()
    return ForgedKey("ecdsa-x509", ecdsa_key().private, public)


def test_hostile_root_certificate_is_refused_quickly() -> None:
    repo = ForgedRepo()
    repo.role_keys["root"] = [_hostile_x509_key(MAX_PEM_CHARS - 100)]
    started = time.monotonic()
    with pytest.raises(MalformedMetadata, match="cannot be read"):
        load(repo.build())
    assert time.monotonic() - started < NOT_FROZEN


def test_expired_root_is_refused_before_its_certificates_are_read() -> None:
    repo = ForgedRepo(expires={"root": NOW - timedelta(days=1)})
    repo.role_keys["root"] = [_hostile_x509_key(MAX_PEM_CHARS + 100)]  # would be refused if read
    with pytest.raises(ExpiredMetadata):
        load(repo.build())


# --- counts ----------------------------------------------------------------------------------------


def _many_targets(signed: dict[str, Any]) -> None:
    signed["targets"] = {f"t{i}": target(DIGEST_A) for i in range(MAX_TARGETS_PER_ROLE + 1)}


def _many_paths(signed: dict[str, Any]) -> None:
    signed["delegations"]["roles"][0]["paths"] = [f"p{i}" for i in range(MAX_PATHS_PER_DELEGATION + 1)]


def _many_delegations(signed: dict[str, Any]) -> None:
    first = signed["delegations"]["roles"][0]
    signed["delegations"]["roles"] = [
        dict(first, name=f"targets/d{i}") for i in range(MAX_DELEGATIONS_PER_ROLE + 1)
    ]


@pytest.mark.parametrize(
    ("edit", "what", "limit"),
    [
        (_many_targets, "targets", MAX_TARGETS_PER_ROLE),
        (_many_paths, "paths for delegation targets/releases", MAX_PATHS_PER_DELEGATION),
        (_many_delegations, "delegations", MAX_DELEGATIONS_PER_ROLE),
    ],
)
def test_counts_over_the_limit_are_refused_with_the_limit(edit: Any, what: str, limit: int) -> None:
    repo = ForgedRepo(edit={"targets": edit})
    repo.add_delegation("targets/releases", targets={"latest": DIGEST_B})
    with pytest.raises(LimitExceeded) as raised:
        load(repo.build())
    assert raised.value.role == "targets"
    assert f"trust data for targets has {limit + 1} {what}, exceeding the limit of {limit}" in str(
        raised.value
    )


def test_too_many_keys_in_root_are_refused_before_any_is_read() -> None:
    extra = ecdsa_key()

    def many_keys(signed: dict[str, Any]) -> None:
        for i in range(MAX_KEYS + 1):
            signed["keys"][f"k{i}"] = extra.to_json()  # wrong key ids too: the count is checked first

    with pytest.raises(LimitExceeded, match=f"exceeding the limit of {MAX_KEYS}"):
        load(ForgedRepo(edit={"root": many_keys}).build())


def test_many_paths_and_targets_check_in_bounded_time() -> None:
    paths = [f"p{i:05d}/" for i in range(MAX_PATHS_PER_DELEGATION)]
    tags = {f"p{i % MAX_PATHS_PER_DELEGATION:05d}/tag{i}": DIGEST_A for i in range(MAX_TARGETS_PER_ROLE)}
    repo = ForgedRepo()
    repo.add_delegation("targets/releases", paths=paths, targets=tags)
    started = time.monotonic()
    assert "targets/releases" in load(repo.build()).loaded_roles
    assert time.monotonic() - started < NOT_FROZEN * 4


def test_prefix_index_agrees_with_the_plain_rule() -> None:
    prefixes = ["a", "ab1", "b/", "b/c", "", "zz"]
    for subset in (prefixes, prefixes[1:4], ["ab1", "ab"], []):
        index = PrefixIndex(subset)
        for name in ["", "a", "ab2", "ab1x", "b", "b/", "b/cd", "c", "zz", "zzz", "z"]:
            assert index.covers(name) == any(name.startswith(p) for p in subset), (subset, name)
    assert restrict_paths(("b/",), ("b/c", "a", "b/")) == ("b/c", "b/")


# --- the deadline ----------------------------------------------------------------------------------


def test_the_verifier_stops_when_interrupted() -> None:
    files = ForgedRepo().build()
    calls = []

    def interrupt() -> None:
        calls.append(1)
        if len(calls) > 2:
            raise DeadlineExceeded("snapshot", "verification ran past the deadline")

    repo = TrustedRepository(GUN, NOW, interrupt=interrupt)
    repo.update_root(files["root"])
    with pytest.raises(DeadlineExceeded, match="ran past the deadline"):
        repo.update_timestamp(files["timestamp"])
        repo.update_snapshot(files["snapshot"])


# --- Docker's role priority ------------------------------------------------------------------------


def _no_sha256(tag: str) -> Any:
    def edit(signed: dict[str, Any]) -> None:
        signed["targets"][tag]["hashes"] = {"sha512": base64.b64encode(b"x" * 64).decode()}

    return edit


def test_releases_entry_without_sha256_refuses_instead_of_falling_back_to_targets() -> None:
    repo = ForgedRepo(targets={"latest": DIGEST_A}, edit={"targets/releases": _no_sha256("latest")})
    repo.add_delegation("targets/releases", targets={"latest": DIGEST_B})
    entry = load(repo.build()).facts("latest", None, [])["targets"]["latest"]
    assert entry["released"] is None
    assert entry["refused"] == "'latest' in targets/releases has no sha256 hash"


def test_nested_release_role_naming_the_tag_refuses() -> None:
    repo = ForgedRepo(targets={"latest": DIGEST_A})
    repo.add_delegation("targets/releases", targets={})
    repo.add_delegation("targets/releases/x", targets={"latest": DIGEST_B})
    entry = load(repo.build()).facts("latest", None, [])["targets"]["latest"]
    assert entry["released"] is None
    assert "first found in targets/releases/x" in entry["refused"]
    # a digest-only reference for the targets digest sees the same refusal
    by_digest = load(repo.build()).facts(None, "sha256:" + DIGEST_A, [])["targets"]
    assert by_digest["latest"]["released"] is None


def test_targets_decides_when_no_release_role_names_the_tag() -> None:
    repo = ForgedRepo(targets={"latest": DIGEST_A})
    repo.add_delegation("targets/releases", targets={"other": DIGEST_B})
    repo.add_delegation("targets/alice", targets={"latest": DIGEST_B})
    entry = load(repo.build()).facts("latest", None, [])["targets"]["latest"]
    assert entry["released"] == "sha256:" + DIGEST_A and entry["refused"] is None


def test_tag_only_in_another_delegation_is_refused_like_docker() -> None:
    repo = ForgedRepo(targets={})
    repo.add_delegation("targets/alice", targets={"latest": DIGEST_B})
    entry = load(repo.build()).facts("latest", None, [])["targets"]["latest"]
    assert entry["released"] is None and "first found in targets/alice" in entry["refused"]


# --- signers and thresholds ------------------------------------------------------------------------


def _cert_pem(key: ForgedKey, days_before: int, days_after: int) -> str:
    pem = certificate(
        key.private, "alice", NOW + timedelta(days=days_before), NOW + timedelta(days=days_after)
    )
    return pem.decode()


@pytest.mark.parametrize(("before", "after", "problem"), [(-30, -1, "expired"), (5, 30, "not valid before")])
def test_pinned_signer_certificate_outside_its_dates_does_not_authorise(
    before: int, after: int, problem: str
) -> None:
    alice = ecdsa_key()
    repo = ForgedRepo()
    repo.add_delegation("targets/alice", keys=[alice], targets={"latest": DIGEST_B})
    pem = _cert_pem(alice, before, after)
    [signer] = load(repo.build()).facts("latest", None, [("alice-secret", "alice", pem)])["signers"]
    assert signer["keyids"] == []
    assert problem in signer["error"]
    valid = _cert_pem(alice, -30, 30)
    [ok] = load(repo.build()).facts("latest", None, [("alice-secret", "alice", valid)])["signers"]
    assert ok["error"] is None and alice.keyid in ok["keyids"]


def test_one_private_key_listed_twice_is_one_signer() -> None:
    plain = ecdsa_key()
    as_cert = x509_key("targets", private=plain.private)
    assert plain.keyid != as_cert.keyid
    repo = ForgedRepo(thresholds={"targets": 2})
    repo.role_keys["targets"] = [plain, as_cert]
    with pytest.raises(ThresholdNotMet, match="share one public key"):
        load(repo.build())
    # two different keys do meet it
    repo.role_keys["targets"] = [plain, ecdsa_key()]
    assert load(repo.build()).loaded_roles == ["targets"]


def test_public_pem_round_trip_is_unchanged() -> None:  # the forge's keys are what the scanner reads
    key = ecdsa_key()
    der = parse_pem(key.public_pem())[1]
    assert der == key.private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
