"""RFC 3161 timestamp tokens, as Notation countersigns a signature with them
(`io.cncf.notary.timestampSignature` in the envelope's unprotected header): read strictly and within
bounds, then verified against a TSA trust store (Notation's x509/tsa named store).

A token is a CMS ContentInfo of SignedData (RFC 5652) whose encapsulated content is a TSTInfo
(RFC 3161 section 2.4.2). What `verify_token` checks, in Notation's order (trust-store-trust-policy.md,
"Validate Trusted Timestamp"):

1. The structure: SignedData v1/v3 with exactly one SignerInfo, eContentType id-ct-TSTInfo (a primitive
   octet string), TSTInfo v1; signed attributes present with contentType id-ct-TSTInfo, messageDigest
   equal to the digest of the TSTInfo bytes, and a signing-certificate(-v2) attribute whose first
   certificate hash is the TSA certificate's.
2. `TSTInfo.messageImprint` is the hash of the bytes the timestamp was asked for: the envelope's
   signature value. A timestamp of another signature proves nothing about this one.
3. The algorithms: SHA-256/384/512; RSA (PKCS #1 v1.5, 2048 bits or more) or ECDSA P-256/384/521;
   the signature over the DER signed attributes verifies with the TSA certificate's key.
4. The TSA certificate: named by the SignerInfo's sid, among the token's certificates; not a CA; an
   extended key usage of exactly timeStamping, marked critical (RFC 3161 2.3). Its chain, built from
   the token's certificates (each signed by the next, CA certificates with keyCertSign), reaches a
   certificate of the TSA trust store or one such certificate issued it.
5. `genTime` ± accuracy (RFC 3161 2.4.2; 1 s for the baseline policy without an accuracy, as Notation)
   is inside the validity of every certificate of the TSA chain.

What it returns is the range [genTime - accuracy, genTime + accuracy]; the caller then requires the
signing certificate chain to be valid over all of it.

Bounds: at most MAX_TOKEN_BYTES, MAX_TOKEN_CERTS certificates, MAX_ATTRIBUTES signed attributes. The
parser is asn1crypto (pure Python, no dependencies, lazy): every failure it can raise on hostile bytes
(ValueError, TypeError, KeyError, RecursionError, ...) ends as a TimestampError saying what was wrong;
the top level must be DER with no trailing data (`strict`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from app.errors import VerificationError
from app.signatures.material import issued_by

if TYPE_CHECKING:  # asn1crypto itself is imported when a timestamp is met (_signed_tst_info)
    from asn1crypto import cms, tsp

MAX_TOKEN_BYTES = 64 * 1024
MAX_TOKEN_CERTS = 8
MAX_ATTRIBUTES = 16
MAX_CHAIN = 8
BASELINE_POLICY = "0.4.0.2023.1.1"  # ETSI TS 102 023 baseline time-stamp policy (RFC 3628)

HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
CURVES = ("secp256r1", "secp384r1", "secp521r1")


class TimestampError(VerificationError, ValueError):
    """A timestamp token Ostiary does not accept; the message says why."""


@dataclass(frozen=True)
class Token:
    """What a token states, read but not yet verified."""

    tst_info: bytes  # the DER TSTInfo the signed attributes digest
    hash_name: str  # messageImprint hash
    imprint: bytes
    gen_time: dt.datetime
    accuracy: dt.timedelta
    digest_name: str  # SignerInfo digest algorithm
    signature_algorithm: str  # "rsassa_pkcs1v15" | "ecdsa"
    signature: bytes
    signed_attrs: bytes  # DER SET OF the signed attributes (what the signature covers)
    content_type_ok: bool
    message_digest: bytes
    cert_ids: tuple[tuple[str, bytes], ...]  # signing-certificate(-v2): (hash name, cert hash), in order
    sid_issuer_serial: tuple[bytes, int] | None  # (issuer Name DER, serial)
    sid_key_id: bytes | None
    certificates: tuple[bytes, ...]  # DER


def _hash(name: str, data: bytes) -> bytes:
    return hashlib.new(name, data).digest()


def read_token(data: bytes) -> Token:
    """The statements of a DER timestamp token; raises TimestampError for anything malformed or out of
    bounds (never anything else)."""
    if not isinstance(data, bytes) or not data:
        raise TimestampError("the timestamp token is empty")
    if len(data) > MAX_TOKEN_BYTES:
        raise TimestampError(f"the timestamp token is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        return _read(data)
    except TimestampError:
        raise
    except Exception as exc:  # noqa: BLE001 - asn1crypto parses lazily: any access can fail on hostile bytes
        raise TimestampError(
            f"the timestamp token is not a valid CMS SignedData of a TSTInfo ({exc.__class__.__name__}: "
            f"{str(exc)[:120]})"
        ) from None


def _read(data: bytes) -> Token:
    signed, tst_der, tst = _signed_tst_info(data)
    imprint = tst["message_imprint"]
    hash_name = imprint["hash_algorithm"]["algorithm"].native
    if hash_name not in HASHES:
        raise TimestampError(
            f"the timestamp's message imprint hash {str(hash_name)[:40]} is not SHA-256/384/512"
        )
    gen_time = tst["gen_time"].native
    if not isinstance(gen_time, dt.datetime) or gen_time.tzinfo is None:
        raise TimestampError("the timestamp's genTime is not a UTC time")
    accuracy = _accuracy(tst)
    si, digest_name, algo = _signer_info(signed)
    attrs = si["signed_attrs"]
    if not attrs or len(attrs) > MAX_ATTRIBUTES:
        raise TimestampError(f"the timestamp has no signed attributes or more than {MAX_ATTRIBUTES}")
    raw = attrs.dump()
    if raw[:1] != b"\xa0":
        raise TimestampError("the timestamp's signed attributes are not [0] IMPLICIT")
    content_type_ok, message_digest, cert_ids = _attributes(attrs)
    issuer_serial, key_id, certs = _signer_and_certificates(si, signed)
    return Token(
        tst_info=tst_der,
        hash_name=hash_name,
        imprint=imprint["hashed_message"].native,
        gen_time=gen_time.astimezone(dt.UTC),
        accuracy=accuracy,
        digest_name=digest_name,
        signature_algorithm=algo,
        signature=si["signature"].native,
        signed_attrs=b"\x31" + raw[1:],
        content_type_ok=content_type_ok,
        message_digest=message_digest,
        cert_ids=cert_ids,
        sid_issuer_serial=issuer_serial,
        sid_key_id=key_id,
        certificates=tuple(certs),
    )


def _signed_tst_info(data: bytes) -> tuple[cms.SignedData, bytes, tsp.TSTInfo]:
    """(the SignedData, the TSTInfo's DER, the TSTInfo) of a CMS timestamp token."""
    # only when a timestamp is met; importing tsp registers id-ct-TSTInfo (and its parser) with cms
    from asn1crypto import cms, tsp  # noqa: F401

    info = cms.ContentInfo.load(data, strict=True)
    if info["content_type"].native != "signed_data":
        raise TimestampError("the timestamp token is not a CMS SignedData")
    signed = info["content"]
    if signed["version"].native not in ("v1", "v3"):
        raise TimestampError(f"SignedData version {signed['version'].native} is not v1 or v3")
    encap = signed["encap_content_info"]
    if encap["content_type"].native != "tst_info":
        raise TimestampError("the timestamp token does not encapsulate a TSTInfo")
    content = encap["content"]
    if content is None or content.method != 0:
        raise TimestampError("the TSTInfo is not a primitive octet string")
    tst = content.parsed
    if tst["version"].native != "v1":
        raise TimestampError("TSTInfo version is not 1")
    return signed, content.contents, tst


def _signer_info(signed: cms.SignedData) -> tuple[cms.SignerInfo, str, str]:
    """(the one SignerInfo, its digest algorithm, its signature algorithm), each one Ostiary reads."""
    signer_infos = signed["signer_infos"]
    if len(signer_infos) != 1:
        raise TimestampError("a timestamp token must have exactly one SignerInfo")
    si = signer_infos[0]
    digest_name = si["digest_algorithm"]["algorithm"].native
    if digest_name not in HASHES:
        raise TimestampError(
            f"the timestamp's digest algorithm {str(digest_name)[:40]} is not SHA-256/384/512"
        )
    algo = si["signature_algorithm"].signature_algo
    if algo not in ("rsassa_pkcs1v15", "ecdsa"):
        raise TimestampError(
            f"the timestamp's signature algorithm {str(algo)[:40]} is not RSA PKCS #1 v1.5 or ECDSA"
        )
    return si, digest_name, algo


def _signer_and_certificates(
    si: cms.SignerInfo, signed: cms.SignedData
) -> tuple[tuple[bytes, int] | None, bytes | None, list[bytes]]:
    """The SignerInfo's sid (issuer and serial, or subject key identifier) and the token's certificates."""
    sid = si["sid"]
    issuer_serial, key_id = None, None
    if sid.name == "issuer_and_serial_number":
        issuer_serial = (sid.chosen["issuer"].dump(), int(sid.chosen["serial_number"].native))
    else:
        key_id = sid.chosen.native
    certs: list[bytes] = []
    for choice in signed["certificates"] or []:
        if len(certs) >= MAX_TOKEN_CERTS:
            raise TimestampError(f"the timestamp token carries more than {MAX_TOKEN_CERTS} certificates")
        if choice.name == "certificate":
            certs.append(choice.chosen.dump())
    return issuer_serial, key_id, certs


def _attributes(attrs: cms.CMSAttributes) -> tuple[bool, bytes, tuple[tuple[str, bytes], ...]]:
    """(contentType is id-ct-TSTInfo, messageDigest, signing-certificate(-v2) ids) of the signed
    attributes; each attribute once, each of these with one value."""
    content_type_ok, message_digest = False, b""
    cert_ids: tuple[tuple[str, bytes], ...] = ()
    seen: set[str] = set()
    for attr in attrs:
        kind = attr["type"].native
        if kind in seen:
            raise TimestampError(f"signed attribute {str(kind)[:40]} appears twice")
        seen.add(kind)
        values = attr["values"]
        if kind in ("content_type", "message_digest", "signing_certificate", "signing_certificate_v2"):
            if len(values) != 1:
                raise TimestampError(f"signed attribute {kind} must have exactly one value")
        if kind == "content_type":
            content_type_ok = values[0].native == "tst_info"
        elif kind == "message_digest":
            message_digest = values[0].native
        elif kind == "signing_certificate_v2":
            cert_ids = tuple(
                (c["hash_algorithm"]["algorithm"].native, c["cert_hash"].native) for c in values[0]["certs"]
            )
        elif kind == "signing_certificate" and "signing_certificate_v2" not in seen:
            cert_ids = tuple(("sha1", c["cert_hash"].native) for c in values[0]["certs"])
    return content_type_ok, message_digest, cert_ids


def _accuracy(tst: tsp.TSTInfo) -> dt.timedelta:
    acc = tst["accuracy"]
    policy = tst["policy"].dotted
    if acc.native is None:
        return dt.timedelta(seconds=1) if policy == BASELINE_POLICY else dt.timedelta(0)
    seconds = acc["seconds"].native or 0
    millis = acc["millis"].native or 0
    micros = acc["micros"].native or 0
    if not 0 <= seconds <= 86400 or not 0 <= millis <= 999 or not 0 <= micros <= 999:
        raise TimestampError("the timestamp's accuracy is out of range")
    return dt.timedelta(seconds=seconds, milliseconds=millis, microseconds=micros)


# ---- verification ---------------------------------------------------------------------------------------


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()[:200]


def _signer(token: Token, certs: Sequence[x509.Certificate]) -> x509.Certificate:
    for cert in certs:
        if token.sid_issuer_serial is not None:
            issuer, serial = token.sid_issuer_serial
            if cert.issuer.public_bytes() == issuer and cert.serial_number == serial:
                return cert
        elif token.sid_key_id is not None:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
            except x509.ExtensionNotFound:
                continue
            if ski == token.sid_key_id:
                return cert
    raise TimestampError("the timestamp token does not carry the TSA certificate its SignerInfo names")


def _check_tsa_certificate(cert: x509.Certificate) -> None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        raise TimestampError(
            f"TSA certificate {_name(cert)!r} has no extended key usage timeStamping"
        ) from None
    if list(eku.value) != [ExtendedKeyUsageOID.TIME_STAMPING] or not eku.critical:
        raise TimestampError(
            f"TSA certificate {_name(cert)!r}'s extended key usage is not exactly timeStamping, marked critical"
        )
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise TimestampError(f"TSA certificate {_name(cert)!r} is a CA certificate")
    except x509.ExtensionNotFound:
        pass
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature:
            raise TimestampError(f"TSA certificate {_name(cert)!r}'s key usage lacks digitalSignature")
    except x509.ExtensionNotFound:
        pass


def _verify_signature(cert: x509.Certificate, token: Token) -> None:
    key = cert.public_key()
    h = HASHES[token.digest_name]()
    try:
        if token.signature_algorithm == "rsassa_pkcs1v15" and isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise TimestampError("the TSA's RSA key is shorter than 2048 bits")
            key.verify(token.signature, token.signed_attrs, padding.PKCS1v15(), h)
        elif token.signature_algorithm == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            if key.curve.name not in CURVES:
                raise TimestampError("the TSA's ECDSA key is not on P-256, P-384 or P-521")
            key.verify(token.signature, token.signed_attrs, ec.ECDSA(h))
        else:
            raise TimestampError(
                "the timestamp's signature algorithm does not match the TSA certificate's key"
            )
    except InvalidSignature:
        raise TimestampError(
            "the timestamp's signature does not verify with the TSA certificate's key"
        ) from None


def _chain(signer: x509.Certificate, certs: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    chain = [signer]
    while len(chain) < MAX_CHAIN:
        last = chain[-1]
        if last.issuer == last.subject and issued_by(last, last):
            break
        issuer = next((c for c in certs if c not in chain and issued_by(last, c)), None)
        if issuer is None:
            break
        chain.append(issuer)
    return chain


def _trusted_chain(
    signer: x509.Certificate, certs: Sequence[x509.Certificate], anchors: Sequence[bytes]
) -> list[x509.Certificate]:
    """The TSA chain from the token's certificates, ending in (or issued by) a TSA trust anchor."""
    chain = _chain(signer, certs)
    for n, cert in enumerate(chain[1:], 1):
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not constraints.ca or not usage.key_cert_sign:
            raise TimestampError(f"certificate {_name(cert)!r} issues the TSA chain but is not a CA")
        if constraints.path_length is not None and constraints.path_length < n - 1:
            raise TimestampError(f"certificate {_name(cert)!r}'s path length constraint is exceeded")
    anchor_ders = set(anchors)
    if any(c.public_bytes(Encoding.DER) in anchor_ders for c in chain):
        return chain
    trusted = [x509.load_der_x509_certificate(der) for der in anchors]
    issuer = next((t for t in trusted if issued_by(chain[-1], t)), None)
    if issuer is None:
        raise TimestampError("the timestamp's certificate chain does not reach a trusted TSA certificate")
    return [*chain, issuer]


def verify_token(data: bytes, signature: bytes, anchors: Sequence[bytes]) -> tuple[dt.datetime, dt.datetime]:
    """The time range a timestamp token of `signature` proves, verified against the TSA certificates
    `anchors` (DER); raises TimestampError saying what failed."""
    token = read_token(data)
    if _hash(token.hash_name, signature) != token.imprint:
        raise TimestampError("the timestamp is not over this signature (message imprint mismatch)")
    if not token.content_type_ok:
        raise TimestampError("the timestamp's signed contentType attribute is not id-ct-TSTInfo")
    if _hash(token.digest_name, token.tst_info) != token.message_digest:
        raise TimestampError("the timestamp's messageDigest attribute does not match its TSTInfo")
    try:
        certs = [x509.load_der_x509_certificate(der) for der in token.certificates]
        signer = _signer(token, certs)
        _check_signing_certificate(token, signer)
        _check_tsa_certificate(signer)
        _verify_signature(signer, token)
        return _time_range(token, _trusted_chain(signer, certs, anchors))
    except x509.ExtensionNotFound as exc:
        raise TimestampError(f"a TSA CA certificate lacks an extension ({str(exc)[:80]})") from None
    except TimestampError:
        raise
    except Exception as exc:  # noqa: BLE001 - certificates are parsed lazily; a malformed one proves nothing
        raise TimestampError(
            f"a TSA certificate is malformed ({exc.__class__.__name__}: {str(exc)[:120]})"
        ) from None


def _check_signing_certificate(token: Token, signer: x509.Certificate) -> None:
    """The signing-certificate(-v2) attribute names the TSA certificate that signed."""
    if not token.cert_ids:
        raise TimestampError("the timestamp has no signing-certificate(-v2) attribute")
    hash_name, cert_hash = token.cert_ids[0]
    if hash_name not in ("sha1", *HASHES) or _hash(hash_name, signer.public_bytes(Encoding.DER)) != cert_hash:
        raise TimestampError(
            "the timestamp's signing-certificate attribute does not name the TSA certificate"
        )


def _time_range(token: Token, chain: Sequence[x509.Certificate]) -> tuple[dt.datetime, dt.datetime]:
    """genTime +- accuracy, inside the validity of every certificate of the TSA's chain."""
    lower, upper = token.gen_time - token.accuracy, token.gen_time + token.accuracy
    for cert in chain:
        if not cert.not_valid_before_utc <= lower <= upper <= cert.not_valid_after_utc:
            raise TimestampError(
                f"the timestamp's time {token.gen_time:%Y-%m-%dT%H:%M:%SZ} is outside TSA certificate "
                f"{_name(cert)!r}'s validity"
            )
    return lower, upper
