"""Notary v1 (TUF) metadata: bytes in, typed and signature-checked objects out; no state, no I/O, no clock.

What lives here (python-tuf's `metadata` layer): the limits on what one repository's trust data may
hold, the typed objects (Key, RoleSpec (a role or a delegation: who may sign it), Envelope (one signed
document), Root, Timestamp, Snapshot, Targets), the parsers that build them from a document's bytes,
and the checks that need only a document and the role spec it is checked against (signatures,
hashes and lengths, root certificates, delegation names and paths). Every failure is a precise
`TrustError` subclass naming the role (errors.py); JSON with floats, NaN or duplicate keys, and fields
of the wrong type, are MalformedMetadata, never a crash.

What does NOT live here: which root is trusted, the load order, versions seen before, expiry against
the reference time (trusted.py, the state machine), fetching (walker.py, client.py) and the facts
document for the policy (facts.py).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeGuard

from app.notary.canonical import canonical_json, load_json
from app.notary.errors import (
    BadSignature,
    CertificateError,
    DelegationError,
    HashMismatch,
    KeyIdMismatch,
    LengthMismatch,
    LimitExceeded,
    MalformedMetadata,
    ThresholdNotMet,
    TrustError,
    UnknownKeyType,
    WrongType,
)
from app.notary.keys import (
    KEY_TYPES,
    X509_KEY_TYPES,
    KeyFormatError,
    certificate_common_name,
    certificate_problem,
    key_id,
    load_certificate,
    load_public_key,
    public_key_bytes,
    verify_signature,
)

# Limits on what one repository's trust data may hold (docs/trust.md). Real repositories hold a
# handful of each; the limits bound the work a hostile server can cause, and exceeding one is a
# refusal (LimitExceeded), never a truncation.
MAX_KEYS = 256  # keys in root.json or in one role's delegations.keys
MAX_KEYIDS_PER_ROLE = 64  # keyids of one role
MAX_SIGNATURES = 64  # signatures on one document
MAX_DELEGATIONS_PER_ROLE = 256  # delegations.roles of one targets role
MAX_ROLES = 256  # delegations loaded for one repository
MAX_PATHS_PER_DELEGATION = 1024
MAX_TARGETS_PER_ROLE = 20000
MAX_META_ENTRIES = MAX_ROLES + 4  # entries of snapshot.json's meta


def check_limit(role: str, what: str, count: int, limit: int) -> None:
    if count > limit:
        raise LimitExceeded(role, f"trust data for {role} has {count} {what}, exceeding the limit of {limit}")


def never_late() -> None:
    """The default interrupt: no deadline."""


TOP_ROLES = ("root", "targets", "snapshot", "timestamp")
RELEASES_ROLE = "targets/releases"
_TYPES = {"root": "Root", "timestamp": "Timestamp", "snapshot": "Snapshot", "targets": "Targets"}
_HASH_SIZES = {"sha256": 32, "sha512": 64}
_DELEGATION_NAME = re.compile(r"^[-a-z0-9_/]+\Z")
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})\Z", re.ASCII
)


@dataclass(frozen=True)
class Key:
    keyid: str
    keytype: str
    public: str


@dataclass(frozen=True)
class RoleSpec:
    """Who may sign a role: key IDs, threshold and (delegations) the effective path prefixes."""

    name: str
    keyids: tuple[str, ...]
    threshold: int
    keys: Mapping[str, Key]
    paths: tuple[str, ...] | None = None  # None: all paths (the top-level targets role)


@dataclass
class Envelope:
    role: str
    raw: bytes
    signed: dict[str, Any]
    signatures: list[tuple[str, str, bytes]]
    message: bytes
    version: int
    expires: datetime


@dataclass
class Root:
    """root.json: the keys of every top-level role. `signed_by` is filled once its signatures verified."""

    envelope: Envelope
    keys: dict[str, Key]
    roles: dict[str, RoleSpec]
    signed_by: tuple[str, ...]


# (length, {algorithm: digest}) of a role document as its parent lists it (timestamp or snapshot meta).
MetaFile = tuple[int, dict[str, bytes]]
# A delegation (child role of a targets role) is described exactly like a top-level role.
Delegation = RoleSpec


@dataclass(frozen=True)
class Timestamp:
    """A verified timestamp.json: what snapshot.json must be."""

    envelope: Envelope
    snapshot: MetaFile


@dataclass(frozen=True)
class Snapshot:
    """A verified snapshot.json: what every other role document must be."""

    envelope: Envelope
    meta: dict[str, MetaFile]


@dataclass(frozen=True)
class Targets:
    """A verified targets role (top-level or delegation): its targets and the roles it delegates to."""

    spec: RoleSpec
    envelope: Envelope
    signed_by: tuple[str, ...]
    targets: dict[str, str | None]  # target name -> "sha256:<hex>" (None: no sha256 listed)
    delegations: dict[str, Delegation]  # child name -> spec (effective paths)
    delegation_keys: dict[str, Key]


# --- parsing helpers ---------------------------------------------------------------------------


def require(condition: bool, role: str, reason: str) -> None:
    if not condition:
        raise MalformedMetadata(role, reason)


def require_object(role: str, value: object, reason: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedMetadata(role, reason)
    return value


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_time(role: str, text: object) -> datetime:
    """An RFC 3339 timestamp as Go writes it (nanoseconds, Z or an offset) -> aware UTC datetime."""
    match = _RFC3339.match(text) if isinstance(text, str) else None
    if match is None:
        raise MalformedMetadata(role, f"expires {text!r} is not an RFC 3339 time")
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0").ljust(6, "0")[:6])
    if zone in ("Z", "z"):
        offset = timedelta(0)
    else:
        sign = 1 if zone[0] == "+" else -1
        offset = sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            micros,
            tzinfo=timezone(offset),
        )
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise MalformedMetadata(role, f"expires {text!r} is not a valid time: {exc}") from exc


def _b64(role: str, text: object, what: str) -> bytes:
    if not isinstance(text, str):
        raise MalformedMetadata(role, f"{what} is not a base64 string")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise MalformedMetadata(role, f"{what} is not valid base64") from exc


def parse_envelope(role: str, data: bytes, type_role: str) -> Envelope:
    """Parse a signed document and check its structure and `_type` (no signature or time checks)."""
    if not isinstance(data, (bytes, bytearray)):
        raise MalformedMetadata(role, f"{role}.json must be given as bytes")
    data = bytes(data)
    try:
        document = load_json(data)
    except (ValueError, TypeError, RecursionError) as exc:
        raise MalformedMetadata(role, f"{role}.json is not valid JSON: {exc}") from exc
    require(isinstance(document, dict), role, "document is not a JSON object")
    signed = document.get("signed")
    raw_signatures = document.get("signatures")
    require(isinstance(signed, dict), role, '"signed" is missing or not an object')
    require(isinstance(raw_signatures, list), role, '"signatures" is missing or not a list')
    expected_type = _TYPES[type_role]
    if signed.get("_type") != expected_type:
        raise WrongType(role, f"_type is {signed.get('_type')!r}, expected {expected_type!r}")
    check_limit(role, "signatures", len(raw_signatures), MAX_SIGNATURES)
    signatures: list[tuple[str, str, bytes]] = []
    for index, entry in enumerate(raw_signatures):
        require(isinstance(entry, dict), role, f"signature {index} is not an object")
        keyid, method = entry.get("keyid"), entry.get("method")
        require(isinstance(keyid, str), role, f"signature {index} has no keyid string")
        require(isinstance(method, str), role, f"signature {index} has no method string")
        signatures.append((keyid, method, _b64(role, entry.get("sig"), f"signature {index}")))
    version = signed.get("version")
    require(is_int(version) and version >= 0, role, f"version {version!r} is not a non-negative integer")
    expires = parse_time(role, signed.get("expires"))
    try:
        message = canonical_json(signed)
    except (ValueError, TypeError, RecursionError) as exc:
        raise MalformedMetadata(role, f"cannot canonicalise signed: {exc}") from exc
    return Envelope(role, data, signed, signatures, message, version, expires)


def parse_keys(role: str, raw: object) -> dict[str, Key]:
    """A key map; every ID must be the sha256 of the key's canonical form."""
    raw_keys = require_object(role, raw, "keys is not an object")
    check_limit(role, "keys", len(raw_keys), MAX_KEYS)
    keys: dict[str, Key] = {}
    for listed_id, entry in raw_keys.items():
        require(isinstance(entry, dict), role, f"key {listed_id} is not an object")
        keytype, keyval = entry.get("keytype"), entry.get("keyval")
        require(isinstance(keytype, str), role, f"key {listed_id} has no keytype string")
        require(isinstance(keyval, dict), role, f"key {listed_id} has no keyval object")
        public = keyval.get("public")
        require(isinstance(public, str), role, f"key {listed_id} has no public key string")
        require(keyval.get("private") is None, role, f"key {listed_id} carries a private key")
        computed = key_id(keytype, public)
        if computed != listed_id:
            raise KeyIdMismatch(role, f"key listed as {listed_id} has key ID {computed}")
        keys[listed_id] = Key(listed_id, keytype, public)
    return keys


def parse_role_spec(
    role: str, name: str, raw: object, keys: Mapping[str, Key], paths: tuple[str, ...] | None = None
) -> RoleSpec:
    spec = require_object(role, raw, f"role {name} is not an object")
    keyids, threshold = spec.get("keyids"), spec.get("threshold")
    if not (isinstance(keyids, list) and all(isinstance(k, str) for k in keyids)):
        raise MalformedMetadata(role, f"role {name} has no keyids list")
    check_limit(role, f"keyids for role {name}", len(keyids), MAX_KEYIDS_PER_ROLE)
    if not (is_int(threshold) and threshold >= 1):
        raise MalformedMetadata(role, f"role {name} threshold {threshold!r} is not >= 1")
    for keyid in keyids:
        require(keyid in keys, role, f"role {name} lists key {keyid}, which is not in keys")
    unique = tuple(dict.fromkeys(keyids))
    return RoleSpec(name, unique, threshold, {k: keys[k] for k in unique}, paths)


def _check_role_keys(spec: RoleSpec) -> None:
    """Every key bound to the role must be of a known type and readable."""
    for key in spec.keys.values():
        if key.keytype not in KEY_TYPES:
            raise UnknownKeyType(spec.name, f"key {key.keyid} has unknown type {key.keytype!r}")
        try:
            load_public_key(key.keytype, key.public)
        except KeyFormatError as exc:
            raise MalformedMetadata(
                spec.name, f"key {key.keyid} ({key.keytype}) cannot be read: {exc}"
            ) from exc


def check_signatures(
    spec: RoleSpec, envelope: Envelope, now: datetime | None, interrupt: Callable[[], None] = never_late
) -> tuple[str, ...]:
    """Key IDs of `spec` whose signatures verify; raises unless DISTINCT PUBLIC KEYS meet the threshold.

    One private key listed twice (e.g. as "ecdsa" and as "ecdsa-x509", two key IDs) is one signer.
    `now` None skips the certificate dates of x509 keys (used for a trusted root's keys in a rotation).
    `interrupt` is called between signatures and raises when the caller's deadline has passed.
    """
    _check_role_keys(spec)
    role = envelope.role
    if not envelope.signatures:
        raise ThresholdNotMet(role, f"no signatures; {spec.threshold} required")
    tally = _Tally()
    attempted: set[str] = set()
    for keyid, method, sig in envelope.signatures:
        key = spec.keys.get(keyid)
        if key is None or keyid in attempted:
            continue  # not a key of this role, or already tried: each key counts (and costs) once
        interrupt()
        attempted.add(keyid)
        tally.check(keyid, key, method, sig, envelope.message, now)
    if len(tally.signers) >= spec.threshold:
        return tuple(sorted(tally.verified))
    raise tally.shortfall(role, spec.threshold)


@dataclass
class _Tally:
    """What check_signatures found, key by key: the key IDs and distinct public keys that signed, and
    why the others did not count."""

    verified: set[str] = field(default_factory=set)
    signers: set[bytes] = field(default_factory=set)
    bad: list[str] = field(default_factory=list)
    certificate_problems: list[str] = field(default_factory=list)

    def check(
        self, keyid: str, key: Key, method: str, sig: bytes, message: bytes, now: datetime | None
    ) -> None:
        if not verify_signature(key.keytype, key.public, method, sig, message):
            self.bad.append(f"signature by key {keyid} (method {method!r}) does not verify")
            return
        if now is not None and key.keytype in X509_KEY_TYPES:
            problem = certificate_problem(load_certificate(key.public), now)
            if problem is not None:
                self.certificate_problems.append(f"key {keyid}: {problem}")
                return
        self.verified.add(keyid)
        self.signers.add(public_key_bytes(load_public_key(key.keytype, key.public)))

    def shortfall(self, role: str, threshold: int) -> TrustError:
        """The error for a threshold not met: certificate problems first, then bad signatures."""
        count = f"{len(self.signers)} of {threshold} required keys signed"
        if len(self.verified) > len(self.signers):
            count += f" ({len(self.verified)} key IDs, but some share one public key)"
        if self.certificate_problems:
            return CertificateError(role, f"{'; '.join(self.certificate_problems)} ({count})")
        if self.bad:
            return BadSignature(role, f"{'; '.join(self.bad)} ({count})")
        return ThresholdNotMet(role, f"{count} (signatures are counted once per distinct key of the role)")


def check_root_certificates(root: Root, gun: str) -> None:
    for keyid in root.roles["root"].keyids:
        key = root.keys[keyid]
        if key.keytype not in X509_KEY_TYPES:
            raise CertificateError("root", f"root key {keyid} is {key.keytype!r}, not an x509 certificate")
        try:
            cert = load_certificate(key.public)
        except KeyFormatError as exc:
            raise MalformedMetadata("root", f"root key {keyid} certificate cannot be read: {exc}") from exc
        common_name = certificate_common_name(cert)
        if common_name != gun:
            raise CertificateError(
                "root", f"certificate of root key {keyid} is for {common_name!r}, not for {gun!r}"
            )


def parse_root(data: bytes, gun: str) -> tuple[Envelope, dict[str, Key], dict[str, RoleSpec]]:
    envelope = parse_envelope("root", data, "root")
    keys = parse_keys("root", envelope.signed.get("keys"))
    roles_raw = require_object("root", envelope.signed.get("roles"), "roles is not an object")
    roles: dict[str, RoleSpec] = {}
    for name in TOP_ROLES:
        require(name in roles_raw, "root", f"roles has no {name!r} role")
        roles[name] = parse_role_spec("root", name, roles_raw[name], keys)
    return envelope, keys, roles


def parse_meta(role: str, raw: object, name: str) -> MetaFile:
    """A meta entry {"hashes": {...}, "length": N} -> (length, {algorithm: digest})."""
    meta = require_object(role, raw, f"meta for {name} is not an object")
    length, hashes = meta.get("length"), meta.get("hashes")
    if not (is_int(length) and length >= 0):
        raise MalformedMetadata(role, f"meta for {name} has no valid length")
    if not isinstance(hashes, dict):
        raise MalformedMetadata(role, f"meta for {name} has no hashes object")
    result: dict[str, bytes] = {}
    for algorithm, size in _HASH_SIZES.items():
        if algorithm in hashes:
            digest = _b64(role, hashes[algorithm], f"{algorithm} of {name}")
            require(len(digest) == size, role, f"{algorithm} of {name} is {len(digest)} bytes, not {size}")
            result[algorithm] = digest
    require(bool(result), role, f"meta for {name} has neither sha256 nor sha512")
    return length, result


def check_meta(role: str, data: bytes, meta: MetaFile, listed_in: str) -> None:
    length, hashes = meta
    if len(data) != length:
        raise LengthMismatch(role, f"{role}.json is {len(data)} bytes, {listed_in} lists {length}")
    for algorithm, expected in hashes.items():
        if hashlib.new(algorithm, data).digest() != expected:
            raise HashMismatch(role, f"{algorithm} of {role}.json does not match {listed_in}")


def valid_delegation_name(name: str) -> bool:
    return (
        name.startswith("targets/")
        and len(name) < 256
        and bool(_DELEGATION_NAME.match(name))
        and posixpath.normpath(name) == name
    )


class PrefixIndex:
    """Answers "does `name` start with one of these prefixes?" in O(log P), not O(P).

    Prefixes covered by a shorter one are dropped, leaving a prefix-free sorted list; then the only
    candidate for `name` is the greatest prefix <= name (any prefix of name sorts <= name, and one
    between it and name would start with it, so would have been dropped).
    """

    def __init__(self, prefixes: Sequence[str]) -> None:
        minimal: list[str] = []
        for prefix in sorted(set(prefixes)):
            if not minimal or not prefix.startswith(minimal[-1]):
                minimal.append(prefix)
        self._sorted = minimal

    def covers(self, name: str) -> bool:
        position = bisect.bisect_right(self._sorted, name)
        return position > 0 and name.startswith(self._sorted[position - 1])


def restrict_paths(parent: tuple[str, ...] | None, child: tuple[str, ...]) -> tuple[str, ...]:
    """Notary's RestrictDelegationPathPrefixes: child prefixes that lie under a parent prefix."""
    if parent is None:
        return child
    index = PrefixIndex(parent)
    return tuple(path for path in child if index.covers(path))


def parse_targets(role: str, signed: Mapping[str, Any]) -> dict[str, str | None]:
    raw = require_object(role, signed.get("targets"), "targets is not an object")
    check_limit(role, "targets", len(raw), MAX_TARGETS_PER_ROLE)
    result: dict[str, str | None] = {}
    for name, entry in raw.items():
        require(isinstance(entry, dict), role, f"target {name!r} is not an object")
        hashes, length = entry.get("hashes"), entry.get("length")
        require(isinstance(hashes, dict), role, f"target {name!r} has no hashes object")
        require(is_int(length) and length >= 0, role, f"target {name!r} has no valid length")
        if "sha256" not in hashes:
            result[name] = None
            continue
        digest = _b64(role, hashes["sha256"], f"sha256 of target {name!r}")
        require(len(digest) == 32, role, f"sha256 of target {name!r} is {len(digest)} bytes, not 32")
        result[name] = "sha256:" + digest.hex()
    return result


def parse_delegations(
    role: str, signed: Mapping[str, Any], effective_paths: tuple[str, ...] | None
) -> tuple[dict[str, Key], dict[str, RoleSpec]]:
    raw = signed.get("delegations")
    if raw is None:
        return {}, {}
    require(isinstance(raw, dict), role, "delegations is not an object")
    keys = parse_keys(role, raw.get("keys", {}))
    roles_raw = raw.get("roles", [])
    require(isinstance(roles_raw, list), role, "delegations.roles is not a list")
    check_limit(role, "delegations", len(roles_raw), MAX_DELEGATIONS_PER_ROLE)
    specs: dict[str, RoleSpec] = {}
    for index, entry in enumerate(roles_raw):
        require(isinstance(entry, dict), role, f"delegation {index} is not an object")
        name = entry.get("name")
        require(isinstance(name, str), role, f"delegation {index} has no name")
        if not valid_delegation_name(name) or posixpath.dirname(name) != role:
            raise DelegationError(role, f"delegation {name!r} is not a valid child role of {role}")
        require(name not in specs, role, f"delegation {name!r} is listed twice")
        paths = entry.get("paths", [])
        require(
            isinstance(paths, list) and all(isinstance(p, str) for p in paths),
            role,
            f"delegation {name!r} paths is not a list of strings",
        )
        check_limit(role, f"paths for delegation {name}", len(paths), MAX_PATHS_PER_DELEGATION)
        specs[name] = parse_role_spec(role, name, entry, keys, restrict_paths(effective_paths, tuple(paths)))
    return keys, specs


def read_root(data: bytes, gun: str) -> Root:
    """root.json as a Root whose signatures are not checked yet (`signed_by` empty)."""
    envelope, keys, roles = parse_root(data, gun)
    return Root(envelope, keys, roles, ())


def read_timestamp(envelope: Envelope) -> Timestamp:
    """The timestamp's content, read once its signatures, version and expiry were checked."""
    meta = require_object("timestamp", envelope.signed.get("meta"), "meta is not an object")
    require("snapshot" in meta, "timestamp", "meta has no snapshot entry")
    return Timestamp(envelope, parse_meta("timestamp", meta["snapshot"], "snapshot"))


def read_snapshot(envelope: Envelope) -> Snapshot:
    """The snapshot's content, read once its signatures, version and expiry were checked."""
    meta_raw = require_object("snapshot", envelope.signed.get("meta"), "meta is not an object")
    check_limit("snapshot", "meta entries", len(meta_raw), MAX_META_ENTRIES)
    return Snapshot(envelope, {name: parse_meta("snapshot", entry, name) for name, entry in meta_raw.items()})
