"""The cosign readers (app/signatures/cosign.py) on hostile bytes: every input ends in a result or a
CosignError naming why, never another exception; and mutations of real signed documents never verify.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.signatures import cosign
from tests.support import cosign_signing as cs
from tests.support.simple_signing import FIXTURES

DIGEST = "sha256:" + "ab" * 32
KEY = cs.new_key("p256")
PUBLIC = cosign.read_public_keys(cs.public_pem(KEY).encode())[0]
STATEMENT = cs.statement(DIGEST)
BUNDLE = cs.bundle(KEY, STATEMENT)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_bundle_reader_on_random_bytes(data):
    with pytest.raises(cosign.CosignError):
        cosign.parse_bundle(data)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_readers_on_random_json(value):
    data = json.dumps(value).encode()
    for reader in (
        cosign.parse_bundle,
        cosign.parse_legacy_payload,
        lambda d: cosign.parse_statement(d, DIGEST),
    ):
        try:
            reader(data)
        except cosign.CosignError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(BUNDLE) - 1), st.binary(min_size=1, max_size=4))
def test_mutated_bundle_never_verifies_as_signed(at, junk):
    data = BUNDLE[:at] + junk + BUNDLE[at + 1 :]
    try:
        bundle = cosign.parse_bundle(data)
    except cosign.CosignError:
        return
    message = cosign.pae(cosign.IN_TOTO, bundle.payload)
    if any(PUBLIC.verifies(message, sig) for sig in bundle.signatures):
        # the signed bytes are intact: the mutation hit something unsigned (the hint, whitespace)
        assert bundle.payload == STATEMENT


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048))
def test_key_reader_on_random_bytes(data):
    try:
        cosign.read_public_keys(data)
    except cosign.CosignError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_key_reader_on_random_pem_bodies(body):
    pem = b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(body) + b"-----END PUBLIC KEY-----\n"
    with pytest.raises(cosign.CosignError):
        cosign.read_public_keys(pem)


def test_the_captured_keys_are_read():
    for name in ("cosign-trusted.pub", "cosign-other.pub"):
        (key,) = cosign.read_public_keys((FIXTURES / "keys/public/cosign" / name).read_bytes())
        assert key.kind == "ecdsa-p256"


@pytest.mark.parametrize("kind", ["p256", "p384", "ed25519", "rsa2048"])
def test_each_key_type_verifies_its_own_signature_only(kind):
    key = cs.new_key(kind)
    (public,) = cosign.read_public_keys(cs.public_pem(key).encode())
    signature = cs.sign(key, b"payload")
    assert public.verifies(b"payload", signature)
    assert not public.verifies(b"payload!", signature)
    assert not PUBLIC.verifies(b"payload", signature)


def test_refused_keys_say_why():
    with pytest.raises(cosign.CosignError, match="RSA of 1024 bits"):
        cosign.read_public_keys(cs.public_pem(cs.new_key("rsa1024")).encode())
    with pytest.raises(cosign.CosignError, match="no PEM"):
        cosign.read_public_keys(b"ssh-ed25519 AAAA")
    with pytest.raises(cosign.CosignError, match="more than 16"):
        cosign.read_public_keys(cs.public_pem(KEY).encode() * 17)


def test_statement_rules():
    assert cosign.parse_statement(STATEMENT, DIGEST) == DIGEST
    with pytest.raises(cosign.CosignError, match="an attestation"):
        cosign.parse_statement(cs.statement(DIGEST, "https://slsa.dev/provenance/v1"), DIGEST)
    other = "sha256:" + "cd" * 32
    assert cosign.parse_statement(cs.statement(other), DIGEST) == other


def test_the_verification_cache_answers_only_for_the_key_bytes_and_signature_it_saw():
    from app.signatures.registry import RegistryReader

    verifier = cosign.CosignVerifier(RegistryReader())
    other = cosign.read_public_keys(cs.public_pem(cs.new_key("p256")).encode())[0]
    signature = cs.sign(KEY, b"payload")
    assert verifier._signer([PUBLIC], b"payload", signature) == PUBLIC
    assert verifier._signer([PUBLIC], b"payload", signature) == PUBLIC  # from the cache
    assert verifier._signer([other], b"payload", signature) is None
    assert verifier._signer([PUBLIC], b"payload!", signature) is None
    assert verifier._signer([PUBLIC], b"payload", cs.sign(cs.new_key("p256"), b"payload")) is None
