"""The Notary v1 (Docker Content Trust / TUF) verification core: bytes in, verified state out.

No I/O and no clock of its own: the caller fetches the documents and passes a reference time. Every
failure is a precise `TrustError` subclass naming the role (see errors.py).

Rules, in plain words:

- Load order is root -> timestamp -> snapshot -> targets -> delegations (parents before children);
  calling out of order raises LoadOrderError (a programming error, not a TrustError). Each role is
  loaded once per TrustedRepository; make a new one for every refresh. `now` is the reference time
  for every check (a naive datetime is taken as UTC).
- Root: trusted on first use when no trusted root is given. Otherwise the new root must be signed by
  the trusted root's root keys meeting the trusted root's threshold (their certificates' dates are not
  checked, so an expiring root can be rotated) AND by its own root keys meeting its own threshold; its
  version must not be lower. Every root key must be an x509 certificate whose CN is the GUN and (to
  count) valid at `now`. Several update_root calls in a row walk a chain of rotations. When no new
  root is loaded, the trusted root is used as is, but must still be unexpired with valid certificates.
- Keys: every key ID in root.json and in delegations is recomputed (sha256 of the canonical key) and
  must match; keys are bound to roles only by root.json (root, targets, snapshot, timestamp) and by the
  parent's `delegations` (targets/...). Keys bound to a role must be readable and of a known type.
- Signatures are verified over the canonical JSON of "signed". A threshold (an integer >= 1) counts
  DISTINCT PUBLIC KEYS (not key IDs: one key listed as ecdsa and as ecdsa-x509 is one signer) of the role whose signature verified with a method fit for the key type (ecdsa raw
  r||s, eddsa, rsapss, rsapkcs1v15); signatures by keys outside the role are ignored, each key is
  tried once, and no signatures at all fails. x509 keys count only while their certificate is valid.
- `_type` must name the role; `expires` of every role must be after `now`; versions must never be
  lower than the versions seen before (equal is fine). JSON with floats, NaN or duplicate keys, and
  fields of the wrong type, are MalformedMetadata, never a crash.
- Hashes and lengths: snapshot.json must match the timestamp's meta, targets.json and every
  delegation must match the snapshot's meta (length, sha256 and sha512 when listed, over the raw
  bytes received); when the snapshot lists root, the root in use must match it too.
- Delegations: a delegation is loaded only if its parent delegates it (names must be direct children,
  lowercase [-a-z0-9_/]) and the snapshot lists it. Delegations the parent names but the snapshot does
  not list are not published yet and are skipped, as Notary does; a role the snapshot lists but the
  server does not serve makes the whole repository fail (`missing`). Paths: a role's effective paths
  are its own path prefixes that lie under one of its parent's effective paths; a target outside them
  is an error (DelegationError) rather than silently dropped: both are safe, the error is visible.
- Targets: hashes are base64 of the raw sha256, reported as "sha256:<hex>"; targets without a sha256
  are ignored. The released digest is Docker's (docker_release): the first role naming the tag in a
  breadth-first walk of targets/releases, then of targets, decides; an unusable entry there refuses.
- Counts are bounded (MAX_* below, docs/trust.md) and refused with LimitExceeded; `interrupt` (given
  by the caller) is called between steps and may raise DeadlineExceeded to stop the work.

Usage:

    repo = TrustedRepository("docker.io/library/nginx", now, trusted_root=remembered_root)
    repo.update_root(fetch("root"))
    repo.update_timestamp(fetch("timestamp"))
    repo.update_snapshot(fetch("snapshot"))
    repo.update_targets(fetch("targets"))
    while pending := repo.pending_delegations():
        for role in pending:
            data = fetch(role)                 # None on 404
            if data is None:
                repo.missing(role)             # raises MissingRole
            repo.update_delegation(role, data)
    facts = repo.facts("1.25", None, signers)
    remember(repo.root_bytes, repo.versions)
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
from typing import Any, NoReturn

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from app.notary import facts as facts_module
from app.notary.canonical import canonical_json, load_json
from app.notary.errors import (
    BadRootRotation,
    BadSignature,
    CertificateError,
    DelegationError,
    ExpiredMetadata,
    HashMismatch,
    KeyIdMismatch,
    LengthMismatch,
    LimitExceeded,
    LoadOrderError,
    MalformedMetadata,
    MissingRole,
    RollbackAttack,
    ThresholdNotMet,
    TrustError,
    UnknownKeyType,
    WrongType,
)
from app.notary.keys import (
    KEY_TYPES,
    MAX_PEM_CHARS,
    X509_KEY_TYPES,
    KeyFormatError,
    as_utc,
    certificate_common_name,
    certificate_problem,
    key_id,
    load_certificate,
    load_pem_public_key,
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


def _limit(role: str, what: str, count: int, limit: int) -> None:
    if count > limit:
        raise LimitExceeded(role, f"trust data for {role} has {count} {what}, exceeding the limit of {limit}")


def _never_late() -> None:
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
class LoadedTargets:
    """A verified targets role (top-level or delegation)."""

    spec: RoleSpec
    envelope: Envelope
    signed_by: tuple[str, ...]
    targets: dict[str, str | None]  # target name -> "sha256:<hex>" (None: no sha256 listed)
    delegations: dict[str, RoleSpec] = field(default_factory=dict)  # child name -> spec (raw paths)
    delegation_keys: dict[str, Key] = field(default_factory=dict)


@dataclass
class Root:
    envelope: Envelope
    keys: dict[str, Key]
    roles: dict[str, RoleSpec]
    signed_by: tuple[str, ...]


# --- pinned roots (an Ostiary extension: `trust.rootSecrets`) ------------------------------------

MAX_PIN_BLOCKS = 64  # PEM blocks in one root secret


@dataclass(frozen=True)
class RootPin:
    """Root-of-trust material from one Secret: public keys (SPKI DER, from PEM keys or certificates)
    that may sign root.json, and CA certificates that must have issued the root keys' certificates.
    `error` says why the Secret could not be used; a pin with an error fails the image (closed)."""

    secret: str
    keys: tuple[bytes, ...] = ()
    cas: tuple[bytes, ...] = ()  # DER certificates
    error: str | None = None

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for item in (*sorted(self.keys), b"--", *sorted(self.cas), b"--", (self.error or "").encode()):
            digest.update(hashlib.sha256(item).digest())
        return digest.hexdigest()


def pem_blocks(text: str, limit: int = MAX_PIN_BLOCKS) -> list[str]:
    """Every complete PEM block of `text` (one pass over the lines; the text is bounded first)."""
    if len(text) > MAX_PEM_CHARS * limit:
        raise KeyFormatError(f"PEM text is {len(text)} characters, more than {MAX_PEM_CHARS * limit}")
    blocks: list[str] = []
    current: list[str] | None = None
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if line.startswith("-----BEGIN "):
            current = [line]
        elif current is not None:
            current.append(line)
            if line.startswith("-----END "):
                blocks.append("\n".join(current) + "\n")
                current = None
                if len(blocks) > limit:
                    raise KeyFormatError(f"more than {limit} PEM blocks")
    return blocks


def root_pin(secret: str, public_keys: str | None, ca_certificates: str | None) -> RootPin:
    """Parse a root secret's `publicKeys` (PEM keys and/or certificates) and `caCertificates`."""
    from cryptography.hazmat.primitives import serialization

    keys: list[bytes] = []
    cas: list[bytes] = []
    try:
        for block in pem_blocks(public_keys or ""):
            key, _cert = load_pem_public_key(block)
            keys.append(public_key_bytes(key))
        for block in pem_blocks(ca_certificates or ""):
            key, cert = load_pem_public_key(block)
            if cert is None:
                raise KeyFormatError("caCertificates holds a PEM block that is not a certificate")
            cas.append(cert.public_bytes(serialization.Encoding.DER))
    except (KeyFormatError, ValueError) as exc:
        return RootPin(secret, error=f"secret {secret}: root material cannot be read: {exc}")
    if not keys and not cas:
        return RootPin(secret, error=f"secret {secret} holds neither `publicKeys` nor `caCertificates` PEM blocks")
    return RootPin(secret, tuple(keys), tuple(cas))


def default_root_pins(document: Any, origin: str) -> dict[str, tuple[RootPin, ...]]:
    """`serve --root-pins FILE`: {trust server URL: {publicKeys: PEM, caCertificates: PEM}} -> pins per
    server (URL as written; the service normalizes it). Raises ValueError naming the entry when the
    file is not such a mapping or its material cannot be used: a bad pin file must stop the start."""
    if not isinstance(document, dict):
        raise ValueError(f"{origin}: expected a mapping of trust server URL to root material")  # noqa: TRY004
    pins: dict[str, tuple[RootPin, ...]] = {}
    for server, entry in document.items():
        if not isinstance(server, str) or not isinstance(entry, dict):
            raise ValueError(  # noqa: TRY004
                f"{origin}: entry {server!r} must map a server URL to publicKeys/caCertificates"
            )
        unknown = set(entry) - {"publicKeys", "caCertificates"}
        if unknown:
            raise ValueError(f"{origin}: {server}: unknown fields {sorted(unknown)}")
        keys, cas = entry.get("publicKeys"), entry.get("caCertificates")
        if not all(v is None or isinstance(v, str) for v in (keys, cas)):
            raise ValueError(f"{origin}: {server}: publicKeys and caCertificates must be PEM text")
        pin = root_pin(f"{origin} [{server}]", keys, cas)
        if pin.error:
            raise ValueError(pin.error)
        pins[server] = (pin,)
    return pins


def load_default_root_pins(path: str) -> dict[str, tuple[RootPin, ...]]:
    """Read a `--root-pins` YAML file (see default_root_pins); ValueError with the reason."""
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read root pins: {exc}") from exc
    return default_root_pins(document, path)


def _issued_by(cert: x509.Certificate, cas: Sequence[x509.Certificate], now: datetime) -> bool:
    for ca in cas:
        try:
            constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            continue  # not marked as a CA: it authorises nothing
        if not constraints.ca or certificate_problem(ca, now) is not None:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def check_pinned_root(root: Root, gun: str, pins: Sequence[RootPin], now: datetime) -> None:
    """root.json must be signed, to the root role's threshold, by distinct root keys that are pinned
    keys or whose certificates a pinned CA issued (only keys whose signatures verified count)."""
    names = ", ".join(pin.secret for pin in pins)
    problems = [pin.error for pin in pins if pin.error]
    if problems:
        raise CertificateError("root", "; ".join(problems))
    pinned_keys = {key for pin in pins for key in pin.keys}
    cas = [x509.load_der_x509_certificate(der) for pin in pins for der in pin.cas]
    matched: set[bytes] = set()
    for keyid in root.signed_by:
        key = root.keys[keyid]
        material = public_key_bytes(load_public_key(key.keytype, key.public))
        if material in pinned_keys or cas and key.keytype in X509_KEY_TYPES and _issued_by(load_certificate(key.public), cas, now):
            matched.add(material)
    threshold = root.roles["root"].threshold
    if len(matched) < threshold:
        raise ThresholdNotMet(
            "root",
            f"root.json of {gun} is signed by {len(matched)} of the {threshold} required root keys pinned "
            f"in secret(s) {names} (its root keys: {', '.join(root.roles['root'].keyids)}); "
            "no trust on first use for a pinned repository",
        )


# --- parsing helpers ---------------------------------------------------------------------------


def _require(condition: bool, role: str, reason: str) -> None:
    if not condition:
        raise MalformedMetadata(role, reason)


def _object(role: str, value: Any, reason: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedMetadata(role, reason)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_time(role: str, text: Any) -> datetime:
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
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micros,
                          tzinfo=timezone(offset))
        return moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise MalformedMetadata(role, f"expires {text!r} is not a valid time: {exc}") from exc


def _b64(role: str, text: Any, what: str) -> bytes:
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
    _require(isinstance(document, dict), role, "document is not a JSON object")
    signed = document.get("signed")
    raw_signatures = document.get("signatures")
    _require(isinstance(signed, dict), role, '"signed" is missing or not an object')
    _require(isinstance(raw_signatures, list), role, '"signatures" is missing or not a list')
    expected_type = _TYPES[type_role]
    if signed.get("_type") != expected_type:
        raise WrongType(role, f"_type is {signed.get('_type')!r}, expected {expected_type!r}")
    _limit(role, "signatures", len(raw_signatures), MAX_SIGNATURES)
    signatures: list[tuple[str, str, bytes]] = []
    for index, entry in enumerate(raw_signatures):
        _require(isinstance(entry, dict), role, f"signature {index} is not an object")
        keyid, method = entry.get("keyid"), entry.get("method")
        _require(isinstance(keyid, str), role, f"signature {index} has no keyid string")
        _require(isinstance(method, str), role, f"signature {index} has no method string")
        signatures.append((keyid, method, _b64(role, entry.get("sig"), f"signature {index}")))
    version = signed.get("version")
    _require(_is_int(version) and version >= 0, role, f"version {version!r} is not a non-negative integer")
    expires = parse_time(role, signed.get("expires"))
    try:
        message = canonical_json(signed)
    except (ValueError, TypeError, RecursionError) as exc:
        raise MalformedMetadata(role, f"cannot canonicalise signed: {exc}") from exc
    return Envelope(role, data, signed, signatures, message, version, expires)


def parse_keys(role: str, raw: Any) -> dict[str, Key]:
    """A key map; every ID must be the sha256 of the key's canonical form."""
    _require(isinstance(raw, dict), role, "keys is not an object")
    _limit(role, "keys", len(raw), MAX_KEYS)
    keys: dict[str, Key] = {}
    for listed_id, entry in raw.items():
        _require(isinstance(entry, dict), role, f"key {listed_id} is not an object")
        keytype, keyval = entry.get("keytype"), entry.get("keyval")
        _require(isinstance(keytype, str), role, f"key {listed_id} has no keytype string")
        _require(isinstance(keyval, dict), role, f"key {listed_id} has no keyval object")
        public = keyval.get("public")
        _require(isinstance(public, str), role, f"key {listed_id} has no public key string")
        _require(keyval.get("private") is None, role, f"key {listed_id} carries a private key")
        computed = key_id(keytype, public)
        if computed != listed_id:
            raise KeyIdMismatch(role, f"key listed as {listed_id} has key ID {computed}")
        keys[listed_id] = Key(listed_id, keytype, public)
    return keys


def parse_role_spec(
    role: str, name: str, raw: Any, keys: Mapping[str, Key], paths: tuple[str, ...] | None = None
) -> RoleSpec:
    _require(isinstance(raw, dict), role, f"role {name} is not an object")
    keyids, threshold = raw.get("keyids"), raw.get("threshold")
    _require(isinstance(keyids, list) and all(isinstance(k, str) for k in keyids), role,
             f"role {name} has no keyids list")
    _limit(role, f"keyids for role {name}", len(keyids), MAX_KEYIDS_PER_ROLE)
    _require(_is_int(threshold) and threshold >= 1, role, f"role {name} threshold {threshold!r} is not >= 1")
    for keyid in keyids:
        _require(keyid in keys, role, f"role {name} lists key {keyid}, which is not in keys")
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
            raise MalformedMetadata(spec.name, f"key {key.keyid} ({key.keytype}) cannot be read: {exc}") from exc


def check_signatures(
    spec: RoleSpec, envelope: Envelope, now: datetime | None, interrupt: Callable[[], None] = _never_late
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
    verified: set[str] = set()
    signers: set[bytes] = set()
    bad: list[str] = []
    certificate_problems: list[str] = []
    attempted: set[str] = set()
    for keyid, method, sig in envelope.signatures:
        key = spec.keys.get(keyid)
        if key is None or keyid in attempted:
            continue  # not a key of this role, or already tried: each key counts (and costs) once
        interrupt()
        attempted.add(keyid)
        if not verify_signature(key.keytype, key.public, method, sig, envelope.message):
            bad.append(f"signature by key {keyid} (method {method!r}) does not verify")
            continue
        if now is not None and key.keytype in X509_KEY_TYPES:
            problem = certificate_problem(load_certificate(key.public), now)
            if problem is not None:
                certificate_problems.append(f"key {keyid}: {problem}")
                continue
        verified.add(keyid)
        signers.add(public_key_bytes(load_public_key(key.keytype, key.public)))
    if len(signers) >= spec.threshold:
        return tuple(sorted(verified))
    count = f"{len(signers)} of {spec.threshold} required keys signed"
    if len(verified) > len(signers):
        count += f" ({len(verified)} key IDs, but some share one public key)"
    if certificate_problems:
        raise CertificateError(role, f"{'; '.join(certificate_problems)} ({count})")
    if bad:
        raise BadSignature(role, f"{'; '.join(bad)} ({count})")
    raise ThresholdNotMet(role, f"{count} (signatures are counted once per distinct key of the role)")


def _check_root_certificates(root: Root, gun: str) -> None:
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
    roles_raw = _object("root", envelope.signed.get("roles"), "roles is not an object")
    roles: dict[str, RoleSpec] = {}
    for name in TOP_ROLES:
        _require(name in roles_raw, "root", f"roles has no {name!r} role")
        roles[name] = parse_role_spec("root", name, roles_raw[name], keys)
    return envelope, keys, roles


def parse_meta(role: str, raw: Any, name: str) -> tuple[int, dict[str, bytes]]:
    """A meta entry {"hashes": {...}, "length": N} -> (length, {algorithm: digest})."""
    _require(isinstance(raw, dict), role, f"meta for {name} is not an object")
    length, hashes = raw.get("length"), raw.get("hashes")
    _require(_is_int(length) and length >= 0, role, f"meta for {name} has no valid length")
    _require(isinstance(hashes, dict), role, f"meta for {name} has no hashes object")
    result: dict[str, bytes] = {}
    for algorithm, size in _HASH_SIZES.items():
        if algorithm in hashes:
            digest = _b64(role, hashes[algorithm], f"{algorithm} of {name}")
            _require(len(digest) == size, role, f"{algorithm} of {name} is {len(digest)} bytes, not {size}")
            result[algorithm] = digest
    _require(bool(result), role, f"meta for {name} has neither sha256 nor sha512")
    return length, result


def check_meta(role: str, data: bytes, meta: tuple[int, dict[str, bytes]], listed_in: str) -> None:
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
    raw = _object(role, signed.get("targets"), "targets is not an object")
    _limit(role, "targets", len(raw), MAX_TARGETS_PER_ROLE)
    result: dict[str, str | None] = {}
    for name, entry in raw.items():
        _require(isinstance(entry, dict), role, f"target {name!r} is not an object")
        hashes, length = entry.get("hashes"), entry.get("length")
        _require(isinstance(hashes, dict), role, f"target {name!r} has no hashes object")
        _require(_is_int(length) and length >= 0, role, f"target {name!r} has no valid length")
        if "sha256" not in hashes:
            result[name] = None
            continue
        digest = _b64(role, hashes["sha256"], f"sha256 of target {name!r}")
        _require(len(digest) == 32, role, f"sha256 of target {name!r} is {len(digest)} bytes, not 32")
        result[name] = "sha256:" + digest.hex()
    return result


def parse_delegations(
    role: str, signed: Mapping[str, Any], effective_paths: tuple[str, ...] | None
) -> tuple[dict[str, Key], dict[str, RoleSpec]]:
    raw = signed.get("delegations")
    if raw is None:
        return {}, {}
    _require(isinstance(raw, dict), role, "delegations is not an object")
    keys = parse_keys(role, raw.get("keys", {}))
    roles_raw = raw.get("roles", [])
    _require(isinstance(roles_raw, list), role, "delegations.roles is not a list")
    _limit(role, "delegations", len(roles_raw), MAX_DELEGATIONS_PER_ROLE)
    specs: dict[str, RoleSpec] = {}
    for index, entry in enumerate(roles_raw):
        _require(isinstance(entry, dict), role, f"delegation {index} is not an object")
        name = entry.get("name")
        _require(isinstance(name, str), role, f"delegation {index} has no name")
        if not valid_delegation_name(name) or posixpath.dirname(name) != role:
            raise DelegationError(role, f"delegation {name!r} is not a valid child role of {role}")
        _require(name not in specs, role, f"delegation {name!r} is listed twice")
        paths = entry.get("paths", [])
        _require(isinstance(paths, list) and all(isinstance(p, str) for p in paths), role,
                 f"delegation {name!r} paths is not a list of strings")
        _limit(role, f"paths for delegation {name}", len(paths), MAX_PATHS_PER_DELEGATION)
        specs[name] = parse_role_spec(role, name, entry, keys, restrict_paths(effective_paths, tuple(paths)))
    return keys, specs


# --- the trusted state -------------------------------------------------------------------------


class TrustedRepository:
    """The verified trust data of one GUN. Load order enforced: root -> timestamp -> snapshot ->
    targets -> delegations; misuse raises LoadOrderError."""

    def __init__(
        self,
        gun: str,
        now: datetime,
        *,
        trusted_root: bytes | None = None,
        seen_versions: Mapping[str, int] | None = None,
        server: str | None = None,
        interrupt: Callable[[], None] = _never_late,
        pinned_roots: Sequence[RootPin] = (),
    ) -> None:
        """`interrupt` is called between steps of the work and raises (e.g. DeadlineExceeded) to stop it;
        the verifier itself never reads a clock. `pinned_roots`: root.json must be signed by this
        material (check_pinned_root), and no trusted root may be given (no trust on first use)."""
        if pinned_roots and trusted_root is not None:
            raise LoadOrderError("a pinned repository has no trust-on-first-use root")
        self._pins = tuple(pinned_roots)
        self.gun = gun
        self.server = server
        self.now = as_utc(now)
        # How the root was trusted ("pinned", "recorded", "first-use"): said by whoever chose the
        # anchor (the service), reported in the facts as `root_trust`.
        self.root_trust = "pinned" if pinned_roots else ("first-use" if trusted_root is None else "recorded")
        self._interrupt = interrupt
        self._key_count = 0
        self._seen: dict[str, int] = {}
        for role, version in (seen_versions or {}).items():
            if isinstance(role, str) and _is_int(version):
                self._seen[role] = version
        self._root: Root | None = None
        self._root_updated = False
        self._timestamp: Envelope | None = None
        self._snapshot_listing: tuple[int, dict[str, bytes]] = (0, {})
        self._snapshot_meta: dict[str, tuple[int, dict[str, bytes]]] | None = None
        self._snapshot: Envelope | None = None
        self._targets: dict[str, LoadedTargets] = {}
        if trusted_root is not None:
            envelope, keys, roles = parse_root(trusted_root, gun)
            root = Root(envelope, keys, roles, ())
            _check_root_certificates(root, gun)
            root.signed_by = check_signatures(roles["root"], envelope, None)
            self._root = root
            self._seen["root"] = max(self._seen.get("root", 0), envelope.version)

    # -- helpers --

    def _check_version(self, envelope: Envelope) -> None:
        seen = self._seen.get(envelope.role)
        if seen is not None and envelope.version < seen:
            raise RollbackAttack(envelope.role, f"version {envelope.version} is lower than seen version {seen}")

    def _check_expiry(self, envelope: Envelope) -> None:
        if self.now >= envelope.expires:
            raise ExpiredMetadata(envelope.role, f"expired at {envelope.expires.isoformat()}")

    def _require_root(self) -> Root:
        if self._root is None:
            raise LoadOrderError("root must be loaded first (update_root)")
        return self._root

    # -- loading --

    def update_root(self, data: bytes) -> None:
        """Load root.json: trust on first use, or a rotation signed by the trusted root."""
        if self._timestamp is not None:
            raise LoadOrderError("root cannot be updated after timestamp was loaded")
        envelope, keys, roles = parse_root(data, self.gun)
        new = Root(envelope, keys, roles, ())
        # The cheap checks first: no certificate is read for a root that is stale anyway.
        self._check_version(envelope)
        self._check_expiry(envelope)
        self._interrupt()
        trusted = self._root
        if trusted is not None:
            # The trusted root's certificates may have expired: that is why roots are rotated.
            try:
                check_signatures(trusted.roles["root"], envelope, None, self._interrupt)
            except TrustError as exc:
                raise BadRootRotation(
                    "root", f"root version {envelope.version} is not signed by the trusted root's keys "
                    f"(version {trusted.envelope.version}): {exc.reason}"
                ) from exc
            if envelope.version < trusted.envelope.version:
                raise RollbackAttack(
                    "root", f"version {envelope.version} is lower than trusted version {trusted.envelope.version}"
                )
        _check_root_certificates(new, self.gun)
        new.signed_by = check_signatures(roles["root"], envelope, self.now, self._interrupt)
        if self._pins:
            check_pinned_root(new, self.gun, self._pins, self.now)
        self._root = new
        self._root_updated = True

    def update_timestamp(self, data: bytes) -> None:
        root = self._require_root()
        if self._timestamp is not None:
            raise LoadOrderError("timestamp is already loaded")
        if not self._root_updated:
            # The remembered root is the final root: it must still be current.
            check_signatures(root.roles["root"], root.envelope, self.now)
            self._check_expiry(root.envelope)
        envelope = parse_envelope("timestamp", data, "timestamp")
        check_signatures(root.roles["timestamp"], envelope, self.now, self._interrupt)
        self._check_version(envelope)
        self._check_expiry(envelope)
        meta = _object("timestamp", envelope.signed.get("meta"), "meta is not an object")
        _require("snapshot" in meta, "timestamp", "meta has no snapshot entry")
        self._snapshot_listing = parse_meta("timestamp", meta["snapshot"], "snapshot")
        self._timestamp = envelope

    def update_snapshot(self, data: bytes) -> None:
        root = self._require_root()
        if self._timestamp is None:
            raise LoadOrderError("timestamp must be loaded before snapshot")
        if self._snapshot is not None:
            raise LoadOrderError("snapshot is already loaded")
        if not isinstance(data, (bytes, bytearray)):
            raise MalformedMetadata("snapshot", "snapshot.json must be given as bytes")
        check_meta("snapshot", bytes(data), self._snapshot_listing, "timestamp.json")
        envelope = parse_envelope("snapshot", data, "snapshot")
        check_signatures(root.roles["snapshot"], envelope, self.now, self._interrupt)
        self._check_version(envelope)
        self._check_expiry(envelope)
        meta_raw = _object("snapshot", envelope.signed.get("meta"), "meta is not an object")
        _limit("snapshot", "meta entries", len(meta_raw), MAX_META_ENTRIES)
        meta = {name: parse_meta("snapshot", entry, name) for name, entry in meta_raw.items()}
        if "targets" not in meta:
            raise MissingRole("targets", "snapshot.json does not list targets")
        if "root" in meta:
            check_meta("root", root.envelope.raw, meta["root"], "snapshot.json")
        self._snapshot_meta = meta
        self._snapshot = envelope

    def update_targets(self, data: bytes) -> None:
        root = self._require_root()
        if self._snapshot_meta is None:
            raise LoadOrderError("snapshot must be loaded before targets")
        if "targets" in self._targets:
            raise LoadOrderError("targets is already loaded")
        self._load_targets_role(root.roles["targets"], data)

    def update_delegation(self, role: str, data: bytes) -> None:
        if not isinstance(role, str) or not valid_delegation_name(role):
            raise DelegationError(str(role), "not a valid delegation role name")
        if "targets" not in self._targets:
            raise LoadOrderError("targets must be loaded before delegations")
        if role in self._targets:
            raise LoadOrderError(f"{role} is already loaded")
        _limit(role, "delegated roles in the repository", len(self._targets), MAX_ROLES)
        parent_name = posixpath.dirname(role)
        parent = self._targets.get(parent_name)
        if parent is None:
            raise LoadOrderError(f"{parent_name} must be loaded before {role}")
        spec = parent.delegations.get(role)
        if spec is None:
            raise DelegationError(role, f"{parent_name} does not delegate to this role")
        self._load_targets_role(spec, data)

    def _load_targets_role(self, spec: RoleSpec, data: bytes) -> None:
        assert self._snapshot_meta is not None
        role = spec.name
        listing = self._snapshot_meta.get(role)
        if listing is None:
            raise MissingRole(role, "snapshot.json does not list this role")
        if not isinstance(data, (bytes, bytearray)):
            raise MalformedMetadata(role, f"{role}.json must be given as bytes")
        check_meta(role, bytes(data), listing, "snapshot.json")
        self._interrupt()
        envelope = parse_envelope(role, data, "targets")
        signed_by = check_signatures(spec, envelope, self.now, self._interrupt)
        self._check_version(envelope)
        self._check_expiry(envelope)
        targets = parse_targets(role, envelope.signed)
        if spec.paths is not None:
            index = PrefixIndex(spec.paths)
            for name in targets:
                if not index.covers(name):
                    shown = list(spec.paths[:5]) + (["..."] if len(spec.paths) > 5 else [])
                    raise DelegationError(role, f"target {name!r} is outside the role's delegated paths {shown}")
        self._interrupt()
        keys, delegations = parse_delegations(role, envelope.signed, spec.paths)
        self._key_count += len(keys)
        _limit(role, "delegation keys in the repository", self._key_count, MAX_KEYS)
        self._targets[role] = LoadedTargets(spec, envelope, signed_by, targets, delegations, keys)

    def pending_delegations(self) -> list[str]:
        """Delegations to load next: delegated by a loaded parent, listed in the snapshot, not loaded."""
        if self._snapshot_meta is None:
            return []
        pending = [
            child
            for loaded in self._targets.values()
            for child in loaded.delegations
            if child in self._snapshot_meta and child not in self._targets
        ]
        return sorted(set(pending), key=lambda name: (name.count("/"), name))

    def missing(self, role: str) -> NoReturn:
        """The server answered 404 for a role the snapshot lists: the trust data is incomplete."""
        raise MissingRole(role, "listed in snapshot.json but the server does not serve it")

    # -- results --

    @property
    def root_bytes(self) -> bytes:
        return self._require_root().envelope.raw

    @property
    def root_keyids(self) -> tuple[str, ...]:
        """The root role's key IDs in the root in use (what `ostiary trust pins` shows)."""
        return self._require_root().roles["root"].keyids

    @property
    def versions(self) -> dict[str, int]:
        result = dict(self._seen)
        envelopes: list[Envelope] = [loaded.envelope for loaded in self._targets.values()]
        if self._root is not None:
            envelopes.append(self._root.envelope)
        envelopes += [e for e in (self._timestamp, self._snapshot) if e is not None]
        for envelope in envelopes:
            result[envelope.role] = max(result.get(envelope.role, envelope.version), envelope.version)
        return result

    @property
    def loaded_roles(self) -> list[str]:
        return list(self._targets)

    def target_digests(self) -> dict[str, dict[str, str]]:
        """tag -> {role: "sha256:<hex>"} over every loaded targets role."""
        result: dict[str, dict[str, str]] = {}
        for role, loaded in self._targets.items():
            for name, digest in loaded.targets.items():
                if digest is not None:
                    result.setdefault(name, {})[role] = digest
        return result

    def docker_release(self, tag: str) -> tuple[str | None, str | None]:
        """(digest, None) for the digest `docker pull` resolves `tag` to, or (None, why it refuses).

        Docker asks notary for the target in targets/releases, then in targets, each a breadth-first
        walk of that role and the delegations below it (children in the order their parent lists
        them). The first role naming the tag decides: an entry from any role other than those two
        (e.g. targets/releases/x or targets/alice) or one without a sha256 is a refusal, never a
        fall-back to a later role.
        """
        for start in (RELEASES_ROLE, "targets"):
            for role in self._walk_from(start):
                targets = self._targets[role].targets
                if tag not in targets:
                    continue
                if role not in (RELEASES_ROLE, "targets"):
                    return None, f"{tag!r} is first found in {role}, which docker does not release from"
                digest = targets[tag]
                if digest is None:
                    return None, f"{tag!r} in {role} has no sha256 hash"
                return digest, None
        return None, f"{tag!r} is not signed in {RELEASES_ROLE} or targets"

    def _walk_from(self, start: str) -> list[str]:
        """Loaded roles of the subtree at `start`, breadth first, children in their parent's order."""
        if start not in self._targets:
            return []
        order = [start]
        for role in order:
            order.extend(child for child in self._targets[role].delegations if child in self._targets)
        return order

    def all_keys(self) -> dict[str, Key]:
        keys: dict[str, Key] = dict(self._require_root().keys)
        for loaded in self._targets.values():
            keys.update(loaded.delegation_keys)
        return keys

    def facts(
        self,
        tag: str | None,
        digest: str | None,
        signers: Sequence[tuple[str, str, str]],
        *,
        server: str | None = None,
    ) -> dict[str, Any]:
        """The facts document (docs/internals.md) with verified True. Requires everything loaded."""
        if "targets" not in self._targets:
            raise LoadOrderError("targets must be loaded before facts")
        pending = self.pending_delegations()
        if pending:
            raise LoadOrderError(f"delegations not loaded yet: {', '.join(pending)}")
        roles = {
            role: {
                "keyids": list(loaded.spec.keyids),
                "threshold": loaded.spec.threshold,
                "signed_by": list(loaded.signed_by),
            }
            for role, loaded in sorted(self._targets.items())
        }
        return facts_module.build_facts(
            server=server if server is not None else self.server,
            gun=self.gun,
            tag=tag,
            digest=digest,
            digests=self.target_digests(),
            release=self.docker_release,
            now=self.now,
            roles=roles,
            signers=signers,
            keys=[(key.keyid, key.keytype, key.public) for key in self.all_keys().values()],
            root_trust=self.root_trust,
        )


def check_rotation(gun: str, trusted_root: bytes, new_root: bytes, now: datetime) -> None:
    """Raise unless `new_root` is `trusted_root` or a rotation of it as TUF requires (signed by the
    trusted root's keys to its threshold and by its own keys to its own, version not lower).

    Pure; used to decide between two roots recorded by different processes."""
    if trusted_root == new_root:
        return
    TrustedRepository(gun, now, trusted_root=trusted_root).update_root(new_root)


def load_all(repo: TrustedRepository, role_bytes: Callable[[str], bytes | None]) -> TrustedRepository:
    """Walk a repository whose role documents are already at hand (fixtures, archives, benchmarks).

    `role_bytes(role)` returns the bytes of "root", "timestamp", "snapshot", "targets" or a
    delegation, or None when that role is not available (a delegation the snapshot lists but
    nobody serves raises MissingRole, as from a server). The network walk lives in service.py.
    """
    for role, update in (
        ("root", repo.update_root),
        ("timestamp", repo.update_timestamp),
        ("snapshot", repo.update_snapshot),
        ("targets", repo.update_targets),
    ):
        data = role_bytes(role)
        if data is None:
            raise MissingRole(role, "not available")
        update(data)
    while pending := repo.pending_delegations():
        for role in pending:
            data = role_bytes(role)
            if data is None:
                repo.missing(role)
            else:
                repo.update_delegation(role, data)
    return repo
