"""Notary v1 keys: key IDs, public keys from their TUF form, and signature verification.

Key types (as Notary writes them in root.json and in delegations):

- "ecdsa", "rsa": `public` is base64 of the DER SubjectPublicKeyInfo;
- "ed25519": `public` is base64 of the raw 32-byte key (Notary's own form); the DER
  SubjectPublicKeyInfo form, which `docker trust signer add` gives for a PEM ed25519 key, is read too;
- "ecdsa-x509", "rsa-x509": `public` is base64 of a PEM certificate; the key is the certificate's.

Signature methods, each bound to key types exactly as Notary's verifiers are:

- "ecdsa" (ecdsa, ecdsa-x509): raw r||s over sha256 of the message, 2 * ceil(bits/8) bytes (64 for
  P-256). DER-encoded signatures are refused, as Notary refuses them;
- "eddsa" (ed25519): a 64-byte Ed25519 signature;
- "rsapss" (rsa, rsa-x509): RSASSA-PSS, sha256, MGF1-sha256, salt length 32 (Go's EqualsHash);
- "rsapkcs1v15" (rsa, rsa-x509): RSASSA-PKCS1-v1_5 with sha256.

RSA keys below 2048 bits never verify (Notary's minimum).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature

from app.errors import InputError
from app.notary.canonical import canonical_json

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

KEY_TYPES = ("ecdsa", "ecdsa-x509", "rsa", "rsa-x509", "ed25519")
X509_KEY_TYPES = ("ecdsa-x509", "rsa-x509")
METHODS_FOR_KEY_TYPE: dict[str, tuple[str, ...]] = {
    "ecdsa": ("ecdsa",),
    "ecdsa-x509": ("ecdsa",),
    "ed25519": ("eddsa",),
    "rsa": ("rsapss", "rsapkcs1v15"),
    "rsa-x509": ("rsapss", "rsapkcs1v15"),
}
MIN_RSA_BITS = 2048
NOT_BEFORE_LEEWAY = timedelta(days=1)
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]{1,64})-----\Z")
# The longest PEM text read: a certificate is a few KB; a key ten times larger is not a key.
MAX_PEM_CHARS = 64 << 10


class KeyFormatError(InputError):
    """A key or PEM block that cannot be read (bad base64, bad DER, wrong kind of key)."""


def key_id(keytype: str, public_b64: str) -> str:
    """Notary's key ID: sha256 hex of canonical {"keytype":T,"keyval":{"private":null,"public":B64}}."""
    document = {"keytype": keytype, "keyval": {"private": None, "public": public_b64}}
    return hashlib.sha256(canonical_json(document)).hexdigest()


def _b64decode(text: str) -> bytes:
    if not isinstance(text, str):
        raise KeyFormatError("public key is not a string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise KeyFormatError("public key is not valid base64") from exc


def parse_pem(pem: str | bytes) -> tuple[str, bytes]:
    """The first PEM block of `pem` as (type, DER), tolerant of formatting.

    Accepts surrounding text, CRLF, indentation, missing final newline and RFC 1421 headers
    (`docker trust key generate` writes "role: alice" inside its public key PEM).
    """
    if isinstance(pem, bytes):
        try:
            pem = pem.decode("ascii")
        except UnicodeDecodeError as exc:
            raise KeyFormatError("PEM is not ASCII") from exc
    if not isinstance(pem, str):
        raise KeyFormatError("PEM is not text")
    if len(pem) > MAX_PEM_CHARS:
        raise KeyFormatError(f"PEM text is {len(pem)} characters, more than the limit of {MAX_PEM_CHARS}")
    kind, lines = _first_pem_block(pem)
    body = "".join(line for line in lines if line and ":" not in line)
    try:
        der = base64.b64decode(body, validate=True)
    except binascii.Error as exc:
        raise KeyFormatError("PEM body is not valid base64") from exc
    if not der:
        raise KeyFormatError("PEM block is empty")
    return kind, der


def _first_pem_block(pem: str) -> tuple[str, list[str]]:
    """(type, stripped body lines) of the first complete PEM block: one pass over the lines.

    A line scanner rather than a regular expression: a search for BEGIN ... END \\1 restarts at every
    unterminated BEGIN line and is quadratic on hostile text (while holding the interpreter lock).
    Here a BEGIN line opens a block, a later BEGIN line replaces it, and the first END of the open
    type closes it, so each line is looked at once.
    """
    kind: str | None = None
    body: list[str] = []
    for raw_line in pem.splitlines():
        line = raw_line.strip()
        if line.startswith("-----BEGIN "):
            begin = _PEM_BEGIN.match(line)
            kind, body = (begin.group(1), []) if begin else (None, [])
        elif kind is not None and line.startswith(f"-----END {kind}-----"):
            return kind, body
        elif kind is not None:
            body.append(line)
    raise KeyFormatError("no PEM block found")


@lru_cache(maxsize=4096)
def load_certificate(public_b64: str) -> x509.Certificate:
    """The certificate of an x509 key (`public` = base64 of a PEM certificate)."""
    pem = _b64decode(public_b64)
    kind, der = parse_pem(pem)
    if kind != "CERTIFICATE":
        raise KeyFormatError(f"x509 key holds a PEM {kind!r} block, not a certificate")
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise KeyFormatError(f"certificate cannot be parsed: {exc}") from exc


def _load_spki(der: bytes) -> PublicKey:
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFormatError("public key is not a DER SubjectPublicKeyInfo") from exc
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
        raise KeyFormatError(f"unsupported public key algorithm {type(key).__name__}")
    return key


@lru_cache(maxsize=4096)
def load_public_key(keytype: str, public_b64: str) -> PublicKey:
    """The public key of a TUF key; raises KeyFormatError when it cannot be read or has the wrong kind."""
    if keytype in X509_KEY_TYPES:
        key: PublicKey = _cert_public_key(load_certificate(public_b64))
    elif keytype in ("ecdsa", "rsa"):
        key = _load_spki(_b64decode(public_b64))
    elif keytype == "ed25519":
        raw = _b64decode(public_b64)
        if len(raw) == 32:
            key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        else:
            key = _load_spki(raw)
    else:
        raise KeyFormatError(f"unknown key type {keytype!r}")
    expected = {
        "ecdsa": ec.EllipticCurvePublicKey,
        "rsa": rsa.RSAPublicKey,
        "ed25519": ed25519.Ed25519PublicKey,
    }[keytype.removesuffix("-x509")]
    if not isinstance(key, expected):
        raise KeyFormatError(f"key of type {keytype!r} holds a {type(key).__name__}")
    return key


def _cert_public_key(cert: x509.Certificate) -> PublicKey:
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFormatError("certificate public key cannot be read") from exc
    if not isinstance(key, (ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey)):
        raise KeyFormatError(f"unsupported certificate key algorithm {type(key).__name__}")
    return key


def certificate_problem(cert: x509.Certificate, now: datetime) -> str | None:
    """Why `cert` is not valid at `now` (None when it is), as Notary's ValidateCertificate sees it.

    Like Notary, one day of leeway is given on the "not before" side, so a repository created a
    moment ago on a machine whose clock runs ahead still verifies; "not after" gets none.
    """
    now = as_utc(now)
    if now + NOT_BEFORE_LEEWAY < cert.not_valid_before_utc:
        return f"certificate is not valid before {cert.not_valid_before_utc.isoformat()}"
    if now > cert.not_valid_after_utc:
        return f"certificate expired at {cert.not_valid_after_utc.isoformat()}"
    algorithm = cert.signature_hash_algorithm
    if algorithm is not None and algorithm.name in ("sha1", "md5"):
        return f"certificate is signed with {algorithm.name}"
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        return f"certificate RSA key has {key.key_size} bits, fewer than {MIN_RSA_BITS}"
    return None


def certificate_common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if len(names) != 1 or not isinstance(names[0].value, str):
        return None
    return names[0].value


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; naive datetimes are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def verify_signature(
    keytype: str,
    public_b64: str,
    method: str,
    sig: bytes,
    message: bytes,
    *,
    now: datetime | None = None,
) -> bool:
    """True when `sig` is a valid signature of `message` by the key, with a method fit for its type.

    For x509 key types with `now` given, the certificate must also be valid at `now`.
    Never raises for bad input: an unreadable key, an unknown method or type gives False.
    """
    if not isinstance(method, str) or method.lower() not in METHODS_FOR_KEY_TYPE.get(keytype, ()):
        return False
    if not isinstance(sig, (bytes, bytearray)) or not isinstance(message, (bytes, bytearray)):
        return False
    method = method.lower()
    try:
        key = load_public_key(keytype, public_b64)
        if (
            now is not None
            and keytype in X509_KEY_TYPES
            and certificate_problem(load_certificate(public_b64), now) is not None
        ):
            return False
        return _verify(key, method, bytes(sig), bytes(message))
    except (KeyFormatError, ValueError, TypeError, UnsupportedAlgorithm):
        return False


def _verify(key: PublicKey, method: str, sig: bytes, message: bytes) -> bool:
    try:
        if method == "ecdsa" and isinstance(key, ec.EllipticCurvePublicKey):
            size = (key.curve.key_size + 7) // 8
            if len(sig) != 2 * size:
                return False
            r = int.from_bytes(sig[:size], "big")
            s = int.from_bytes(sig[size:], "big")
            digest = hashlib.sha256(message).digest()
            key.verify(encode_dss_signature(r, s), digest, ec.ECDSA(Prehashed(hashes.SHA256())))
            return True
        if method == "eddsa" and isinstance(key, ed25519.Ed25519PublicKey):
            if len(sig) != 64:
                return False
            key.verify(sig, message)
            return True
        if method in ("rsapss", "rsapkcs1v15") and isinstance(key, rsa.RSAPublicKey):
            if key.key_size < MIN_RSA_BITS:
                return False
            if method == "rsapss":
                pad: padding.AsymmetricPadding = padding.PSS(
                    mgf=padding.MGF1(hashes.SHA256()), salt_length=32
                )
            else:
                pad = padding.PKCS1v15()
            key.verify(sig, message, pad, hashes.SHA256())
            return True
    except InvalidSignature:
        return False
    return False


def _spki_b64(key: PublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def _plain_key_type(key: PublicKey) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ecdsa"
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa"
    return "ed25519"


def load_pem_public_key(pem: str | bytes) -> tuple[PublicKey, x509.Certificate | None]:
    """The public key of a PEM public key or certificate (and the certificate, if it was one)."""
    kind, der = parse_pem(pem)
    if kind == "CERTIFICATE":
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError as exc:
            raise KeyFormatError(f"certificate cannot be parsed: {exc}") from exc
        return _cert_public_key(cert), cert
    if kind in ("PUBLIC KEY", "RSA PUBLIC KEY"):
        return _load_spki(der), None
    raise KeyFormatError(f"PEM block {kind!r} is not a public key or certificate")


def signer_key_ids(pem: str) -> list[str]:
    """Every key ID under which Notary would list the key of a signer's PEM public key or certificate.

    A public key: its plain type ("ecdsa", "rsa", "ed25519") with base64 DER SubjectPublicKeyInfo
    (what `docker trust signer add` and `notary delegation add` write), and for ed25519 also the
    raw 32-byte form. A certificate: the x509 type ("ecdsa-x509", "rsa-x509") with base64 of the PEM
    re-encoded as Go does (and of the PEM as given, if it differs), plus the plain ids of its key.
    Raises ValueError when `pem` is not a PEM public key or certificate.
    """
    key, cert = load_pem_public_key(pem)
    plain = _plain_key_type(key)
    ids = [key_id(plain, _spki_b64(key))]
    if isinstance(key, ed25519.Ed25519PublicKey):
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        ids.append(key_id(plain, base64.b64encode(raw).decode("ascii")))
    if cert is not None and plain in ("ecdsa", "rsa"):
        x509_type = f"{plain}-x509"
        reencoded = cert.public_bytes(serialization.Encoding.PEM)
        ids.append(key_id(x509_type, base64.b64encode(reencoded).decode("ascii")))
        given = pem.encode("ascii", "replace") if isinstance(pem, str) else bytes(pem)
        if given != reencoded:
            ids.append(key_id(x509_type, base64.b64encode(given).decode("ascii")))
    return _unique(ids)


def _unique(items: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)


def public_key_bytes(key: PublicKey) -> bytes:
    """A comparable encoding of the key material (DER SubjectPublicKeyInfo)."""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def same_public_key(keytype: str, public_b64: str, pem: str) -> bool:
    """True when the TUF key and the PEM public key or certificate hold the same public key."""
    try:
        ours = load_public_key(keytype, public_b64)
        theirs, _cert = load_pem_public_key(pem)
    except (KeyFormatError, ValueError, TypeError):
        return False
    return public_key_bytes(ours) == public_key_bytes(theirs)


def material_fingerprint(pem: str | None) -> str | None:
    """What a signer Secret's `publicKey` holds, as the facts and the decision compare it: the SHA-256
    of its text with surrounding whitespace removed, None when there is none. Any change of the
    key or certificate changes it, so facts verified with one key never prove a requirement
    naming another under the same signer name."""
    if not pem:
        return None
    return "sha256:" + hashlib.sha256(pem.strip().encode()).hexdigest()
