"""RFC 3161 timestamps and the signingAuthority scheme, on the envelope checks themselves (no registry):
signatures made now with a test CA and a test TSA whose tokens are real CMS SignedData structures
(tests/support/notation_signing.py TSA, built with asn1crypto), read back by app/signatures/timestamp.py.
Each case states which of Notation's validations fails and why; the level decides in Rego
(test_notation_admit.py runs them through POST /admit). The timestamp reader is fuzzed: anything
but a token raises TimestampError, quickly, never another exception."""

from __future__ import annotations

import datetime as dt
import hashlib
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.signatures import notation as n
from app.signatures import timestamp as ts
from app.signatures.registry import Manifest
from tests.support import notation_signing as ns

BODY = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}'
TARGET = Manifest("sha256:" + hashlib.sha256(BODY).hexdigest(), ns.OCI_MANIFEST, BODY)
DESCRIPTOR = {"mediaType": TARGET.media_type, "digest": TARGET.digest, "size": len(BODY)}
NOW = ns.NOW
THEN = NOW - dt.timedelta(hours=12)  # the test roots are valid from NOW - 1 day

CHAIN = ns.Chain.create("rsa2048")
ROOT = (CHAIN.root, CHAIN.root_key)  # type: ignore[attr-defined]
# a signing certificate valid from NOW-20h to NOW-1h: expired now, valid at THEN
LAPSED = ns.Chain.create(
    root=ROOT, not_before=NOW - dt.timedelta(hours=20), not_after=NOW - dt.timedelta(hours=1)
)
TSA = ns.TSA.create(not_before=NOW - dt.timedelta(days=10))
OTHER_TSA = ns.TSA.create(not_before=NOW - dt.timedelta(days=10), org="Other TSA")


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def anchors(ca: x509.Certificate | None = CHAIN.root, tsa: x509.Certificate | None = TSA.root, sa=None):
    out = []
    for store, cert in (("ca", ca), ("tsa", tsa), ("signingAuthority", sa)):
        if cert is not None:
            out.append(n.Anchor(n.fingerprint(cert), _der(cert), store))
    return out


def check(envelope: bytes, media_type: str = ns.JWS, **kw) -> n.Checked:
    return n.check_envelope(
        n.parse_envelope(media_type, envelope), anchors(**kw), TARGET, dt.datetime.now(dt.UTC)
    )


def stamp(at: dt.datetime = THEN, tsa: ns.TSA = TSA, **kw):
    return lambda signature: tsa.stamp(signature, at, **kw)


# ---- positive --------------------------------------------------------------------------------------------


def test_expired_certificate_is_saved_by_a_valid_timestamp():
    envelope = ns.jws(LAPSED, DESCRIPTOR, signing_time=THEN, timestamper=stamp())
    checked = check(envelope)
    assert checked.error is None and checked.anchor == n.fingerprint(CHAIN.root)
    assert checked.failures == {
        "authenticity": None,
        "expiry": None,
        "authenticTimestamp": None,
        "revocation": None,
    }


def test_cose_timestamp_is_read_too():
    # cose() claims NOW as its signing time, so a chain valid now
    envelope = ns.cose(CHAIN, DESCRIPTOR, timestamper=stamp(NOW - dt.timedelta(minutes=1)))
    assert check(envelope, ns.COSE).failures["authenticTimestamp"] is None


def test_without_a_tsa_store_the_timestamp_is_not_read_and_now_counts():
    """As notation: a timestamp is only verified against a TSA store the policy trusts."""
    envelope = ns.jws(LAPSED, DESCRIPTOR, signing_time=THEN, timestamper=stamp())
    why = check(envelope, tsa=None).failures["authenticTimestamp"]
    assert why is not None and why.startswith("verification time")


def test_timestamp_range_includes_the_accuracy():
    token = TSA.stamp(b"sig", THEN, accuracy=5)
    lower, upper = ts.verify_token(token, b"sig", [_der(TSA.root)])
    assert (lower, upper) == (THEN - dt.timedelta(seconds=5), THEN + dt.timedelta(seconds=5))
    lower, upper = ts.verify_token(TSA.stamp(b"sig", THEN, accuracy=None), b"sig", [_der(TSA.root)])
    assert lower == upper == THEN  # no accuracy, not the baseline policy: 0


# ---- negative: each names what failed ---------------------------------------------------------------------

NEGATIVE = {
    # a timestamp over another signature (a real token, copied from another envelope)
    "another signature": (lambda sig: TSA.stamp(b"another" + sig, THEN), "message imprint mismatch"),
    # a TSA the policy does not trust
    "untrusted TSA": (stamp(tsa=OTHER_TSA), "does not reach a trusted TSA certificate"),
    # the TSTInfo carried is not the one the TSA signed
    "tampered TSTInfo": (stamp(tamper_tst=True), "messageDigest attribute does not match"),
    # the signing-certificate-v2 attribute names another certificate
    "wrong signing certificate": (stamp(cert_hash=b"\0" * 32), "signing-certificate attribute does not name"),
}


@pytest.mark.parametrize("case", sorted(NEGATIVE))
def test_a_bad_timestamp_does_not_save_an_expired_certificate(case):
    timestamper, why = NEGATIVE[case]
    checked = check(ns.jws(LAPSED, DESCRIPTOR, signing_time=THEN, timestamper=timestamper))
    assert checked.error is None  # integrity holds: the level decides (authenticTimestamp)
    failure = checked.failures["authenticTimestamp"]
    assert failure is not None and failure.startswith("RFC 3161 timestamp:") and why in failure, failure


def test_timestamp_time_outside_the_signing_certificate_is_refused():
    """A valid, trusted timestamp that proves the signature was made before the certificate existed."""
    young = ns.Chain.create(root=ROOT, not_before=NOW - dt.timedelta(hours=1))
    checked = check(
        ns.jws(young, DESCRIPTOR, signing_time=NOW, timestamper=stamp(NOW - dt.timedelta(days=3)))
    )
    failure = checked.failures["authenticTimestamp"]
    assert failure is not None and failure.startswith("the timestamp's time"), failure
    assert "outside certificate" in failure


def test_timestamp_outside_the_tsa_certificate_is_refused():
    short = ns.TSA.create(not_before=NOW - dt.timedelta(hours=1))
    with pytest.raises(ts.TimestampError, match="outside TSA certificate"):
        ts.verify_token(short.stamp(b"s", NOW - dt.timedelta(days=1)), b"s", [_der(short.root)])


def test_tsa_certificate_must_be_for_timestamping_only():
    tsa = ns.TSA.create()
    tsa.cert = ns.certificate(
        tsa.cert.subject, tsa.key, tsa.root.subject, tsa.root_key, ca=False
    )  # codeSigning
    with pytest.raises(ts.TimestampError, match="not exactly timeStamping"):
        ts.verify_token(tsa.stamp(b"s"), b"s", [_der(tsa.root)])


def test_timestamp_signed_by_another_key_is_refused():
    tsa = ns.TSA.create()
    tsa.key = ns._key("rsa2048")
    with pytest.raises(ts.TimestampError, match="does not verify with the TSA certificate's key"):
        ts.verify_token(tsa.stamp(b"s"), b"s", [_der(tsa.root)])


def test_a_timestamp_is_refused_outside_the_notary_x509_scheme():
    envelope = ns.jws(CHAIN, DESCRIPTOR, authority=NOW, timestamper=stamp())
    with pytest.raises(n.NotationError, match="belongs to the notary.x509 scheme only"):
        n.parse_envelope(ns.JWS, envelope)


# ---- signingAuthority --------------------------------------------------------------------------------------


def test_signing_authority_signature_needs_a_signing_authority_store():
    authority = ns.Chain.create("p256", org="Made Authority")
    envelope = ns.jws(authority, DESCRIPTOR, authority=NOW - dt.timedelta(minutes=1))
    good = check(envelope, ca=None, sa=authority.root)
    assert good.error is None and good.anchor == n.fingerprint(authority.root)
    assert set(good.failures.values()) == {None}
    as_ca = check(envelope, ca=authority.root)
    assert as_ca.anchor is None and "of the signingAuthority trust store" in (
        as_ca.failures["authenticity"] or ""
    )
    # and a notary.x509 signature is not trusted through a signingAuthority store
    plain = check(ns.jws(CHAIN, DESCRIPTOR), ca=None, sa=CHAIN.root)
    assert plain.anchor is None and "of the ca trust store" in (plain.failures["authenticity"] or "")


def test_signing_authority_time_must_be_inside_the_chain():
    authority = ns.Chain.create("p256", org="Made Authority")
    envelope = ns.jws(authority, DESCRIPTOR, authority=NOW - dt.timedelta(days=30))
    failure = check(envelope, ca=None, sa=authority.root).failures["authenticTimestamp"]
    assert failure is not None and failure.startswith("the authentic signing time"), failure


def test_signing_authority_without_its_authentic_time_is_refused():
    envelope = ns.jws(
        CHAIN,
        DESCRIPTOR,
        extra_protected={"io.cncf.notary.signingScheme": "notary.x509.signingAuthority"},
    )
    with pytest.raises(n.NotationError, match="requires io.cncf.notary.authenticSigningTime"):
        n.parse_envelope(ns.JWS, envelope)


# ---- revocation ---------------------------------------------------------------------------------------------


def test_a_certificate_with_revocation_pointers_cannot_be_decided_offline():
    builder = (
        x509.CertificateBuilder()
        .subject_name(CHAIN.certs[0].subject)
        .issuer_name(CHAIN.root.subject)
        .public_key(CHAIN.leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
    )
    for ext in CHAIN.certs[0].extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    builder = builder.add_extension(
        x509.CRLDistributionPoints(
            [
                x509.DistributionPoint(
                    [x509.UniformResourceIdentifier("http://crl.example/ca.crl")], None, None, None
                )
            ]
        ),
        critical=False,
    )
    leaf = builder.sign(CHAIN.root_key, hashes.SHA256())  # type: ignore[attr-defined]
    chain = ns.Chain(CHAIN.root, CHAIN.leaf_key, [leaf, CHAIN.root])
    checked = check(ns.jws(chain, DESCRIPTOR))
    assert checked.error is None and checked.failures["authenticity"] is None
    assert "CRL distribution point" in (checked.failures["revocation"] or "")
    assert check(ns.jws(CHAIN, DESCRIPTOR)).failures["revocation"] is None


# ---- the reader, fuzzed ---------------------------------------------------------------------------------------

REAL_TOKEN = TSA.stamp(b"signature", THEN)


def _never_other(data: bytes) -> None:
    start = time.monotonic()
    try:
        ts.verify_token(data, b"signature", [_der(TSA.root)])
    except ts.TimestampError:
        pass
    assert time.monotonic() - start < 5


def test_the_real_token_verifies():
    assert ts.verify_token(REAL_TOKEN, b"signature", [_der(TSA.root)])[0] < THEN


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=4096))
def test_random_bytes_never_raise_anything_else(data):
    _never_other(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(REAL_TOKEN) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_mutated_real_tokens_never_raise_anything_else(edits):
    data = bytearray(REAL_TOKEN)
    for at, value in edits:
        data[at] = value
    _never_other(bytes(data))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(REAL_TOKEN)), st.binary(max_size=64))
def test_truncated_and_extended_tokens_never_raise_anything_else(cut, tail):
    _never_other(REAL_TOKEN[:cut] + tail)


def test_deeply_nested_and_oversized_tokens_are_refused():
    nested = b"\x30\x80" * 20000  # indefinite-length SEQUENCEs, nested past any recursion limit
    _never_other(nested)
    with pytest.raises(ts.TimestampError, match="larger than"):
        ts.read_token(b"\x30" * (ts.MAX_TOKEN_BYTES + 1))
