"""Notation signatures (the Notary Project's X.509 signatures; Ostiary's `policy.notation`): one trust
policy of one image, verification level strict.

What is checked here, in Python (the facts say what each signature proves; the Rego library decides
trust anchors, digest and trusted identities, rego/ostiary/signatures.rego):

1. The requirement's CA Secret holds PEM CA certificates (`ca.crt`): the trust anchors, each known by
   the sha256 of its DER bytes.
2. The manifest the reference resolves to (digest, size, media type), read from the registry.
3. Signatures: referrers of that digest whose own artifact type (or config media type) is
   `application/vnd.cncf.notary.signature`, from the OCI 1.1 referrers API and from the fallback tag
   `sha256-<hex>` (both are read). The referrer's subject must be the digest; one layer, a JWS
   (`application/jose+json`, JSON serialization) or COSE_Sign1 (`application/cose`) envelope.
4. Per envelope: only the signing scheme `notary.x509`; every critical header understood (the
   signing scheme, the expiry); no verification plugin; the algorithm is the one Notation pairs with
   the signing key (RSA 2048/3072/4096 -> PS256/384/512, ECDSA P-256/384/521 -> ES256/384/512); the
   signature over the signed bytes with the leaf's key; the payload
   `{"targetArtifact": {digest, mediaType, size, …}}` equal to the admitted manifest (else a content
   descriptor mismatch, as `notation verify` says); the expiry, if any, not passed.
5. The certificate chain (`x5c` / COSE header 33, leaf first): each certificate signed by the next,
   the last self-signed; CA certificates with basicConstraints CA and keyCertSign; the leaf with
   digitalSignature, not a CA, and (when it has extendedKeyUsage) codeSigning and none of
   anyExtendedKeyUsage, serverAuth, emailProtection, timeStamping; every certificate valid at the
   signing time *and now*. Notation only trusts a time asserted by an RFC 3161 timestamp; Ostiary reads
   no timestamps, so like `notation verify` without one it checks validity now: an image signed by a
   certificate that has since expired is denied. One certificate of the chain must be a trust anchor.

Revocation (OCSP, CRL) is not checked: an admission cannot reach a CA's responders from an offline
cluster, and a fetch in the admission path would be a network dependency per pod. docs/signatures.md.

Every document is bounded (sizes, counts); every read is one bounded GET under the deadline
(registry.py); JSON is parsed strictly (no duplicate keys, no floats); CBOR is read from at most
MAX_ENVELOPE_BYTES bytes (cbor2 imported only when a COSE envelope is met).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from app.errors import VerificationError
from app.images import ImageRef
from app.signatures.cache import SignatureCache, no_cache
from app.signatures.cache import fingerprint as material_fingerprint
from app.signatures.facts import failure_facts, signature_entry, verified_facts
from app.signatures.material import issued_by, load_material, pem_blocks, strict_json
from app.signatures.port import NOTATION_STORE_KEYS, SignatureRequest
from app.signatures.referrers import EMPTY_TYPE, is_digest, read_referrers
from app.signatures.registry import Manifest, NoManifest, ReadError, RegistryUnavailable, SignatureReads
from app.signatures.timestamp import TimestampError, verify_token

FORMAT = "notation"
ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
JWS = "application/jose+json"
COSE = "application/cose"
PAYLOAD_TYPE = "application/vnd.cncf.notary.payload.v1+json"
SCHEME = "notary.x509"
SCHEME_SA = "notary.x509.signingAuthority"
SCHEMES = (SCHEME, SCHEME_SA)
# the trust store Secret's keys: Notation's named stores x509/ca, x509/signingAuthority, x509/tsa
STORE_KEYS = NOTATION_STORE_KEYS
STORE_OF_SCHEME = {SCHEME: "ca", SCHEME_SA: "signingAuthority"}
# Notation's validations after integrity (trust-store-trust-policy.md), in the order it runs them
VALIDATIONS = ("authenticity", "expiry", "authenticTimestamp", "revocation")

MAX_ANCHORS = 32  # CA certificates in one Secret
MAX_ANCHOR_MATERIAL = 256 * 1024
MAX_ENVELOPE_BYTES = 256 * 1024
MAX_CHAIN = 8  # certificates in an envelope
MAX_CERT_BYTES = 16 * 1024
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_SIGNATURE_BYTES = 1024
MAX_HEADER_ITEMS = 16
MAX_TIMESTAMP_BYTES = 64 * 1024  # app/signatures/timestamp.py MAX_TOKEN_BYTES

SIGNING_SCHEME = "io.cncf.notary.signingScheme"
SIGNING_TIME = "io.cncf.notary.signingTime"
EXPIRY = "io.cncf.notary.expiry"
AUTHENTIC_TIME = "io.cncf.notary.authenticSigningTime"
PLUGIN = "io.cncf.notary.verificationPlugin"
PLUGIN_VERSION = "io.cncf.notary.verificationPluginMinVersion"
SIGNING_AGENT = "io.cncf.notary.signingAgent"
TIMESTAMP = "io.cncf.notary.timestampSignature"
UNDERSTOOD_CRITICAL = frozenset({SIGNING_SCHEME, EXPIRY, AUTHENTIC_TIME})
JWS_UNPROTECTED = frozenset({"x5c", SIGNING_AGENT, TIMESTAMP})

# (hash, "rsa" | curve name) per algorithm; COSE's numbers map onto the same names
ALGORITHMS: dict[str, tuple[type[hashes.HashAlgorithm], str]] = {
    "PS256": (hashes.SHA256, "rsa"),
    "PS384": (hashes.SHA384, "rsa"),
    "PS512": (hashes.SHA512, "rsa"),
    "ES256": (hashes.SHA256, "secp256r1"),
    "ES384": (hashes.SHA384, "secp384r1"),
    "ES512": (hashes.SHA512, "secp521r1"),
}
COSE_ALGORITHMS = {-37: "PS256", -38: "PS384", -39: "PS512", -7: "ES256", -35: "ES384", -36: "ES512"}
RSA_ALGORITHM = {2048: "PS256", 3072: "PS384", 4096: "PS512"}
EC_ALGORITHM = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
FORBIDDEN_EKU = {
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
}
DN_NAMES = {
    NameOID.COUNTRY_NAME: "C",
    NameOID.STATE_OR_PROVINCE_NAME: "ST",
    NameOID.LOCALITY_NAME: "L",
    NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
    NameOID.COMMON_NAME: "CN",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER",
    NameOID.STREET_ADDRESS: "STREET",
    NameOID.POSTAL_CODE: "POSTALCODE",
    NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.USER_ID: "UID",
    NameOID.EMAIL_ADDRESS: "E",
}
DN_ALIASES = {"S": "ST", "EMAILADDRESS": "E"}
REQUIRED_DN = ("C", "ST", "O")  # Notation's rule for a trusted identity


_E = TypeVar("_E", bound=x509.ExtensionType)


# A signature's header map: a JSON object (JWS) or a CBOR map, keyed by labels or names (COSE).
Headers = Mapping[object, object]


class _Times(TypedDict):
    """The Envelope fields of the signed times (and the scheme they belong to)."""

    scheme: str
    signing_time: dt.datetime | None
    expiry: dt.datetime | None
    authentic_time: dt.datetime | None


class NotationError(VerificationError, ValueError):
    """An anchor, envelope, certificate or manifest Ostiary does not accept; the message says why."""


# ---- distinguished names (trusted identities) ---------------------------------------------------------


def parse_dn(text: str) -> dict[str, str]:
    """`C=US, ST=WA, O=Acme, CN=Signer` as {attribute: value}: commas separate attributes (`\\,` is
    a comma in a value), each attribute once, no multi-valued `+` parts. Raises NotationError."""
    if not isinstance(text, str) or not text.strip() or len(text) > 1024:
        raise NotationError("a distinguished name must be non-empty text of at most 1024 characters")
    dn: dict[str, str] = {}
    for part in _dn_parts(text):
        name, sep, value = part.partition("=")
        name, value = name.strip().upper(), value.strip()
        name = DN_ALIASES.get(name, name)
        if not sep or not name or not value:
            raise NotationError(f"{text!r}: {part.strip()!r} is not ATTRIBUTE=value")
        if name in dn:
            raise NotationError(f"{text!r} names {name} more than once")
        dn[name] = value
    return dn


def _dn_parts(text: str) -> list[str]:
    """The comma-separated parts of a distinguished name, `\\,` unescaped; `+` refused."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped or char not in "\\,+":
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append("".join(current))
            current = []
        else:
            raise NotationError(f"{text!r}: multi-valued attributes (`+`) are not supported")
    if escaped:
        raise NotationError(f"{text!r} ends in an escape")
    parts.append("".join(current))
    return parts


def trusted_identity(text: str) -> str | dict[str, str]:
    """One entry of `trustedIdentities`: "*" or `x509.subject: <DN>` as {attribute: value} (C, ST and
    O required, as Notation's trust policy requires). Raises NotationError."""
    if text == "*":
        return "*"
    prefix, sep, dn = text.partition(":")
    if not sep or prefix.strip() != "x509.subject":
        raise NotationError(f"trusted identity {text[:120]!r} is neither `*` nor `x509.subject: <DN>`")
    parsed = parse_dn(dn)
    missing = [a for a in REQUIRED_DN if a not in parsed]
    if missing:
        raise NotationError(
            f"trusted identity {text[:120]!r} lacks {', '.join(missing)} (C, ST and O are required)"
        )
    return parsed


def subject_attributes(cert: x509.Certificate) -> dict[str, str]:
    """The leaf's subject as {attribute: value}; a repeated or multi-valued attribute is refused."""
    out: dict[str, str] = {}
    for rdn in cert.subject.rdns:
        if len(rdn) != 1:
            raise NotationError("the signing certificate's subject has a multi-valued attribute")
        attr = next(iter(rdn))
        name = DN_NAMES.get(attr.oid, attr.oid.dotted_string)
        if name in out:
            raise NotationError(f"the signing certificate's subject names {name} more than once")
        out[name] = attr.value if isinstance(attr.value, str) else attr.value.hex()
    return out


# ---- trust anchors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anchor:
    fingerprint: str  # "sha256:<hex>" of the DER certificate
    der: bytes
    store: str = "ca"  # "ca" | "signingAuthority" | "tsa"


def fingerprint(cert: x509.Certificate) -> str:
    return "sha256:" + hashlib.sha256(cert.public_bytes(_DER)).hexdigest()


_DER = Encoding.DER


def read_anchors(material: bytes) -> list[Anchor]:
    """The CA certificates of PEM `material` (one or more CERTIFICATE blocks); raises NotationError."""
    if len(material) > MAX_ANCHOR_MATERIAL:
        raise NotationError(f"CA material larger than {MAX_ANCHOR_MATERIAL} bytes")
    anchors: list[Anchor] = []
    too_many = f"more than {MAX_ANCHORS} CA certificates"
    for block in pem_blocks(material, "CERTIFICATE", MAX_ANCHORS, NotationError, too_many):
        try:
            cert = x509.load_pem_x509_certificate(block)
        except ValueError as exc:
            raise NotationError(f"CA certificate {len(anchors) + 1} is not readable ({exc})") from None
        anchors.append(Anchor(fingerprint(cert), cert.public_bytes(_DER)))
    if not anchors:
        raise NotationError("no PEM CERTIFICATE block (a CA certificate) found")
    return anchors


def load_anchors(request: SignatureRequest) -> tuple[list[Anchor], list[str]]:
    """The certificates of every trust store the request carries. Its keys are ("<secret> <key>",
    material), the key one of STORE_KEYS' values (app/admission/review.py reads them per store);
    a bare "<secret>" is the ca store."""
    stores = {v: k for k, v in STORE_KEYS.items()}

    def store_of(secret: str) -> tuple[str, str]:
        where, _, key = secret.rpartition(" ")
        return (where, stores[key]) if key in stores else (secret, "ca")

    def read(secret: str, material: bytes) -> list[Anchor]:
        store = store_of(secret)[1]
        return [Anchor(a.fingerprint, a.der, store) for a in read_anchors(material)]

    def name(secret: str) -> str:
        where, store = store_of(secret)
        return f"trust store secret {where} ({STORE_KEYS[store]})"

    return load_material(request, read, NotationError, name)


# ---- envelopes -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    algorithm: str  # "PS256", ...
    signed: bytes  # the bytes the signature covers
    signature: bytes
    payload: bytes
    chain: tuple[bytes, ...]  # DER, leaf first
    signing_time: dt.datetime | None  # notary.x509: the signer's claim (not authentic)
    expiry: dt.datetime | None
    timestamp: bytes | None = None  # an RFC 3161 timestamp token over `signature` (notary.x509)
    scheme: str = SCHEME
    authentic_time: dt.datetime | None = None  # notary.x509.signingAuthority: asserted by the authority


def _b64url(value: object, what: str, limit: int) -> bytes:
    if not isinstance(value, str) or not value or len(value) > limit * 4 // 3 + 4:
        raise NotationError(f"{what} is not base64url text of at most {limit} bytes")
    try:
        return base64.urlsafe_b64decode((value + "=" * (-len(value) % 4)).encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NotationError(f"{what} is not valid base64url") from None


def _json(data: bytes, what: str) -> object:
    return strict_json(data, what, NotationError)


def _time(value: object, what: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str) and len(value) <= 64:
        try:
            moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise NotationError(f"{what} {value!r} is not an RFC 3339 time") from None
    else:
        raise NotationError(f"{what} is not a time")
    if moment.tzinfo is None:
        raise NotationError(f"{what} has no time zone")
    return moment.astimezone(dt.UTC)


def _check_critical(crit: object, headers: Headers) -> None:
    if not isinstance(crit, list) or not crit or len(crit) > MAX_HEADER_ITEMS:
        raise NotationError("the critical header list is missing or malformed")
    for name in crit:
        if not isinstance(name, str) or name not in UNDERSTOOD_CRITICAL:
            raise NotationError(f"critical header {str(name)[:80]!r} is not understood (refused)")
        if name not in headers:
            raise NotationError(f"critical header {name} is not present")
    if SIGNING_SCHEME not in crit:
        raise NotationError(f"{SIGNING_SCHEME} is not marked critical")
    if EXPIRY in headers and EXPIRY not in crit:
        raise NotationError(f"{EXPIRY} is not marked critical")
    if headers.get(SIGNING_SCHEME) == SCHEME_SA and AUTHENTIC_TIME not in crit:
        raise NotationError(f"the {SCHEME_SA} scheme requires {AUTHENTIC_TIME}, marked critical")


def _check_protected(headers: Headers) -> None:
    scheme = headers.get(SIGNING_SCHEME)
    if scheme not in SCHEMES:
        raise NotationError(
            f"signing scheme {str(scheme)[:80]!r} is neither {SCHEME} nor {SCHEME_SA} (the schemes Notation defines)"
        )
    if PLUGIN in headers or PLUGIN_VERSION in headers:
        raise NotationError("the signature requires a verification plugin; Ostiary runs none")
    if scheme == SCHEME:
        if SIGNING_TIME not in headers:
            raise NotationError(f"the signature has no {SIGNING_TIME}")
        if AUTHENTIC_TIME in headers:
            raise NotationError(f"{AUTHENTIC_TIME} belongs to the {SCHEME_SA} scheme, not {SCHEME}")


def _times(headers: Headers) -> _Times:
    """The Envelope fields of the signed times: signing time, expiry, authentic signing time."""
    return {
        "scheme": str(headers[SIGNING_SCHEME]),  # one of SCHEMES (_check_protected)
        "signing_time": _time(headers[SIGNING_TIME], "the signing time") if SIGNING_TIME in headers else None,
        "expiry": _time(headers[EXPIRY], "the expiry") if EXPIRY in headers else None,
        "authentic_time": (
            _time(headers[AUTHENTIC_TIME], "the authentic signing time")
            if AUTHENTIC_TIME in headers
            else None
        ),
    }


def _timestamp(value: object, scheme: str) -> bytes | None:
    """The unprotected header's timestamp token: bytes (COSE) or standard base64 (JWS, as Go encodes
    []byte). Only the notary.x509 scheme carries one."""
    if value is None:
        return None
    if scheme != SCHEME:
        raise NotationError(f"a timestamp countersignature belongs to the {SCHEME} scheme only")
    if isinstance(value, str):
        if not value or len(value) > MAX_TIMESTAMP_BYTES * 4 // 3 + 4:
            raise NotationError(f"the timestamp is not base64 of at most {MAX_TIMESTAMP_BYTES} bytes")
        try:
            value = base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise NotationError("the timestamp is not valid base64") from None
    if not isinstance(value, bytes) or not 0 < len(value) <= MAX_TIMESTAMP_BYTES:
        raise NotationError(f"the timestamp is not a token of at most {MAX_TIMESTAMP_BYTES} bytes")
    return value


def _chain(items: object, what: str, decode: Callable[[object], bytes]) -> tuple[bytes, ...]:
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_CHAIN:
        raise NotationError(f"{what} must hold 1 to {MAX_CHAIN} certificates")
    return tuple(decode(item) for item in items)


def _std_b64_cert(item: object) -> bytes:
    if not isinstance(item, str) or not item or len(item) > MAX_CERT_BYTES * 4 // 3 + 4:
        raise NotationError(f"an x5c certificate is not base64 text of at most {MAX_CERT_BYTES} bytes")
    try:
        return base64.b64decode(item.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise NotationError("an x5c certificate is not valid base64") from None


def parse_jws(data: bytes) -> Envelope:
    """A Notation JWS envelope (JSON serialization), strictly; raises NotationError."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise NotationError(f"the envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
    doc = _json(data, "the JWS envelope")
    if not isinstance(doc, dict) or set(doc) != {"payload", "protected", "header", "signature"}:
        raise NotationError("the JWS envelope must have exactly payload, protected, header and signature")
    protected_b64, payload_b64 = doc["protected"], doc["payload"]
    protected_raw = _b64url(protected_b64, "the protected header", MAX_PAYLOAD_BYTES)
    payload = _b64url(payload_b64, "the payload", MAX_PAYLOAD_BYTES)
    signature = _b64url(doc["signature"], "the signature", MAX_SIGNATURE_BYTES)
    protected = _json(protected_raw, "the protected header")
    if not isinstance(protected, dict) or len(protected) > MAX_HEADER_ITEMS:
        raise NotationError("the protected header is not a JSON object of at most 16 entries")
    header = doc["header"]
    if not isinstance(header, dict):
        raise NotationError("the unprotected header is not a JSON object")
    unknown = set(header) - JWS_UNPROTECTED
    if unknown:
        raise NotationError(
            f"unprotected header has unknown entries {', '.join(sorted(unknown))[:200]} (refused)"
        )
    _check_critical(protected.get("crit"), protected)
    _check_protected(protected)
    if protected.get("cty") != PAYLOAD_TYPE:
        raise NotationError(f"content type {str(protected.get('cty'))[:80]!r} is not {PAYLOAD_TYPE}")
    algorithm = protected.get("alg")
    if algorithm not in ALGORITHMS:
        raise NotationError(f"algorithm {str(algorithm)[:40]!r} is not one Notation signs with")
    return Envelope(
        algorithm=algorithm,
        signed=f"{protected_b64}.{payload_b64}".encode("ascii"),
        signature=signature,
        payload=payload,
        chain=_chain(header.get("x5c"), "x5c", _std_b64_cert),
        timestamp=_timestamp(header.get(TIMESTAMP), protected[SIGNING_SCHEME]),
        **_times(protected),
    )


def _cbor_loads(data: bytes, what: str) -> object:
    import cbor2  # only when a COSE envelope is met

    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, OverflowError, RecursionError, TypeError, MemoryError) as exc:
        raise NotationError(f"{what} is not valid CBOR: {str(exc)[:160]}") from None


def parse_cose(data: bytes) -> Envelope:
    """A Notation COSE_Sign1 envelope, strictly; raises NotationError."""
    import cbor2

    if len(data) > MAX_ENVELOPE_BYTES:
        raise NotationError(f"the envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
    top = _cbor_loads(data, "the COSE envelope")
    if not isinstance(top, cbor2.CBORTag) or top.tag != 18:
        raise NotationError("the COSE envelope is not a tagged COSE_Sign1 (tag 18)")
    value = top.value
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise NotationError("COSE_Sign1 must be an array of 4 items")
    protected_raw, unprotected, payload, signature = value
    if (
        not isinstance(protected_raw, bytes)
        or not isinstance(payload, bytes)
        or not isinstance(signature, bytes)
    ):
        raise NotationError("COSE_Sign1 protected header, payload and signature must be byte strings")
    if len(payload) > MAX_PAYLOAD_BYTES or len(signature) > MAX_SIGNATURE_BYTES:
        raise NotationError("the COSE payload or signature is too large")
    protected, unprotected = _cose_headers(protected_raw, unprotected)
    alg = protected.get(1)
    algorithm = COSE_ALGORITHMS.get(alg) if isinstance(alg, int) else None
    if algorithm is None:
        raise NotationError(f"COSE algorithm {str(alg)[:40]} is not one Notation signs with")

    def der(item: object) -> bytes:
        if not isinstance(item, bytes) or not 0 < len(item) <= MAX_CERT_BYTES:
            raise NotationError(
                f"an x5chain certificate is not a byte string of at most {MAX_CERT_BYTES} bytes"
            )
        return item

    chain = unprotected.get(33)
    if isinstance(chain, bytes):
        chain = [chain]
    signed = cbor2.dumps(["Signature1", protected_raw, b"", payload])
    return Envelope(
        algorithm=algorithm,
        signed=signed,
        signature=signature,
        payload=payload,
        chain=_chain(list(chain) if isinstance(chain, (list, tuple)) else chain, "x5chain", der),
        timestamp=_timestamp(unprotected.get(TIMESTAMP), str(protected[SIGNING_SCHEME])),
        **_times(protected),
    )


def _cose_headers(protected_raw: bytes, unprotected: object) -> tuple[Headers, Headers]:
    protected = _cbor_loads(protected_raw, "the COSE protected header")
    if not isinstance(protected, Mapping) or len(protected) > MAX_HEADER_ITEMS:
        raise NotationError("the COSE protected header is not a map of at most 16 entries")
    if not isinstance(unprotected, Mapping) or len(unprotected) > MAX_HEADER_ITEMS:
        raise NotationError("the COSE unprotected header is not a map of at most 16 entries")
    unknown = set(unprotected) - {33, SIGNING_AGENT, TIMESTAMP}
    if unknown:
        raise NotationError(
            f"unprotected header has unknown entries {sorted(map(str, unknown))!s:.200} (refused)"
        )
    crit = protected.get(2)
    _check_critical(list(crit) if isinstance(crit, (list, tuple)) else crit, protected)
    _check_protected(protected)
    if protected.get(3) != PAYLOAD_TYPE:
        raise NotationError(f"content type {str(protected.get(3))[:80]!r} is not {PAYLOAD_TYPE}")
    for name in (SIGNING_TIME, EXPIRY, AUTHENTIC_TIME):
        if name in protected and not isinstance(protected[name], dt.datetime):
            raise NotationError(f"{name} is not a CBOR date/time (tag 1)")
    return protected, unprotected


def parse_envelope(media_type: str, data: bytes) -> Envelope:
    """The envelope of a signature layer; anything malformed raises NotationError."""
    if media_type not in (JWS, COSE):
        raise NotationError(f"envelope media type {media_type[:80]!r} is neither {JWS} nor {COSE}")
    try:
        return parse_jws(data) if media_type == JWS else parse_cose(data)
    except NotationError:
        raise
    except (TypeError, ValueError, KeyError, RecursionError, OverflowError) as exc:
        # a structure the checks above did not foresee (CBOR decodes to any Python value)
        raise NotationError(f"malformed {media_type} envelope ({exc.__class__.__name__})") from None


def parse_payload(payload: bytes) -> Mapping[str, Any]:
    """The targetArtifact descriptor of a Notation payload, strictly."""
    doc = _json(payload, "the signed payload")
    if not isinstance(doc, dict) or set(doc) != {"targetArtifact"}:
        raise NotationError("the signed payload must be exactly {targetArtifact}")
    target = doc["targetArtifact"]
    allowed = {"mediaType", "digest", "size", "annotations", "urls", "artifactType", "platform"}
    if not isinstance(target, dict) or not {"mediaType", "digest", "size"} <= set(target) <= allowed:
        raise NotationError("targetArtifact is not a descriptor {mediaType, digest, size, …}")
    return target


# ---- certificates --------------------------------------------------------------------------------------


def _load_chain(chain: Sequence[bytes]) -> list[x509.Certificate]:
    certs = []
    for n, der in enumerate(chain):
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except ValueError as exc:
            raise NotationError(f"certificate {n} of the chain is not readable ({str(exc)[:120]})") from None
    return certs


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()[:200]


def check_validity(
    certs: Sequence[x509.Certificate], lower: dt.datetime, upper: dt.datetime, what: str
) -> None:
    """Every certificate of the chain valid over [lower, upper] (`what` names the time); NotationError."""
    for cert in certs:
        if not cert.not_valid_before_utc <= lower <= upper <= cert.not_valid_after_utc:
            moment = f"{lower:%Y-%m-%dT%H:%M:%SZ}" + (
                f" to {upper:%Y-%m-%dT%H:%M:%SZ}" if upper != lower else ""
            )
            raise NotationError(
                f"{what} {moment} is outside certificate {_name(cert)!r}'s validity "
                f"{cert.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} to {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}"
            )


def check_chain(certs: Sequence[x509.Certificate]) -> None:
    """Notation's code-signing chain rules (module docstring, 5) but validity; raises NotationError."""
    for n, cert in enumerate(certs):
        issuer = certs[n + 1] if n + 1 < len(certs) else cert
        if not issued_by(cert, issuer):
            raise NotationError(
                f"certificate {_name(cert)!r} is not signed by {_name(issuer)!r}"
                + (" (the chain must end in a self-signed root)" if issuer is cert else "")
            )
        if n == 0:
            _check_leaf(cert)
        else:
            _check_issuer(cert, n)


def _check_leaf(cert: x509.Certificate) -> None:
    """The signing certificate: not a CA, digitalSignature, and codeSigning (no forbidden EKU) when an
    extended key usage is given."""
    constraints = _extension(cert, x509.BasicConstraints)
    usage = _extension(cert, x509.KeyUsage)
    if constraints is not None and constraints.ca:
        raise NotationError("the signing certificate is a CA certificate")
    if usage is None or not usage.digital_signature or usage.key_cert_sign:
        raise NotationError("the signing certificate's key usage is not digitalSignature (code signing)")
    eku = _extension(cert, x509.ExtendedKeyUsage)
    if eku is None:
        return
    if ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise NotationError("the signing certificate's extended key usage lacks codeSigning")
    bad = [name for oid, name in FORBIDDEN_EKU.items() if oid in eku]
    if bad:
        raise NotationError(f"the signing certificate's extended key usage includes {', '.join(bad)}")


def _check_issuer(cert: x509.Certificate, n: int) -> None:
    """The n-th certificate of the chain (n >= 1): a CA whose path length allows n - 1 below it,
    with keyCertSign."""
    constraints = _extension(cert, x509.BasicConstraints)
    usage = _extension(cert, x509.KeyUsage)
    if constraints is None or not constraints.ca:
        raise NotationError(f"certificate {_name(cert)!r} issues the chain but is not a CA")
    if constraints.path_length is not None and constraints.path_length < n - 1:
        raise NotationError(f"certificate {_name(cert)!r}'s path length constraint is exceeded")
    if usage is None or not usage.key_cert_sign:
        raise NotationError(f"certificate {_name(cert)!r} lacks the keyCertSign key usage")


def revocation_pointers(certs: Sequence[x509.Certificate]) -> str | None:
    """Why revocation cannot be decided offline: the first certificate that names an OCSP responder or a
    CRL distribution point (Ostiary fetches neither in the admission path; docs/signatures.md). None when
    no certificate names any: Notation then treats the chain as not revoked."""
    for cert in certs:
        aia = _extension(cert, x509.AuthorityInformationAccess)
        ocsp = aia is not None and any(d.access_method == AuthorityInformationAccessOID.OCSP for d in aia)
        if ocsp or _extension(cert, x509.CRLDistributionPoints) is not None:
            return (
                f"certificate {_name(cert)!r} names an {'OCSP responder' if ocsp else 'CRL distribution point'}; "
                "Ostiary does not fetch revocation status in the admission path, so it cannot be determined"
            )
    return None


def leaf_algorithm(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size in RSA_ALGORITHM:
        return RSA_ALGORITHM[key.key_size]
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in EC_ALGORITHM:
        return EC_ALGORITHM[key.curve.name]
    raise NotationError(
        "the signing key is not RSA 2048/3072/4096 or ECDSA P-256/384/521 (the keys Notation signs with)"
    )


def verify_signature(cert: x509.Certificate, envelope: Envelope) -> None:
    expected = leaf_algorithm(cert)
    if envelope.algorithm != expected:
        raise NotationError(
            f"algorithm {envelope.algorithm} does not match the signing key (Notation uses {expected})"
        )
    hash_type, _ = ALGORITHMS[envelope.algorithm]
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            h = hash_type()
            key.verify(
                envelope.signature,
                envelope.signed,
                padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size),
                h,
            )
        elif isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(envelope.signature) != 2 * size:
                raise NotationError("the ECDSA signature has the wrong length")
            r = int.from_bytes(envelope.signature[:size], "big")
            s = int.from_bytes(envelope.signature[size:], "big")
            key.verify(encode_dss_signature(r, s), envelope.signed, ec.ECDSA(hash_type()))
    except InvalidSignature:
        raise NotationError("the signature does not verify with the signing certificate's key") from None


@dataclass(frozen=True)
class Checked:
    anchor: str | None  # fingerprint of the chain's certificate that is a trust anchor (authenticity)
    subject: dict[str, str]
    subject_dn: str
    digest: str | None  # what the payload's targetArtifact names, when it is the admitted manifest
    error: str | None  # integrity failed: the signature proves nothing
    failures: dict[str, str | None] = field(default_factory=dict)  # validation -> why it failed


def _guarded(check: Callable[[], None]) -> str | None:
    """Why `check` failed, or None: certificates are parsed lazily by `cryptography`, so a malformed
    one can fail at any access (ValueError, KeyError, DuplicateExtension, ...)."""
    try:
        check()
    except NotationError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - see the docstring: a malformed certificate proves nothing
        return f"a certificate is malformed ({exc.__class__.__name__}: {str(exc)[:160]})"
    return None


def check_envelope(
    envelope: Envelope, anchors: Sequence[Anchor], target: Manifest, now: dt.datetime
) -> Checked:
    """Notation's validations of one envelope (module docstring, 4 and 5). Never raises.

    Integrity (the signature over the envelope with the signing certificate's key, the signed
    descriptor equal to the admitted manifest) is always enforced: when it fails, `error` says why and
    nothing else is looked at. The others are reported one by one in `failures` (None when passed),
    for the level to enforce or log (rego/ostiary/signatures.rego): authenticity (the chain, and one
    of its certificates in the trust store of the signature's scheme; the trusted identities are
    compared in Rego), expiry, the authentic timestamp (the chain valid over the time a verified
    RFC 3161 timestamp proves, the authority's authentic signing time, or else now) and revocation.
    One hostile referrer never hides a valid signature: each is checked on its own."""
    leaf = _Leaf()
    try:
        certs, descriptor = _check_integrity(envelope, target, leaf)
    except NotationError as exc:
        return Checked(None, leaf.subject, leaf.dn, None, str(exc))
    except Exception as exc:  # noqa: BLE001 - a malformed certificate proves nothing
        return Checked(
            None,
            leaf.subject,
            leaf.dn,
            None,
            f"a certificate or the envelope is malformed ({exc.__class__.__name__}: {str(exc)[:160]})",
        )
    anchor, failures = _validations(envelope, certs, anchors, now)
    return Checked(anchor, leaf.subject, leaf.dn, descriptor, None, failures)


@dataclass
class _Leaf:
    """What the signing certificate says, kept as far as the integrity checks got (for the facts)."""

    subject: dict[str, str] = field(default_factory=dict)
    dn: str = ""


def _check_integrity(envelope: Envelope, target: Manifest, leaf: _Leaf) -> tuple[list[x509.Certificate], str]:
    """(the chain, the signed digest) when the signature verifies with the signing certificate's key
    and the signed descriptor is the admitted manifest; raises NotationError (or what a malformed
    certificate raises) otherwise. Fills `leaf` on the way."""
    certs = _load_chain(envelope.chain)
    leaf.subject = subject_attributes(certs[0])
    leaf.dn = certs[0].subject.rfc4514_string()[:400]
    verify_signature(certs[0], envelope)
    descriptor = parse_payload(envelope.payload)
    if (
        descriptor["digest"] != target.digest
        or descriptor["size"] != len(target.body)
        or descriptor["mediaType"] != target.media_type
    ):
        raise NotationError(
            f"content descriptor mismatch: the signature is for {str(descriptor['digest'])[:80]} "
            f"({str(descriptor['mediaType'])[:80]}, {str(descriptor['size'])[:20]} bytes), not {target.digest} "
            f"({target.media_type}, {len(target.body)} bytes)"
        )
    return certs, str(descriptor["digest"])


def _validations(
    envelope: Envelope, certs: Sequence[x509.Certificate], anchors: Sequence[Anchor], now: dt.datetime
) -> tuple[str | None, dict[str, str | None]]:
    """(the trust anchor found in the chain, {validation: why it failed, or None}) for authenticity,
    expiry, the authentic timestamp and revocation, each on its own."""
    store = STORE_OF_SCHEME[envelope.scheme]
    signers = {a.der: a.fingerprint for a in anchors if a.store == store}
    anchor: list[str] = []

    def authenticity() -> None:
        check_chain(certs)
        found = next((signers[c.public_bytes(_DER)] for c in certs if c.public_bytes(_DER) in signers), None)
        if found is None:
            raise NotationError(
                "the signature's certificate chain does not contain any trusted certificate"
                + (f" (of the {store} trust store, as its signing scheme {envelope.scheme} requires)")
            )
        anchor.append(found)

    def expiry() -> None:
        if envelope.expiry is not None and now > envelope.expiry:
            raise NotationError(f"the signature expired at {envelope.expiry:%Y-%m-%dT%H:%M:%SZ}")

    def authentic_timestamp() -> None:
        check_authentic_time(envelope, certs, [a.der for a in anchors if a.store == "tsa"], now)

    def revocation() -> None:
        why = revocation_pointers(certs)
        if why is not None:
            raise NotationError(why)

    checks = {
        "authenticity": authenticity,
        "expiry": expiry,
        "authenticTimestamp": authentic_timestamp,
        "revocation": revocation,
    }
    failures = {name: _guarded(check) for name, check in checks.items()}
    return (anchor[0] if anchor else None), failures


def check_authentic_time(
    envelope: Envelope, certs: Sequence[x509.Certificate], tsa: Sequence[bytes], now: dt.datetime
) -> None:
    """The chain valid at the time Notation trusts (trust-store-trust-policy.md, "Validate Trusted
    Timestamp"): under notary.x509, the range a timestamp verified against the TSA store proves, else
    the verification time (a timestamp is only read when the policy trusts a TSA store, as notation
    does); under notary.x509.signingAuthority, the authority's authentic signing time, which it
    requires. The signer's own signing time, a claim, is still required inside the chain's validity."""
    if envelope.scheme == SCHEME_SA:
        if envelope.authentic_time is None:
            raise NotationError(f"the {SCHEME_SA} scheme requires an authentic signing time; there is none")
        moment = envelope.authentic_time
        check_validity(certs, moment, moment, "the authentic signing time")
        return
    if envelope.signing_time is not None:
        check_validity(certs, envelope.signing_time, envelope.signing_time, "signing time")
    if envelope.timestamp is not None and tsa:
        try:
            lower, upper = verify_token(envelope.timestamp, envelope.signature, tsa)
        except TimestampError as exc:
            raise NotationError(f"RFC 3161 timestamp: {exc}") from None
        check_validity(certs, lower, upper, "the timestamp's time")
        return
    check_validity(certs, now, now, "verification time")


def time_bounds(envelope: Envelope) -> list[float]:
    """The times (epoch seconds) at which check_envelope's answer for `envelope` can change as the
    clock moves: its expiry, and when each certificate of its chain becomes valid and expires. A chain
    that does not load fails integrity, where no time is looked at."""
    moments = [envelope.expiry] if envelope.expiry is not None else []
    with contextlib.suppress(Exception):  # as _guarded: a malformed certificate proves nothing, at any time
        for cert in _load_chain(envelope.chain):
            moments += [cert.not_valid_before_utc, cert.not_valid_after_utc]
    return [m.timestamp() for m in moments]


@dataclass
class Span:
    """What one verification at `now` (epoch seconds) relied on: the times at which its answer can
    change (time_bounds of every envelope), and whether a read went unanswered (then it is not kept)."""

    now: float
    times: list[float] = field(default_factory=list)
    unanswered: bool = False

    def window(self) -> tuple[float | None, float | None]:
        """(after, before): the answer is the same at any time strictly between the two (None: unbounded)
        — the last of `times` before `now` and the first at or after it."""
        before = [t for t in self.times if t < self.now]
        after = [t for t in self.times if t >= self.now]
        return (max(before) if before else None), (min(after) if after else None)


# ---- the verifier -----------------------------------------------------------------------------------


class NotationVerifier:
    format = FORMAT

    def __init__(
        self,
        reader: SignatureReads,
        *,
        clock: Callable[[], float] = time.time,
        cache: SignatureCache | None = None,
    ):
        self.reader = reader
        self.clock = clock  # the verification time (offline runs: --at)
        self.cache = cache or no_cache()  # verified facts and tag resolutions (cache.py)

    @SignatureCache.single_flight
    def verify(self, request: SignatureRequest, deadline: float) -> dict:
        requirement = request.requirement
        if isinstance(requirement.get("error"), str):
            return failure_facts(FORMAT, requirement, requirement["error"])
        level = requirement.get("level", "strict")
        if level not in ("strict", "permissive", "audit"):
            return failure_facts(
                FORMAT, requirement, f"verification level {str(level)[:40]!r} verifies no signature here"
            )
        anchors, errors = load_anchors(request)
        signers = [a for a in anchors if a.store != "tsa"]
        if errors or not signers:
            return failure_facts(
                FORMAT,
                requirement,
                "; ".join(errors) or "the trust store secret holds no ca or signingAuthority certificate",
            )
        return self._verify(request, anchors, deadline)

    def _verify(self, request: SignatureRequest, anchors: Sequence[Anchor], deadline: float) -> dict:
        """The facts of a requirement whose trust store loaded, from the cache or read and checked now.

        Cached under every trust store certificate (by store: ca, signingAuthority, tsa) and the
        requirement (level, trusted identities, ...), and served only to a clock between the moments
        around the verification time at which a certificate of a signature's chain becomes valid or
        expires, or a signature expires (Span.window): the only moments at which check_envelope's
        answer changes (revocation is decided from the certificates alone, a timestamp from its own
        times, never now). A signature whose read went unanswered keeps the result out of the cache."""
        requirement = request.requirement
        span = Span(self.clock())  # one verification time for every signature
        material = material_fingerprint(f"{a.store} {a.fingerprint}" for a in anchors)
        try:
            seen: list[Manifest] = []
            digest, key, cached = self.cache.lookup(
                self.reader, request, deadline, FORMAT, material, now=span.now, manifests=seen
            )
            if cached is not None:
                return cached
            target = seen[0] if seen else self._target(request, deadline, digest)
            signatures = self._signatures(request, target, anchors, deadline, span)
        except ReadError as exc:
            return failure_facts(
                FORMAT, requirement, str(exc), unavailable=isinstance(exc, RegistryUnavailable)
            )
        signers = [a.fingerprint for a in anchors if a.store != "tsa"]
        facts = verified_facts(FORMAT, requirement, target.digest, signers, signatures)
        if span.unanswered:  # a signature could not be read for want of an answer: not kept
            return facts
        valid_from, valid_until = span.window()
        return self.cache.put(key, facts, valid_until=valid_until, valid_from=valid_from)

    def discover(
        self, image: ImageRef, credentials: tuple[tuple[str, str], ...], deadline: float
    ) -> tuple[str, int]:
        """Every read `verify` makes for `image`, with no anchor (for `ostiary trust capture`)."""
        request = SignatureRequest(image=image, requirement={"format": FORMAT}, credentials=credentials)
        target = self._target(request, deadline)
        return target.digest, len(self._signatures(request, target, [], deadline, Span(self.clock())))

    def _target(self, request: SignatureRequest, deadline: float, digest: str | None = None) -> Manifest:
        """The manifest the image names (at `digest`, the one its tag was resolved to, when given);
        raises NoManifest when the registry has none."""
        image = request.image
        target = self.reader.manifest(
            image, digest or image.digest or image.tag or "latest", deadline, request.credentials
        )
        if target is None:
            raise NoManifest(image)
        return target

    def _signatures(
        self,
        request: SignatureRequest,
        target: Manifest,
        anchors: Sequence[Anchor],
        deadline: float,
        span: Span,
    ) -> list[dict]:
        """The facts of each Notation signature of `target`, checked at `span.now`; what they relied
        on is noted in `span`."""
        return read_referrers(
            self.reader,
            request,
            target.digest,
            deadline,
            kinds=(ARTIFACT_TYPE, EMPTY_TYPE),
            error=NotationError,
            read_one=lambda ref, where: self._one(request, where, ref, (target, anchors), deadline, span),
        )

    def _one(
        self,
        request: SignatureRequest,
        where: str,
        ref: str,
        against: tuple[Manifest, Sequence[Anchor]],
        deadline: float,
        span: Span,
    ) -> dict | None:
        """The facts of one referrer manifest (checked against the target manifest and the trust
        store); None when it is not a Notation signature."""
        target, anchors = against
        manifest = self.reader.manifest(request.image, ref, deadline, request.credentials)
        if manifest is None:
            return signature_entry(where, error="the registry lists this referrer but has no such manifest")
        try:
            document = _json(manifest.body, "the referrer manifest")
            if not isinstance(document, dict):
                raise NotationError("the referrer manifest is not a JSON object")
            config = document.get("config")
            artifact = document.get("artifactType") or (
                config.get("mediaType") if isinstance(config, dict) else None
            )
            if artifact != ARTIFACT_TYPE:
                return None
            subject = document.get("subject")
            if not isinstance(subject, dict) or subject.get("digest") != target.digest:
                raise NotationError(f"the signature's subject is not {target.digest}")
            layers = document.get("layers")
            if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
                raise NotationError("a Notation signature manifest must have exactly one layer")
            layer = layers[0]
            blob, size, media_type = layer.get("digest"), layer.get("size"), layer.get("mediaType")
            if media_type not in (JWS, COSE) or not is_digest(blob):
                raise NotationError(f"the signature layer is neither {JWS} nor {COSE}")
            if not isinstance(size, int) or not 0 < size <= MAX_ENVELOPE_BYTES:
                raise NotationError(f"the envelope is larger than {MAX_ENVELOPE_BYTES} bytes")
            data = self.reader.blob(
                request.image, blob, deadline, request.credentials, limit=MAX_ENVELOPE_BYTES
            )
            envelope = parse_envelope(media_type, data)
            span.times += time_bounds(envelope)
            checked = check_envelope(envelope, anchors, target, dt.datetime.fromtimestamp(span.now, dt.UTC))
        except (ReadError, NotationError) as exc:
            span.unanswered = span.unanswered or isinstance(exc, RegistryUnavailable)
            return signature_entry(where, error=str(exc))
        entry = signature_entry(where, key_id=checked.anchor, digest=checked.digest, error=checked.error)
        entry["subject"] = checked.subject
        entry["subject_dn"] = checked.subject_dn
        entry["failures"] = {name: why[:400] if why else None for name, why in checked.failures.items()}
        return entry
