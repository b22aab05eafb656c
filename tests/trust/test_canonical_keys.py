"""Canonical JSON (docker/go canonical/json), key IDs, PEM handling and signature methods."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from app.notary.canonical import canonical_json, load_json
from app.notary.keys import (
    key_id,
    load_certificate,
    same_public_key,
    signer_key_ids,
    verify_signature,
)
from tests.trust.forge import NOW, ecdsa_key, ed25519_key, rsa_key, x509_key

CAPTURED = Path(__file__).parents[2].parent / "shared" / "fixtures" / "notary" / "dockerhub-captured"

# --- canonical JSON ------------------------------------------------------------------------------


def test_keys_are_sorted_bytewise_without_whitespace() -> None:
    assert (
        canonical_json({"b": 1, "a": [True, False, None], "B": {}}) == b'{"B":{},"a":[true,false,null],"b":1}'
    )


def test_keys_sort_by_utf8_bytes() -> None:
    assert canonical_json({"é": 1, "z": 2, "\U0001f600": 3, "\uff21": 4}) == (
        '{"z":2,"é":1,"Ａ":4,"\U0001f600":3}'.encode()
    )


def test_strings_escape_only_backslash_and_quote() -> None:
    text = 'a"b\\c\n\t\x01<>&é\u2028'
    assert canonical_json(text) == b'"a\\"b\\\\c' + "\n\t\x01<>&é\u2028".encode() + b'"'


def test_integers_are_plain_decimal() -> None:
    assert canonical_json([0, -1, 10**20, 2**63]) == b"[0,-1,100000000000000000000,9223372036854775808]"


@pytest.mark.parametrize("value", [1.0, {"a": 0.5}, [float("nan")], {1: "x"}, {"a": {1, 2}}, "\ud800"])
def test_unencodable_values_are_refused(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        canonical_json(value)


def test_canonical_form_of_captured_signed_sections_is_what_was_signed() -> None:
    """Re-serialised captured documents are compact but not canonical; signatures prove the bytes."""
    document = json.loads((CAPTURED / "bob-image" / "targets.json").read_bytes())
    canonical = canonical_json(document["signed"])
    assert canonical.startswith(b'{"_type":"Targets","delegations":{"keys":{},"roles":[]},"expires":')
    assert canonical == json.dumps(document["signed"], sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "text", [b'{"a":1,"a":2}', b'{"a":1.0}', b'{"a":1e3}', b"[NaN]", b"[Infinity]", b"\xff", b"[1,]"]
)
def test_strict_loader_refuses_ambiguous_json(text: bytes) -> None:
    with pytest.raises(ValueError):
        load_json(text)


# --- key IDs and PEM -----------------------------------------------------------------------------


def _captured_keys() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(CAPTURED.glob("*/**/*.json")):
        signed = json.loads(path.read_bytes())["signed"]
        keys = signed.get("keys") or signed.get("delegations", {}).get("keys", {})
        found += list(keys.items())
    return found


def test_key_ids_of_every_captured_key_are_recomputed_exactly() -> None:
    keys = _captured_keys()
    assert len(keys) > 20
    for listed, key in keys:
        assert key_id(key["keytype"], key["keyval"]["public"]) == listed


def test_signer_pem_gives_the_delegation_key_id() -> None:
    charlie = json.loads((CAPTURED / "charlie-image" / "targets.json").read_bytes())["signed"]
    del1_id = charlie["delegations"]["roles"][0]["keyids"][0]
    assert signer_key_ids((CAPTURED / "signer-keys" / "del1.pub").read_text()) == [del1_id]


def test_pem_formatting_does_not_change_the_key() -> None:
    pem = (CAPTURED / "signer-keys" / "del1.pub").read_text()
    body = "".join(pem.strip().splitlines()[1:-1])
    variants = [
        pem.replace("\n", "\r\n"),
        pem.strip(),
        "  " + pem.replace("\n", "\n  "),
        f"-----BEGIN PUBLIC KEY-----\nrole: del1\n\n{body}\n-----END PUBLIC KEY-----\n",  # docker trust key generate
        f"-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----",
    ]
    expected = signer_key_ids(pem)
    charlie = json.loads((CAPTURED / "charlie-image" / "targets.json").read_bytes())["signed"]
    key = next(iter(charlie["delegations"]["keys"].values()))
    for variant in variants:
        assert signer_key_ids(variant) == expected
        assert same_public_key(key["keytype"], key["keyval"]["public"], variant)


@pytest.mark.parametrize(
    "pem",
    [
        "",
        "garbage",
        "-----BEGIN PUBLIC KEY-----\n%%%\n-----END PUBLIC KEY-----",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
    ],
)
def test_unreadable_pem_raises_value_error(pem: str) -> None:
    with pytest.raises(ValueError):
        signer_key_ids(pem)
    assert not same_public_key("ecdsa", ecdsa_key().public, pem)


def test_certificate_signer_gets_x509_and_plain_key_ids() -> None:
    alice = x509_key("alice")
    cert_pem = load_certificate(alice.public).public_bytes(serialization.Encoding.PEM).decode()
    ids = signer_key_ids(cert_pem)
    plain = key_id(
        "ecdsa",
        base64.b64encode(
            alice.private.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).decode(),
    )
    assert alice.keyid in ids and plain in ids
    assert same_public_key(
        "ecdsa",
        base64.b64encode(
            alice.private.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        ).decode(),
        cert_pem,
    )


def test_ed25519_signer_gets_spki_and_raw_key_ids() -> None:
    key = ed25519_key()
    ids = signer_key_ids(key.public_pem())
    assert key.keyid in ids and len(ids) == 2


def test_different_keys_are_not_the_same() -> None:
    assert not same_public_key("ecdsa", ecdsa_key().public, ecdsa_key().public_pem())
    key = ecdsa_key()
    assert same_public_key("ecdsa", key.public, key.public_pem())
    assert not same_public_key("rsa", key.public, key.public_pem())  # wrong key type


# --- signature methods ---------------------------------------------------------------------------

MESSAGE = b'{"_type":"Timestamp"}'


def test_ecdsa_raw_signature_verifies_and_der_is_refused() -> None:
    key = ecdsa_key()
    assert verify_signature("ecdsa", key.public, "ecdsa", key.sign(MESSAGE), MESSAGE)
    assert not verify_signature("ecdsa", key.public, "ecdsa", key.sign(MESSAGE, der=True), MESSAGE)
    assert not verify_signature("ecdsa", key.public, "ecdsa", key.sign(MESSAGE), MESSAGE + b" ")
    assert not verify_signature("ecdsa", key.public, "eddsa", key.sign(MESSAGE), MESSAGE)


def test_ecdsa_p384_uses_96_byte_signatures() -> None:
    private = ec.generate_private_key(ec.SECP384R1())
    public = base64.b64encode(
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    ).decode()
    from tests.trust.forge import ForgedKey

    sig = ForgedKey("ecdsa", private, public).sign(MESSAGE)
    assert len(sig) == 96
    assert verify_signature("ecdsa", public, "ecdsa", sig, MESSAGE)


def test_eddsa_verifies_only_for_ed25519_keys() -> None:
    key = ed25519_key()
    assert verify_signature("ed25519", key.public, "eddsa", key.sign(MESSAGE), MESSAGE)
    assert not verify_signature("ed25519", key.public, "ecdsa", key.sign(MESSAGE), MESSAGE)
    assert not verify_signature("ed25519", key.public, "eddsa", key.sign(MESSAGE)[:63], MESSAGE)


def test_rsa_methods_verify_and_are_not_interchangeable() -> None:
    key = rsa_key()
    pss, pkcs = key.sign(MESSAGE, "rsapss"), key.sign(MESSAGE, "rsapkcs1v15")
    assert verify_signature("rsa", key.public, "rsapss", pss, MESSAGE)
    assert verify_signature("rsa", key.public, "rsapkcs1v15", pkcs, MESSAGE)
    assert not verify_signature("rsa", key.public, "rsapss", pkcs, MESSAGE)
    assert not verify_signature("rsa", key.public, "rsapkcs1v15", pss, MESSAGE)
    assert not verify_signature("rsa", key.public, "ecdsa", pss, MESSAGE)


def test_rsa_pss_salt_length_must_equal_the_hash_length() -> None:
    key = rsa_key()
    assert isinstance(key.private, rsa.RSAPrivateKey)
    other_salt = key.private.sign(
        MESSAGE, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=20), hashes.SHA256()
    )
    assert not verify_signature("rsa", key.public, "rsapss", other_salt, MESSAGE)


def test_small_rsa_keys_never_verify() -> None:
    key = rsa_key(bits=1024)
    assert not verify_signature("rsa", key.public, "rsapss", key.sign(MESSAGE, "rsapss"), MESSAGE)


def test_x509_keys_verify_only_while_the_certificate_is_valid() -> None:
    key = x509_key("alice", not_before=NOW - timedelta(days=2), not_after=NOW - timedelta(days=1))
    sig = key.sign(MESSAGE)
    assert verify_signature("ecdsa-x509", key.public, "ecdsa", sig, MESSAGE)
    assert verify_signature("ecdsa-x509", key.public, "ecdsa", sig, MESSAGE, now=NOW - timedelta(hours=36))
    assert not verify_signature("ecdsa-x509", key.public, "ecdsa", sig, MESSAGE, now=NOW)


@pytest.mark.parametrize(
    ("keytype", "public"),
    [
        ("ecdsa", "%%%"),
        ("ecdsa", "AAAA"),
        ("ecdsa-x509", "AAAA"),
        ("dsa", "AAAA"),
        ("ed25519", "AAAA"),
    ],
)
def test_unreadable_keys_never_verify(keytype: str, public: str) -> None:
    assert not verify_signature(keytype, public, "ecdsa", b"\0" * 64, MESSAGE)


def test_key_type_must_match_the_key_material() -> None:
    key = rsa_key()
    assert not verify_signature("ecdsa", key.public, "ecdsa", b"\0" * 64, MESSAGE)
    assert not verify_signature("ed25519", key.public, "eddsa", b"\0" * 64, MESSAGE)
