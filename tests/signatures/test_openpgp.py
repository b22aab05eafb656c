"""The strict OpenPGP reader (app/signatures/openpgp.py) on real gpg output, hostile variants, and fuzzing.

Real signatures: the captured lookaside fixtures (skopeo 1.9.3 + GnuPG 2.2.40, Ed25519 and RSA-3072).
Every mutation of a real signature must end in OpenPGPError (never another exception, never a
verification), and arbitrary bytes must be refused.
"""

from __future__ import annotations

import time
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.signatures import openpgp
from tests.support.simple_signing import FIXTURES

LOOKASIDE = FIXTURES / "lookaside" / "ostiary"
ALPHA = "sha256=08203b7d9d37c422170036633938611837d32e343f0d60d795cf38040d6e27aa"
BRAVO = "sha256=0fbedb68ec99841672a2ae1ec00ecbb040aa5ac67fb63a6ff548fefcd13e773d"
NOW = int(time.time())


def keys(name: str) -> list[openpgp.PublicKey]:
    return openpgp.read_public_keys((FIXTURES / "keys/public/gpg" / name).read_bytes())


ED = keys("ed25519.pub.asc")
RSA = keys("rsa3072.pub.asc")
ED_SIG = (LOOKASIDE / f"simple@{ALPHA}" / "signature-1").read_bytes()
RSA_SIG = (LOOKASIDE / f"simple@{BRAVO}" / "signature-1").read_bytes()


def test_fingerprints_are_gpgs():
    listed = (FIXTURES / "keys/public/gpg/fingerprints.txt").read_text().split()
    assert ED[0].fingerprint in listed and RSA[0].fingerprint in listed
    assert [k.algorithm for k in keys("both.pub.asc")] == ["Ed25519", "RSA-3072"]


@pytest.mark.parametrize(("sig", "good", "bad"), [(ED_SIG, ED, RSA), (RSA_SIG, RSA, ED)])
def test_real_signatures_verify_only_with_their_key(sig, good, bad):
    message = openpgp.verify_message(sig, good, NOW)
    assert message.signer.fingerprint == good[0].fingerprint
    assert b'"atomic container signature"' in message.payload
    with pytest.raises(openpgp.OpenPGPError, match="does not verify with any trusted key"):
        openpgp.verify_message(sig, bad, NOW)


def test_every_single_byte_change_is_refused_or_changes_nothing_signed():
    """OpenPGP does not sign everything: the literal packet's date and deflate padding bits are
    outside the signature. A change there may verify, but only with the same payload and signer."""
    original = openpgp.verify_message(ED_SIG, ED, NOW)
    unsigned = []
    for i in range(len(ED_SIG)):
        mutated = bytearray(ED_SIG)
        mutated[i] ^= 0x40
        try:
            message = openpgp.verify_message(bytes(mutated), ED, NOW)
        except openpgp.OpenPGPError:
            continue
        assert (message.payload, message.signer) == (original.payload, original.signer)
        unsigned.append(i)
    assert len(unsigned) <= 4, unsigned


def test_truncations_and_trailing_bytes_are_refused():
    for n in range(len(ED_SIG)):
        with pytest.raises(openpgp.OpenPGPError):
            openpgp.verify_message(ED_SIG[:n], ED, NOW)
    with pytest.raises(openpgp.OpenPGPError):
        openpgp.verify_message(ED_SIG + b"\x00", ED, NOW)


def test_a_compression_bomb_is_refused():
    bomb = b"\xa3\x02" + zlib.compress(b"\x00" * (8 << 20))
    with pytest.raises(openpgp.OpenPGPError, match="inflates to more than"):
        openpgp.verify_message(bomb, ED, NOW)


def test_key_blocks_outside_the_profile_are_refused():
    with pytest.raises(openpgp.OpenPGPError):
        openpgp.read_public_keys(
            b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n-----END PGP PRIVATE KEY BLOCK-----\n"
        )
    with pytest.raises(openpgp.OpenPGPError):
        openpgp.read_public_keys(b"not a key")


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2048))
def test_fuzz_messages_only_raise_openpgp_error(data):
    with pytest.raises(openpgp.OpenPGPError):
        openpgp.verify_message(data, ED + RSA, NOW)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(ED_SIG) - 1), st.binary(min_size=1, max_size=8))
def test_fuzz_splices_into_a_real_signature_never_change_what_is_signed(at, junk):
    mutated = ED_SIG[:at] + junk + ED_SIG[at + len(junk) :]
    original = openpgp.verify_message(ED_SIG, ED, NOW)
    try:
        message = openpgp.verify_message(mutated, ED, NOW)
    except openpgp.OpenPGPError:
        return
    assert (message.payload, message.signer) == (original.payload, original.signer)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_fuzz_key_blocks_only_raise_openpgp_error(data):
    try:
        found = openpgp.read_public_keys(data)
    except openpgp.OpenPGPError:
        return
    assert all(isinstance(k, openpgp.PublicKey) for k in found)
