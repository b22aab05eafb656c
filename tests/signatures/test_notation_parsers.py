"""The Notation envelope reader and identity parser on their own: the real notation envelopes of the
fixtures parse and check; anything else (random bytes, mutated real envelopes, hostile CBOR and JSON
shapes) raises NotationError, quickly, and never another exception (hypothesis)."""

from __future__ import annotations

import base64
import json
import time

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.signatures import notation as n
from app.signatures.registry import Manifest
from tests.support.simple_signing import FIXTURES

ALPHA = "sha256:08203b7d9d37c422170036633938611837d32e343f0d60d795cf38040d6e27aa"


def _blob(digest: str) -> bytes:
    return (FIXTURES / "registry/blobs/sha256" / digest[7:]).read_bytes()


def _envelope(repo: str, tag: str = "alpha") -> tuple[str, bytes, Manifest]:
    repos = json.loads((FIXTURES / "registry/distribution.json").read_text())["repositories"]
    r = repos[repo]
    digest = r["tags"][tag]
    index = json.loads(_blob(r["tags"]["sha256-" + digest[7:]]))
    layer = json.loads(_blob(index["manifests"][0]["digest"]))["layers"][0]
    target = Manifest(digest, r["manifests"][digest]["mediaType"], _blob(digest))
    return layer["mediaType"], _blob(layer["digest"]), target


JWS_TYPE, JWS_BYTES, TARGET = _envelope("ostiary/notation-jws")
COSE_TYPE, COSE_BYTES, _ = _envelope("ostiary/notation-cose")
ANCHORS = n.read_anchors((FIXTURES / "keys/public/notation/trusted-root.crt").read_bytes())


@pytest.mark.parametrize("media_type,data", [(JWS_TYPE, JWS_BYTES), (COSE_TYPE, COSE_BYTES)])
def test_real_envelopes_verify(media_type, data):
    envelope = n.parse_envelope(media_type, data)
    checked = n.check_envelope(envelope, ANCHORS, TARGET, n.dt.datetime.now(n.dt.UTC))
    assert checked.error is None and checked.digest == ALPHA and checked.anchor == ANCHORS[0].fingerprint
    assert checked.subject["CN"] == "Ostiary Test Signer"


def _never_other(media_type: str, data: bytes) -> None:
    start = time.monotonic()
    try:
        envelope = n.parse_envelope(media_type, data)
    except n.NotationError:
        pass
    else:  # it parsed: the checks must still answer without raising anything else
        try:
            n.check_envelope(envelope, ANCHORS, TARGET, n.dt.datetime.now(n.dt.UTC))
        except n.NotationError:
            pass
    assert time.monotonic() - start < 5.0  # generous: a parse is milliseconds; a freeze is not


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096), st.sampled_from([n.JWS, n.COSE]))
def test_random_bytes_never_raise_anything_else(data, media_type):
    _never_other(media_type, data)


@settings(max_examples=300, deadline=None)
@given(st.data(), st.sampled_from([(n.JWS, JWS_BYTES), (n.COSE, COSE_BYTES)]))
def test_mutated_real_envelopes_never_raise_anything_else(data, pair):
    media_type, original = pair
    raw = bytearray(original)
    for _ in range(data.draw(st.integers(1, 8))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    _never_other(media_type, bytes(raw))


_cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_cbor_values, _cbor_values, _cbor_values, _cbor_values, st.booleans())
def test_cose_shapes_never_raise_anything_else(protected, unprotected, payload, signature, wrap):
    raw = cbor2.dumps(protected) if wrap else protected
    _never_other(n.COSE, cbor2.dumps(cbor2.CBORTag(18, [raw, unprotected, payload, signature])))


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _b64url(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


@settings(max_examples=300, deadline=None)
@given(_json_values, _json_values, _json_values)
def test_jws_shapes_never_raise_anything_else(protected, header, payload):
    doc = {"payload": _b64url(payload), "protected": _b64url(protected), "header": header, "signature": "AA"}
    _never_other(n.JWS, json.dumps(doc).encode())


@pytest.mark.parametrize(
    "data",
    [
        b"\x81" * 200_000,  # nesting
        b"\x5b" + (2**62).to_bytes(8, "big") + b"ab",  # a byte string longer than the envelope
        b"\x9b" + (2**62).to_bytes(8, "big"),  # an array of 2^62 items
        b"\xd2" * 100_000 + b"\x80",  # tags on tags
        b"\xd2\x84" + b"\x40\xa0\x40\x40",  # empty COSE_Sign1
    ],
)
def test_hostile_cbor_is_refused_quickly(data):
    start = time.monotonic()
    with pytest.raises(n.NotationError):
        n.parse_envelope(n.COSE, data)
    assert time.monotonic() - start < 5.0


def test_oversized_envelope_is_refused_before_parsing():
    with pytest.raises(n.NotationError, match="larger than"):
        n.parse_envelope(n.JWS, b" " * (n.MAX_ENVELOPE_BYTES + 1))


def test_trusted_identities():
    assert n.trusted_identity("*") == "*"
    assert n.trusted_identity("x509.subject: C=US, ST=WA, O=Acme\\, Inc., CN=Signer") == {
        "C": "US",
        "ST": "WA",
        "O": "Acme, Inc.",
        "CN": "Signer",
    }
    for bad, why in [
        ("x509.subject: C=US, O=Acme", "lacks ST"),
        ("x509.subject: C=US, ST=WA, O=A, O=B", "more than once"),
        ("x509.subject: C=US+ST=WA, O=A", "multi-valued"),
        ("subject: C=US, ST=WA, O=A", "neither"),
        ("x509.subject: C=US, ST=WA, O", "not ATTRIBUTE=value"),
    ]:
        with pytest.raises(n.NotationError, match=why):
            n.trusted_identity(bad)


@pytest.mark.parametrize(
    ("identities", "why"),
    [
        (["*", "x509.subject: C=US, ST=WA, O=A"], "must be the only entry"),
        (["x509.subject: C=US, O=A"], "lacks ST"),
        (["CN=Signer"], "neither"),
        (["x509.subject: C=US, ST=WA, O=A", "x509.subject: C=US, ST=WA, O=A, OU=B"], "overlap"),
        (["x509.subject: C=US, ST=WA, O=A", "x509.subject: O=A, ST=WA, C=US"], "overlap"),
    ],
)
def test_the_translator_refuses_what_notation_refuses(identities, why):
    from app.policies.model import PolicyError
    from app.policies.schema import parse_policy_document
    from app.policies.translate import policy_data

    doc = {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ImagePolicy",
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {
            "repositories": [
                {
                    "name": "r.example/*",
                    "policy": {"notation": {"caSecret": "ca", "trustedIdentities": identities}},
                }
            ]
        },
    }
    with pytest.raises(PolicyError, match=why):
        policy_data(parse_policy_document(doc, "test"))


def test_the_translator_spells_identities_out():
    from app.policies.schema import parse_policy_document
    from app.policies.translate import policy_data

    doc = {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ImagePolicy",
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {
            "repositories": [
                {
                    "name": "r.example/*",
                    "policy": {
                        "notation": {
                            "caSecret": "ca",
                            "trustedIdentities": ["x509.subject: C=US, ST=WA, O=A"],
                        }
                    },
                }
            ]
        },
    }
    (entry,) = policy_data(parse_policy_document(doc, "test"))["repositories"]
    notation = entry["policy"]["notation"]
    assert notation["identities"] == [{"C": "US", "ST": "WA", "O": "A"}] and notation["level"] == "strict"


def _notation_doc(notation: dict, name: str = "r.example/*") -> dict:
    return {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ImagePolicy",
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {"repositories": [{"name": name, "policy": {"notation": notation}}]},
    }


ANY = {"caSecret": "ca", "trustedIdentities": ["*"]}


@pytest.mark.parametrize(
    ("notation", "name", "why"),
    [
        ({**ANY, "signatureVerification": {"level": "lenient"}}, "r.example/*", "level"),
        (
            {**ANY, "signatureVerification": {"level": "strict", "override": {"integrity": "log"}}},
            "r.example/*",
            "override",
        ),
        (
            {**ANY, "signatureVerification": {"level": "strict", "override": {"revocation": "no"}}},
            "r.example/*",
            "revocation",
        ),
        ({**ANY, "trustStores": ["tsa"]}, "r.example/*", "name ca or signingAuthority"),
        ({**ANY, "trustStores": ["ca", "ca"]}, "r.example/*", "trustStores"),
        ({"signatureVerification": {"level": "audit"}}, "r.example/*", "notation"),
        (
            {**ANY, "signatureVerification": {"level": "skip"}},
            "r.example/*",
            "takes no caSecret, trustedIdentities",
        ),
        (
            {"signatureVerification": {"level": "skip", "override": {"expiry": "log"}}},
            "r.example/*",
            "skip cannot be overridden",
        ),
        ({"signatureVerification": {"level": "skip"}}, "*", "cannot apply to every image"),
    ],
)
def test_levels_and_stores_are_refused_as_notation_refuses_them(notation, name, why):
    from app.policies.model import PolicyError
    from app.policies.schema import parse_policy_document
    from app.policies.translate import policy_data

    with pytest.raises(PolicyError, match=why):
        policy_data(parse_policy_document(_notation_doc(notation, name), "test"))


@pytest.mark.parametrize(
    ("verification", "validations"),
    [
        (
            None,
            {
                "integrity": "enforce",
                "authenticity": "enforce",
                "authenticTimestamp": "enforce",
                "expiry": "enforce",
                "revocation": "enforce",
            },
        ),
        (
            {"level": "permissive"},
            {
                "integrity": "enforce",
                "authenticity": "enforce",
                "authenticTimestamp": "log",
                "expiry": "log",
                "revocation": "log",
            },
        ),
        (
            {"level": "audit"},
            {
                "integrity": "enforce",
                "authenticity": "log",
                "authenticTimestamp": "log",
                "expiry": "log",
                "revocation": "log",
            },
        ),
        (
            {"level": "strict", "override": {"revocation": "skip", "expiry": "log"}},
            {
                "integrity": "enforce",
                "authenticity": "enforce",
                "authenticTimestamp": "enforce",
                "expiry": "log",
                "revocation": "skip",
            },
        ),
    ],
)
def test_the_translator_spells_the_level_out_as_notations_table(verification, validations):
    from app.policies.schema import parse_policy_document
    from app.policies.translate import policy_data

    notation = {**ANY, **({"signatureVerification": verification} if verification else {})}
    (entry,) = policy_data(parse_policy_document(_notation_doc(notation), "test"))["repositories"]
    assert entry["policy"]["notation"]["validations"] == validations
    assert entry["policy"]["notation"]["stores"] == ["ca"]
    skip = _notation_doc({"signatureVerification": {"level": "skip"}})
    (entry,) = policy_data(parse_policy_document(skip, "test"))["repositories"]
    assert entry["policy"]["notation"]["level"] == "skip"
