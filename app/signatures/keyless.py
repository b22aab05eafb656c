"""cosign keyless bundles, verified offline (Ostiary's `policy.cosign.identities`).

A keyless bundle (sigstore bundle v0.3, what `cosign sign` writes in the new bundle format) holds a
short-lived Fulcio certificate, a DSSE envelope signed with the certificate's key, and a Rekor
transparency-log entry. Everything is checked here from the bundle and a trusted root
(`trusted_root.json`: Fulcio CAs, Rekor keys, with their validity windows), never by asking Fulcio
or Rekor:

1. the Rekor entry: its signed entry timestamp (SET) verifies with a Rekor key of the trusted root
   valid at the entry's integrated time (the SET is what makes that time trustworthy), the entry's
   body (kind `dsse` 0.0.1) names this envelope's payload hash, signature and certificate, and an
   inclusion proof, when present, leads to the root hash of a checkpoint signed by the same key;
2. the certificate: issued through a Fulcio CA chain of the trusted root (each certificate directly
   issued by the next, the chain valid and the CA's `validFor` window open at the integrated time),
   the code-signing extended key usage, and the leaf valid at the integrated time;
3. the DSSE signature over the pre-authentication encoding, with the leaf's public key.

Then the facts carry what the certificate says (the OIDC issuer, the subject alternative names and
the Fulcio extensions); the Rego library decides whether an identity of the requirement accepts it.
The certificate's SCT (certificate transparency) is not verified: the Rekor SET already proves the
signature was logged; see docs/signatures.md.

Bounded: the bundle is at most cosign.MAX_BUNDLE_BYTES, certificates at most 16 KiB, at most 64
inclusion-proof hashes, strict JSON everywhere.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from app.errors import VerificationError
from app.signatures.material import b64_text, issued_by, strict_json

MAX_ROOT_BYTES = 1 << 20
MAX_CERT_BYTES = 16 * 1024
MAX_PROOF_HASHES = 64
MAX_TLOG_ENTRIES = 4
MAX_SANS = 8
MAX_VALUE_CHARS = 1024
MAX_CHAIN = 4
PUBLIC_GOOD = Path(__file__).with_name("data") / "sigstore-public-good-trusted-root.json"
IN_TOTO = "application/vnd.in-toto+json"

_FULCIO = "1.3.6.1.4.1.57264.1."
OIDC_ISSUER_V1 = _FULCIO + "1"
OIDC_ISSUER_V2 = _FULCIO + "8"
OTHERNAME_SAN = _FULCIO + "7"
# Fulcio extensions a requirement can match exactly (cosign's --certificate-github-workflow-* flags
# read the first five, stored as raw bytes; the others are DER UTF8Strings), by policy field name.
EXTENSIONS_RAW = {
    "githubWorkflowTrigger": _FULCIO + "2",
    "githubWorkflowSha": _FULCIO + "3",
    "githubWorkflowName": _FULCIO + "4",
    "githubWorkflowRepository": _FULCIO + "5",
    "githubWorkflowRef": _FULCIO + "6",
}
EXTENSIONS_DER = {
    "buildSignerURI": _FULCIO + "9",
    "buildSignerDigest": _FULCIO + "10",
    "runnerEnvironment": _FULCIO + "11",
    "sourceRepositoryURI": _FULCIO + "12",
    "sourceRepositoryDigest": _FULCIO + "13",
    "sourceRepositoryRef": _FULCIO + "14",
    "sourceRepositoryOwnerURI": _FULCIO + "16",
    "buildConfigURI": _FULCIO + "18",
    "buildTrigger": _FULCIO + "20",
}
EXTENSION_FIELDS = tuple(EXTENSIONS_RAW) + tuple(EXTENSIONS_DER)


VerifyingKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey


class KeylessError(VerificationError, ValueError):
    """A bundle, certificate, log entry or trusted root Ostiary does not accept; the message says why."""


def _b64(value: object, what: str, limit: int) -> bytes:
    return b64_text(value, what, limit, KeylessError)


def _time(value: object, what: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise KeylessError(f"{what} is not an RFC 3339 time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise KeylessError(f"{what} {value!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise KeylessError(f"{what} {value!r} has no time zone")
    return parsed


def _int(value: object, what: str) -> int:
    # protobuf JSON writes int64 as strings
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isdigit() and len(value) <= 19:
        number = int(value)
    else:
        raise KeylessError(f"{what} is not a non-negative integer")
    if number < 0:
        raise KeylessError(f"{what} is negative")
    return number


# ---- the trusted root ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime | None

    def holds(self, when: datetime) -> bool:
        return self.start <= when and (self.end is None or when <= self.end)


@dataclass(frozen=True)
class CertificateAuthority:
    chain: tuple[x509.Certificate, ...]  # the issuing CA first, the root last
    window: Window


@dataclass(frozen=True)
class LogKey:
    key_id: bytes  # sha256 of the DER public key (Rekor's log id)
    key: VerifyingKey
    window: Window


@dataclass(frozen=True)
class TrustedRoot:
    name: str  # where it came from, for reasons
    digest: str  # sha256 of the file's bytes, in the facts
    authorities: tuple[CertificateAuthority, ...]
    tlogs: tuple[LogKey, ...]


def _window(value: object, what: str) -> Window:
    if not isinstance(value, dict) or "start" not in value:
        raise KeylessError(f"{what} has no validFor.start")
    end = value.get("end")
    return Window(
        _time(value["start"], f"{what} validFor.start"), _time(end, f"{what} validFor.end") if end else None
    )


def _public_key(der: bytes, what: str) -> VerifyingKey:
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeylessError(f"{what} is not a DER public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise KeylessError(f"{what} is a {type(key).__name__}, not ECDSA, Ed25519 or RSA")
    return key


def read_trusted_root(data: bytes, name: str) -> TrustedRoot:
    """A sigstore TrustedRoot (`trusted_root.json`, media type ...trustedroot+json;version=0.1),
    strictly enough: every Fulcio CA chain and Rekor key must parse, or the root is refused whole."""
    if len(data) > MAX_ROOT_BYTES:
        raise KeylessError(f"trusted root {name} is larger than {MAX_ROOT_BYTES} bytes")
    document = strict_json(data, f"trusted root {name}", KeylessError)
    if not isinstance(document, dict) or not str(document.get("mediaType", "")).startswith(
        "application/vnd.dev.sigstore.trustedroot"
    ):
        raise KeylessError(f"{name} is not a sigstore trusted root (mediaType ...trustedroot+json)")
    authorities = [
        _authority(ca, f"trusted root {name} certificateAuthorities[{n}]")
        for n, ca in enumerate(document.get("certificateAuthorities") or [])
    ]
    tlogs = [
        _log_key(log, f"trusted root {name} tlogs[{n}]") for n, log in enumerate(document.get("tlogs") or [])
    ]
    if not authorities or not tlogs:
        raise KeylessError(f"trusted root {name} names no Fulcio CA or no Rekor log")
    return TrustedRoot(name, "sha256:" + hashlib.sha256(data).hexdigest(), tuple(authorities), tuple(tlogs))


def _authority(ca: object, what: str) -> CertificateAuthority:
    """One Fulcio CA of a trusted root: its chain (1 to MAX_CHAIN certificates) and validity window."""
    chain_field = ca.get("certChain") if isinstance(ca, dict) else None
    certs = chain_field.get("certificates") if isinstance(chain_field, dict) else None
    if not isinstance(ca, dict) or not isinstance(certs, list) or not 1 <= len(certs) <= MAX_CHAIN:
        raise KeylessError(f"{what} has no certChain of 1 to {MAX_CHAIN} certificates")
    chain = []
    for cert in certs:
        raw = _b64(cert.get("rawBytes") if isinstance(cert, dict) else None, what, MAX_CERT_BYTES * 2)
        try:
            chain.append(x509.load_der_x509_certificate(raw))
        except ValueError as exc:
            raise KeylessError(f"{what}: a certificate does not parse ({exc})") from None
    return CertificateAuthority(tuple(chain), _window(ca.get("validFor"), what))


def _log_key(log: object, what: str) -> LogKey:
    """One Rekor key of a trusted root, with its log id and validity window."""
    key = log.get("publicKey") if isinstance(log, dict) else None
    if not isinstance(key, dict):
        raise KeylessError(f"{what} has no publicKey")
    der = _b64(key.get("rawBytes"), what, 4096)
    return LogKey(hashlib.sha256(der).digest(), _public_key(der, what), _window(key.get("validFor"), what))


def load_trusted_root(path: str | Path | None = None) -> TrustedRoot:
    """The operator's trusted root file, or the Sigstore public-good root Ostiary ships."""
    chosen = Path(path) if path is not None else PUBLIC_GOOD
    try:
        data = chosen.read_bytes()
    except OSError as exc:
        raise KeylessError(f"cannot read the trusted root {chosen}: {exc.strerror}") from None
    return read_trusted_root(data, "public-good" if path is None else str(chosen))


# ---- signatures ------------------------------------------------------------------------------------


def _verifies(key: object, message: bytes, signature: bytes) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            digest = hashes.SHA384() if key.curve.key_size == 384 else hashes.SHA256()
            key.verify(signature, message, ec.ECDSA(digest))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, message)
        elif isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            return False
    except (InvalidSignature, ValueError):
        return False
    return True


def _valid_at(cert: x509.Certificate, when: datetime) -> bool:
    return cert.not_valid_before_utc <= when <= cert.not_valid_after_utc


# ---- Rekor -----------------------------------------------------------------------------------------


def _leaf_hash(body: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + body).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.3.2: the root hash an inclusion proof leads to; raises KeylessError."""
    if index >= size:
        raise KeylessError("the inclusion proof's index is not inside its tree")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise KeylessError("the inclusion proof has more hashes than its tree has levels")
        if fn % 2 == 1 or fn == sn:
            r = _node(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise KeylessError("the inclusion proof has fewer hashes than its tree has levels")
    return r


def _checkpoint(envelope: object, log: LogKey) -> tuple[int, bytes]:
    """(tree size, root hash) of a checkpoint (a signed note) signed by `log`'s key."""
    if not isinstance(envelope, str) or len(envelope) > 4096:
        raise KeylessError("the checkpoint is not a signed note")
    text, sep, signatures = envelope.partition("\n\n")
    if not sep:
        raise KeylessError("the checkpoint has no signature lines")
    lines = text.split("\n")
    if len(lines) < 3:
        raise KeylessError("the checkpoint lacks origin, size or root hash")
    note = (text + "\n").encode()
    for line in signatures.split("\n"):
        if not line.startswith("\u2014 "):
            continue
        _, _, sig = line[2:].rpartition(" ")
        try:
            raw = base64.b64decode(sig, validate=True)
        except binascii.Error:
            continue
        if len(raw) > 4 and _verifies(log.key, note, raw[4:]):
            return _int(lines[1], "the checkpoint's tree size"), _b64(
                lines[2], "the checkpoint's root hash", 64
            )
    raise KeylessError("the checkpoint is not signed by the Rekor key that signed the entry")


def _canonical(value: Mapping[str, object]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class LogEntry:
    integrated_time: datetime
    body: dict
    log_index: int


def verify_tlog_entry(entry: object, root: TrustedRoot) -> LogEntry:
    """One Rekor entry of a bundle: SET and (when present) inclusion proof + checkpoint."""
    if not isinstance(entry, dict):
        raise KeylessError("a tlog entry is not an object")
    body_text = entry.get("canonicalizedBody")
    body_bytes = _b64(body_text, "the tlog entry body", 64 * 1024)
    log_index = _int(entry.get("logIndex"), "the tlog entry's logIndex")
    integrated = _int(entry.get("integratedTime"), "the tlog entry's integratedTime")
    when = datetime.fromtimestamp(integrated, UTC)
    log_id_field = entry.get("logId")
    log_id = _b64(
        log_id_field.get("keyId") if isinstance(log_id_field, dict) else None, "the tlog entry's logId", 64
    )
    log = _log_at(root, log_id, when)
    promise = entry.get("inclusionPromise")
    if not isinstance(promise, dict):
        raise KeylessError(
            "the tlog entry has no signed entry timestamp (inclusionPromise); Ostiary needs one"
        )
    set_signature = _b64(promise.get("signedEntryTimestamp"), "the signed entry timestamp", 1024)
    signed = _canonical(
        {"body": body_text, "integratedTime": integrated, "logID": log_id.hex(), "logIndex": log_index}
    )
    if not _verifies(log.key, signed, set_signature):
        raise KeylessError(
            "the signed entry timestamp does not verify with the Rekor key of the trusted root"
        )
    proof = entry.get("inclusionProof")
    if proof is not None:
        _check_inclusion(proof, body_bytes, log)
    body = strict_json(body_bytes, "the tlog entry body", KeylessError)
    if not isinstance(body, dict):
        raise KeylessError("the tlog entry body is not an object")
    return LogEntry(when, body, log_index)


def _log_at(root: TrustedRoot, log_id: bytes, when: datetime) -> LogKey:
    """The Rekor key of the trusted root with this log id, valid at `when`."""
    logs = [log for log in root.tlogs if log.key_id == log_id]
    if not logs:
        raise KeylessError(
            f"the entry's Rekor log {log_id.hex()[:16]}… is not in the trusted root {root.name}"
        )
    if not logs[0].window.holds(when):
        raise KeylessError(
            f"the Rekor key of the trusted root was not valid at the integrated time {when:%Y-%m-%dT%H:%M:%SZ}"
        )
    return logs[0]


def _check_inclusion(proof: object, body_bytes: bytes, log: LogKey) -> None:
    """The inclusion proof leads from the entry to its root hash, and a checkpoint signed by `log`'s key
    names that tree."""
    if not isinstance(proof, dict):
        raise KeylessError("the inclusion proof is not an object")
    hashes_ = proof.get("hashes") or []
    if not isinstance(hashes_, list) or len(hashes_) > MAX_PROOF_HASHES:
        raise KeylessError(f"the inclusion proof must hold at most {MAX_PROOF_HASHES} hashes")
    size = _int(proof.get("treeSize"), "the inclusion proof's treeSize")
    index = _int(proof.get("logIndex"), "the inclusion proof's logIndex")
    root_hash = _b64(proof.get("rootHash"), "the inclusion proof's rootHash", 64)
    path = [_b64(h, "an inclusion proof hash", 64) for h in hashes_]
    if root_from_inclusion(index, size, _leaf_hash(body_bytes), path) != root_hash:
        raise KeylessError("the inclusion proof does not lead to its root hash (the log entry was altered)")
    checkpoint = proof.get("checkpoint")
    note = checkpoint.get("envelope") if isinstance(checkpoint, dict) else None
    if note is None:
        raise KeylessError("the inclusion proof has no checkpoint")
    if _checkpoint(note, log) != (size, root_hash):
        raise KeylessError("the checkpoint names another tree than the inclusion proof")


def _check_body(body: Mapping[str, Any], payload: bytes, signature_b64: str, leaf_der: bytes) -> None:
    """The logged entry is this envelope by this certificate (Rekor `dsse` 0.0.1)."""
    if body.get("kind") != "dsse" or body.get("apiVersion") != "0.0.1":
        raise KeylessError(
            f"the Rekor entry is of kind {str(body.get('kind'))[:40]!r} {str(body.get('apiVersion'))[:20]!r}; "
            "Ostiary reads `dsse` 0.0.1 entries"
        )
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise KeylessError("the Rekor entry has no spec")
    payload_hash = spec.get("payloadHash")
    if not isinstance(payload_hash, dict) or payload_hash != {
        "algorithm": "sha256",
        "value": hashlib.sha256(payload).hexdigest(),
    }:
        raise KeylessError("the Rekor entry logs another payload than the bundle's")
    signatures = spec.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise KeylessError("the Rekor entry names no signature")
    for item in signatures[:8]:
        if not isinstance(item, dict) or item.get("signature") != signature_b64:
            continue
        pem = _b64(item.get("verifier"), "the Rekor entry's verifier", MAX_CERT_BYTES * 3)
        try:
            logged = x509.load_pem_x509_certificate(pem)
        except ValueError:
            continue
        if logged.public_bytes(serialization.Encoding.DER) == leaf_der:
            return
    raise KeylessError("the Rekor entry logs another signature or certificate than the bundle's")


# ---- the certificate -------------------------------------------------------------------------------


def _text(value: bytes | str) -> str | None:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return value if len(value) <= MAX_VALUE_CHARS else None


def _der_utf8(value: bytes) -> str | None:
    """A DER UTF8String (tag 12, short or one/two-byte long length)."""
    if len(value) < 2 or value[0] != 0x0C:
        return None
    length, at = value[1], 2
    if length & 0x80:
        count = length & 0x7F
        if count not in (1, 2) or len(value) < 2 + count:
            return None
        length, at = int.from_bytes(value[2 : 2 + count], "big"), 2 + count
    if at + length != len(value):
        return None
    return _text(value[at:])


def certificate_facts(cert: x509.Certificate) -> dict[str, Any]:
    """What the Rego library matches: issuer, subjects (every SAN) and the Fulcio extensions."""
    extensions: dict[str, str] = {}
    issuer_v1 = issuer_v2 = None
    for ext in cert.extensions:
        oid = ext.oid.dotted_string
        if not oid.startswith(_FULCIO) or not isinstance(ext.value, x509.UnrecognizedExtension):
            continue
        raw = ext.value.value
        if oid == OIDC_ISSUER_V1:
            issuer_v1 = _text(raw)
        elif oid == OIDC_ISSUER_V2:
            issuer_v2 = _der_utf8(raw)
        extensions.update(_extension_values(oid, raw))
    return {"issuer": issuer_v2 or issuer_v1, "subjects": _subjects(cert), "extensions": extensions}


def _extension_values(oid: str, raw: bytes) -> dict[str, str]:
    """The policy fields (EXTENSIONS_RAW, EXTENSIONS_DER) a Fulcio extension gives a readable value."""
    found = {}
    for name, known in EXTENSIONS_RAW.items():
        if oid == known and (value := _text(raw)) is not None:
            found[name] = value
    for name, known in EXTENSIONS_DER.items():
        if oid == known and (value := _der_utf8(raw)) is not None:
            found[name] = value
    return found


def _subjects(cert: x509.Certificate) -> list[str]:
    """The certificate's e-mail, URI and Fulcio other-name SANs, in order (at most MAX_SANS)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    subjects: list[str] = []
    for general in san:
        value = _san_text(general)
        if value is not None and len(subjects) < MAX_SANS:
            subjects.append(value)
    return subjects


def _san_text(general: x509.GeneralName) -> str | None:
    if isinstance(general, x509.RFC822Name | x509.UniformResourceIdentifier):
        return _text(general.value)
    if isinstance(general, x509.OtherName) and general.type_id.dotted_string == OTHERNAME_SAN:
        return _der_utf8(general.value)
    return None


def verify_chain(leaf: x509.Certificate, root: TrustedRoot, when: datetime) -> None:
    """The leaf was issued through a Fulcio CA of the trusted root, all valid at `when`."""
    if not _valid_at(leaf, when):
        raise KeylessError(
            f"the certificate was not valid at the integrated time {when:%Y-%m-%dT%H:%M:%SZ} "
            f"(valid {leaf.not_valid_before_utc:%Y-%m-%dT%H:%M:%SZ} to {leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ})"
        )
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is None or ExtendedKeyUsageOID.CODE_SIGNING not in usage:
        raise KeylessError("the certificate is not for code signing (extended key usage)")
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.ca:
            raise KeylessError("the signing certificate is a CA certificate")
    except x509.ExtensionNotFound:
        pass
    for ca in root.authorities:
        if not ca.window.holds(when) or not issued_by(leaf, ca.chain[0]):
            continue
        ok = all(_valid_at(c, when) for c in ca.chain) and all(
            issued_by(ca.chain[i], ca.chain[i + 1]) for i in range(len(ca.chain) - 1)
        )
        if ok:
            return
    raise KeylessError(
        f"the certificate was not issued by a Fulcio CA of the trusted root {root.name} valid at "
        f"{when:%Y-%m-%dT%H:%M:%SZ}"
    )


# ---- the bundle ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeylessSignature:
    payload: bytes  # the in-toto statement (not yet judged: the caller reads it)
    certificate: dict[str, Any]  # certificate_facts
    integrated_time: datetime
    log_index: int = -1  # the Rekor entry's logIndex

    def log_entry(self) -> dict[str, Any]:
        """The Rekor entry that proved it, for the facts (`signatures[j].log_entry`)."""
        return {"index": self.log_index, "integrated_time": f"{self.integrated_time:%Y-%m-%dT%H:%M:%SZ}"}


def verify_bundle(bundle: Mapping[str, Any], root: TrustedRoot, now: datetime) -> KeylessSignature:
    """Verify a parsed sigstore bundle v0.3 with a certificate offline; raises KeylessError."""
    material = bundle.get("verificationMaterial")
    if not isinstance(material, dict):
        raise KeylessError("the bundle has no verificationMaterial")
    leaf_der, leaf = _leaf_certificate(material)
    entries = material.get("tlogEntries")
    if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_TLOG_ENTRIES:
        raise KeylessError(
            f"the bundle must carry 1 to {MAX_TLOG_ENTRIES} Rekor entries (timestamp-authority-only "
            "bundles are not read)"
        )
    payload, signature_b64, signature = _dsse(bundle.get("dsseEnvelope"))
    logged = _logged(entries, root, payload, signature_b64, leaf_der)
    if logged.integrated_time > now:
        raise KeylessError(
            f"the Rekor entry's integrated time {logged.integrated_time:%Y-%m-%dT%H:%M:%SZ} is in the future"
        )
    verify_chain(leaf, root, logged.integrated_time)
    message = b"DSSEv1 %d %s %d %s" % (len(IN_TOTO), IN_TOTO.encode(), len(payload), payload)
    if not _verifies(leaf.public_key(), message, signature):
        raise KeylessError("the DSSE signature does not verify with the certificate's key")
    return KeylessSignature(payload, certificate_facts(leaf), logged.integrated_time, logged.log_index)


def _leaf_certificate(material: Mapping[str, Any]) -> tuple[bytes, x509.Certificate]:
    """The bundle's signing certificate (v0.3 `certificate`), DER and parsed."""
    cert_field = material.get("certificate")
    if not isinstance(cert_field, dict):
        if "publicKey" in material:
            raise KeylessError("a key-based bundle (no certificate): not a keyless signature")
        raise KeylessError("the bundle has no certificate (v0.3 `certificate`)")
    leaf_der = _b64(cert_field.get("rawBytes"), "the bundle's certificate", MAX_CERT_BYTES * 2)
    try:
        return leaf_der, x509.load_der_x509_certificate(leaf_der)
    except ValueError as exc:
        raise KeylessError(f"the bundle's certificate does not parse ({exc})") from None


def _dsse(envelope: object) -> tuple[bytes, str, bytes]:
    """(payload, signature as base64 text, signature) of the bundle's DSSE envelope: exactly one
    signature over an in-toto payload."""
    if not isinstance(envelope, dict) or set(envelope) != {"payload", "payloadType", "signatures"}:
        raise KeylessError("the bundle holds no DSSE envelope of exactly payload, payloadType, signatures")
    if envelope["payloadType"] != IN_TOTO:
        raise KeylessError(f"DSSE payloadType is {str(envelope['payloadType'])[:80]!r}, not {IN_TOTO}")
    payload = _b64(envelope["payload"], "the DSSE payload", 96 * 1024)
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or len(signatures) != 1 or not isinstance(signatures[0], dict):
        raise KeylessError("a keyless DSSE envelope holds exactly one signature")
    signature_b64 = signatures[0].get("sig")
    signature = _b64(signature_b64, "the DSSE signature", 4096)
    assert isinstance(signature_b64, str)  # _b64 refuses anything else
    return payload, signature_b64, signature


def _logged(
    entries: Sequence[object], root: TrustedRoot, payload: bytes, signature_b64: str, leaf_der: bytes
) -> LogEntry:
    """The first Rekor entry that verifies and logs this envelope by this certificate; raises with every
    entry's reason when none does."""
    problems = []
    for entry in entries:
        try:
            candidate = verify_tlog_entry(entry, root)
            _check_body(candidate.body, payload, signature_b64, leaf_der)
        except KeylessError as exc:
            problems.append(str(exc))
            continue
        return candidate
    raise KeylessError("; ".join(problems))
