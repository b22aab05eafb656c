"""Build and sign synthetic Notary v1 trust data with throwaway keys, for the verifier's attack tests.

`ForgedRepo` describes a repository (root with an x509 root key whose CN is the GUN, targets,
snapshot, timestamp, delegations) and `build()` turns it into the bytes a Notary server would serve,
keyed by role name. Every knob an attack needs is a plain attribute: signing keys per role, thresholds,
expiries, versions, signature method or DER encoding, and `edit[role]` to change "signed" before it
is signed. Hash and length meta are computed over the final bytes, so each attack changes exactly one
thing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from app.notary.canonical import canonical_json
from app.notary.keys import key_id
from app.notary.trusted import TrustedRepository
from app.notary.walker import walk

GUN = "docker.io/acme/app"
NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
DIGEST_A = "a" * 64
DIGEST_B = "b" * 64

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def rfc3339(moment: datetime) -> str:
    """As Go writes it: nanoseconds and an offset."""
    return moment.astimezone(timezone(timedelta(hours=2))).strftime("%Y-%m-%dT%H:%M:%S.%f123+02:00")


@dataclass
class ForgedKey:
    keytype: str
    private: PrivateKey
    public: str  # the TUF "public" value (base64)

    @property
    def keyid(self) -> str:
        return key_id(self.keytype, self.public)

    def to_json(self) -> dict[str, Any]:
        return {"keytype": self.keytype, "keyval": {"private": None, "public": self.public}}

    @property
    def default_method(self) -> str:
        return {"ecdsa": "ecdsa", "ecdsa-x509": "ecdsa", "ed25519": "eddsa"}.get(self.keytype, "rsapss")

    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode("ascii")
        )

    def sign(self, message: bytes, method: str | None = None, der: bool = False) -> bytes:
        method = method or self.default_method
        key = self.private
        if isinstance(key, ec.EllipticCurvePrivateKey):
            signature = key.sign(message, ec.ECDSA(hashes.SHA256()))
            if der:
                return signature
            r, s = decode_dss_signature(signature)
            size = (key.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(message)
        if method == "rsapkcs1v15":
            return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
        return key.sign(
            message, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32), hashes.SHA256()
        )

    def signature(self, signed: Mapping[str, Any], method: str | None = None, der: bool = False) -> dict:
        sig = self.sign(canonical_json(signed), method, der)
        return {
            "keyid": self.keyid,
            "method": method or self.default_method,
            "sig": base64.b64encode(sig).decode("ascii"),
        }


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _spki(private: PrivateKey) -> str:
    return _b64(
        private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def ecdsa_key() -> ForgedKey:
    private = ec.generate_private_key(ec.SECP256R1())
    return ForgedKey("ecdsa", private, _spki(private))


def ed25519_key() -> ForgedKey:
    private = ed25519.Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return ForgedKey("ed25519", private, _b64(raw))


_RSA_CACHE: list[rsa.RSAPrivateKey] = []


def rsa_key(bits: int = 2048, fresh: bool = False) -> ForgedKey:
    if bits != 2048 or fresh or not _RSA_CACHE:
        private = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        if bits == 2048 and not fresh:
            _RSA_CACHE.append(private)
    else:
        private = _RSA_CACHE[0]
    return ForgedKey("rsa", private, _spki(private))


def certificate(private: PrivateKey, common_name: str, not_before: datetime, not_after: datetime) -> bytes:
    """A self-signed certificate as Notary makes for root keys (PEM bytes)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    algorithm = None if isinstance(private, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(private, algorithm).public_bytes(serialization.Encoding.PEM)


def x509_key(
    common_name: str = GUN,
    *,
    now: datetime = NOW,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    private: PrivateKey | None = None,
) -> ForgedKey:
    """An ecdsa-x509 (or rsa-x509 when `private` is RSA) key: base64 of a self-signed PEM certificate."""
    private = private or ec.generate_private_key(ec.SECP256R1())
    pem = certificate(
        private, common_name, not_before or now - timedelta(days=30), not_after or now + timedelta(days=3650)
    )
    keytype = "rsa-x509" if isinstance(private, rsa.RSAPrivateKey) else "ecdsa-x509"
    return ForgedKey(keytype, private, _b64(pem))


def envelope(signed: Mapping[str, Any], signatures: Sequence[Mapping[str, Any]]) -> bytes:
    """The wire form: "signed" first, compact, not canonical (as notary-server serves it)."""
    return json.dumps({"signed": signed, "signatures": list(signatures)}, separators=(",", ":")).encode()


def file_meta(data: bytes) -> dict[str, Any]:
    return {
        "hashes": {
            "sha256": _b64(hashlib.sha256(data).digest()),
            "sha512": _b64(hashlib.sha512(data).digest()),
        },
        "length": len(data),
    }


def target(digest_hex: str, length: int = 528) -> dict[str, Any]:
    return {"hashes": {"sha256": _b64(bytes.fromhex(digest_hex))}, "length": length}


@dataclass
class Delegation:
    name: str
    keys: list[ForgedKey]
    threshold: int = 1
    paths: list[str] = field(default_factory=lambda: [""])
    targets: dict[str, str] = field(default_factory=dict)  # tag -> sha256 hex


@dataclass
class ForgedRepo:
    gun: str = GUN
    now: datetime = NOW
    role_keys: dict[str, list[ForgedKey]] = field(default_factory=dict)
    thresholds: dict[str, int] = field(default_factory=dict)
    targets: dict[str, str] = field(default_factory=lambda: {"latest": DIGEST_A})
    delegations: list[Delegation] = field(default_factory=list)
    expires: dict[str, datetime] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    signers: dict[str, list[ForgedKey]] = field(default_factory=dict)  # who signs (default: the role's keys)
    methods: dict[str, str] = field(default_factory=dict)  # role -> signature method
    der: set[str] = field(default_factory=set)  # roles whose ecdsa signatures are DER encoded
    edit: dict[str, Callable[[dict[str, Any]], None]] = field(default_factory=dict)
    unlisted: set[str] = field(default_factory=set)  # roles left out of the snapshot meta

    def __post_init__(self) -> None:
        defaults = {
            "root": lambda: [x509_key(self.gun, now=self.now)],
            "targets": lambda: [ecdsa_key()],
            "snapshot": lambda: [ecdsa_key()],
            "timestamp": lambda: [ecdsa_key()],
        }
        for role, make in defaults.items():
            self.role_keys.setdefault(role, make())

    def delegation(self, name: str) -> Delegation:
        return next(d for d in self.delegations if d.name == name)

    def add_delegation(self, name: str, keys: list[ForgedKey] | None = None, **kwargs: Any) -> Delegation:
        delegation = Delegation(name, keys or [ecdsa_key()], **kwargs)
        self.delegations.append(delegation)
        return delegation

    def _expires(self, role: str) -> str:
        default = {"root": 3650, "timestamp": 14}.get(role, 1095)
        return rfc3339(self.expires.get(role, self.now + timedelta(days=default)))

    def _sign(self, role: str, signed: dict[str, Any], default_signers: Sequence[ForgedKey]) -> bytes:
        if role in self.edit:
            self.edit[role](signed)
        signers = self.signers.get(role, list(default_signers))
        signatures = [key.signature(signed, self.methods.get(role), role in self.der) for key in signers]
        return envelope(signed, signatures)

    def root_signed(self) -> dict[str, Any]:
        keys = {
            key.keyid: key.to_json()
            for role in ("root", "targets", "snapshot", "timestamp")
            for key in self.role_keys[role]
        }
        return {
            "_type": "Root",
            "consistent_snapshot": False,
            "expires": self._expires("root"),
            "keys": keys,
            "roles": {
                role: {
                    "keyids": [key.keyid for key in self.role_keys[role]],
                    "threshold": self.thresholds.get(role, 1),
                }
                for role in ("root", "snapshot", "targets", "timestamp")
            },
            "version": self.versions.get("root", 1),
        }

    def _targets_signed(self, role: str, tags: Mapping[str, str]) -> dict[str, Any]:
        children = [d for d in self.delegations if posixpath.dirname(d.name) == role]
        return {
            "_type": "Targets",
            "delegations": {
                "keys": {key.keyid: key.to_json() for child in children for key in child.keys},
                "roles": [
                    {
                        "keyids": [key.keyid for key in child.keys],
                        "name": child.name,
                        "paths": child.paths,
                        "threshold": child.threshold,
                    }
                    for child in children
                ],
            },
            "expires": self._expires(role),
            "targets": {tag: target(digest) for tag, digest in tags.items()},
            "version": self.versions.get(role, 1),
        }

    def build(self) -> dict[str, bytes]:
        files: dict[str, bytes] = {}
        files["root"] = self._sign("root", self.root_signed(), self.role_keys["root"])
        files["targets"] = self._sign(
            "targets", self._targets_signed("targets", self.targets), self.role_keys["targets"]
        )
        for delegation in self.delegations:
            signed = self._targets_signed(delegation.name, delegation.targets)
            files[delegation.name] = self._sign(
                delegation.name, signed, delegation.keys[: delegation.threshold]
            )
        meta = {role: file_meta(data) for role, data in files.items() if role not in self.unlisted}
        snapshot = {
            "_type": "Snapshot",
            "expires": self._expires("snapshot"),
            "meta": meta,
            "version": self.versions.get("snapshot", 1),
        }
        files["snapshot"] = self._sign("snapshot", snapshot, self.role_keys["snapshot"])
        timestamp = {
            "_type": "Timestamp",
            "expires": self._expires("timestamp"),
            "meta": {"snapshot": file_meta(files["snapshot"])},
            "version": self.versions.get("timestamp", 1),
        }
        files["timestamp"] = self._sign("timestamp", timestamp, self.role_keys["timestamp"])
        return files


def load(
    files: Mapping[str, bytes],
    *,
    gun: str = GUN,
    now: datetime = NOW,
    trusted_root: bytes | None = None,
    seen_versions: Mapping[str, int] | None = None,
) -> TrustedRepository:
    """Load every role in order, as a client would; a role with no file is reported missing."""
    repo = TrustedRepository(gun, now, trusted_root=trusted_root, seen_versions=seen_versions)
    return walk(repo, files.get).repository
