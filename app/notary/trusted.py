"""The trusted-repository state machine (python-tuf's TrustedMetadataSet): verified metadata in, one
verified state out. No I/O and no clock of its own: the caller fetches the documents (walker.py) and
passes the reference time `now`, the only time any check uses. Parsing and the per-document checks are
in metadata.py, pinned roots in pins.py; facts.py builds the facts document from plain values, which
`facts()` hands it. Every failure is a precise `TrustError` subclass naming the role (errors.py).

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
  DISTINCT PUBLIC KEYS (not key IDs: one key listed as ecdsa and as ecdsa-x509 is one signer) of the role
  whose signature verified with a method fit for the key type (ecdsa raw
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

Usage (walker.walk does the loading below; use it rather than repeating it):

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

import posixpath
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

from app.notary import facts as facts_module
from app.notary.errors import (
    BadRootRotation,
    DelegationError,
    ExpiredMetadata,
    LoadOrderError,
    MalformedMetadata,
    MissingRole,
    RollbackAttack,
    TrustError,
)
from app.notary.keys import as_utc
from app.notary.metadata import (
    MAX_KEYS,
    MAX_ROLES,
    RELEASES_ROLE,
    Envelope,
    Key,
    PrefixIndex,
    RoleSpec,
    Root,
    Snapshot,
    Targets,
    Timestamp,
    check_limit,
    check_meta,
    check_root_certificates,
    check_signatures,
    is_int,
    never_late,
    parse_delegations,
    parse_envelope,
    parse_targets,
    read_root,
    read_snapshot,
    read_timestamp,
    valid_delegation_name,
)
from app.notary.pins import RootPin, check_pinned_root

# Bytes of memory per kept item (measured with tracemalloc on forged repositories, tests/trust/
# test_budget.py): a target is a dict slot and two str objects besides its characters.
TARGET_OVERHEAD = 160
KEY_OVERHEAD = 4096
ROLE_OVERHEAD = 4096
REPOSITORY_OVERHEAD = 16384

# Facts documents kept per repository (one per tag/digest/signers asked for; cleared when full).
FACTS_MEMO_SIZE = 64


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
        interrupt: Callable[[], None] = never_late,
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
        self._facts_memo: dict[tuple, dict[str, Any]] = {}
        self._kept: int | None = None
        self._seen: dict[str, int] = {}
        for role, version in (seen_versions or {}).items():
            if isinstance(role, str) and is_int(version):
                self._seen[role] = version
        self._root: Root | None = None
        self._root_updated = False
        self._timestamp: Timestamp | None = None
        self._snapshot: Snapshot | None = None
        self._targets: dict[str, Targets] = {}
        if trusted_root is not None:
            root = read_root(trusted_root, gun)
            check_root_certificates(root, gun)
            root.signed_by = check_signatures(root.roles["root"], root.envelope, None)
            self._root = root
            self._seen["root"] = max(self._seen.get("root", 0), root.envelope.version)

    # -- helpers --

    def _check_version(self, envelope: Envelope) -> None:
        seen = self._seen.get(envelope.role)
        if seen is not None and envelope.version < seen:
            raise RollbackAttack(
                envelope.role, f"version {envelope.version} is lower than seen version {seen}"
            )

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
        new = read_root(data, self.gun)
        envelope = new.envelope
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
                    "root",
                    f"root version {envelope.version} is not signed by the trusted root's keys "
                    f"(version {trusted.envelope.version}): {exc.reason}",
                ) from exc
            if envelope.version < trusted.envelope.version:
                raise RollbackAttack(
                    "root",
                    f"version {envelope.version} is lower than trusted version {trusted.envelope.version}",
                )
        check_root_certificates(new, self.gun)
        new.signed_by = check_signatures(new.roles["root"], envelope, self.now, self._interrupt)
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
        self._timestamp = read_timestamp(envelope)

    def update_snapshot(self, data: bytes) -> None:
        root = self._require_root()
        if self._timestamp is None:
            raise LoadOrderError("timestamp must be loaded before snapshot")
        if self._snapshot is not None:
            raise LoadOrderError("snapshot is already loaded")
        if not isinstance(data, (bytes, bytearray)):
            raise MalformedMetadata("snapshot", "snapshot.json must be given as bytes")
        check_meta("snapshot", bytes(data), self._timestamp.snapshot, "timestamp.json")
        envelope = parse_envelope("snapshot", data, "snapshot")
        check_signatures(root.roles["snapshot"], envelope, self.now, self._interrupt)
        self._check_version(envelope)
        self._check_expiry(envelope)
        snapshot = read_snapshot(envelope)
        meta = snapshot.meta
        if "targets" not in meta:
            raise MissingRole("targets", "snapshot.json does not list targets")
        if "root" in meta:
            check_meta("root", root.envelope.raw, meta["root"], "snapshot.json")
        self._snapshot = snapshot

    def update_targets(self, data: bytes) -> None:
        root = self._require_root()
        if self._snapshot is None:
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
        check_limit(role, "delegated roles in the repository", len(self._targets), MAX_ROLES)
        parent_name = posixpath.dirname(role)
        parent = self._targets.get(parent_name)
        if parent is None:
            raise LoadOrderError(f"{parent_name} must be loaded before {role}")
        spec = parent.delegations.get(role)
        if spec is None:
            raise DelegationError(role, f"{parent_name} does not delegate to this role")
        self._load_targets_role(spec, data)

    def _load_targets_role(self, spec: RoleSpec, data: bytes) -> None:
        assert self._snapshot is not None
        role = spec.name
        listing = self._snapshot.meta.get(role)
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
                    raise DelegationError(
                        role, f"target {name!r} is outside the role's delegated paths {shown}"
                    )
        self._interrupt()
        keys, delegations = parse_delegations(role, envelope.signed, spec.paths)
        self._key_count += len(keys)
        check_limit(role, "delegation keys in the repository", self._key_count, MAX_KEYS)
        # Kept: what decisions read (targets, delegations, keys, who signed, version, expiry); the
        # document itself (bytes, parsed JSON, canonical form, signatures) is dropped once verified.
        self._targets[role] = Targets(spec, _verified_only(envelope), signed_by, targets, delegations, keys)

    def pending_delegations(self) -> list[str]:
        """Delegations to load next: delegated by a loaded parent, listed in the snapshot, not loaded."""
        if self._snapshot is None:
            return []
        pending = [
            child
            for loaded in self._targets.values()
            for child in loaded.delegations
            if child in self._snapshot.meta and child not in self._targets
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
        envelopes += [loaded.envelope for loaded in (self._timestamp, self._snapshot) if loaded is not None]
        for envelope in envelopes:
            result[envelope.role] = max(result.get(envelope.role, envelope.version), envelope.version)
        return result

    def listed_bytes(self) -> int:
        """The bytes snapshot.json lists for targets and every delegation: what the rest of the walk
        may download at most (each document must have exactly its listed length)."""
        if self._snapshot is None:
            raise LoadOrderError("snapshot must be loaded before listed_bytes")
        return sum(
            length
            for role, (length, _hashes) in self._snapshot.meta.items()
            if role == "targets" or role.startswith("targets/")
        )

    def kept_bytes(self) -> int:
        """About how many bytes of memory this verified repository holds (what the trust cache
        counts against its budget): the targets of every role (names and digests as Python strings
        in a dict), the keys, and root.json. Computed once; a verified repository does not change."""
        if self._kept is None:
            size = (
                REPOSITORY_OVERHEAD + len(self.root_bytes) if self._root is not None else REPOSITORY_OVERHEAD
            )
            for loaded in self._targets.values():
                size += ROLE_OVERHEAD + KEY_OVERHEAD * len(loaded.delegation_keys)
                for name, digest in loaded.targets.items():
                    size += TARGET_OVERHEAD + len(name) + (len(digest) if digest else 0)
            if self._root is not None:
                size += KEY_OVERHEAD * len(self._root.keys)
            self._kept = size
        return self._kept

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
        """The facts document (docs/internals.md) with verified True. Requires everything loaded.

        Kept per (tag, digest, signers, server): a verified repository does not change (a refresh
        that finds new trust data walks a new one), and the same images are admitted again and
        again. Each call returns its own top-level dict (callers set keys on it); what it holds
        is shared and only read."""
        memo_key = (tag, digest, tuple(signers), server)
        kept = self._facts_memo.get(memo_key)
        if kept is not None:
            return dict(kept)
        built = self._build_facts(tag, digest, signers, server)
        if len(self._facts_memo) >= FACTS_MEMO_SIZE:
            self._facts_memo.clear()
        self._facts_memo[memo_key] = built
        return dict(built)

    def _build_facts(
        self, tag: str | None, digest: str | None, signers: Sequence[tuple[str, str, str]], server: str | None
    ) -> dict[str, Any]:
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
            root_pins=[pin.fingerprint for pin in self._pins],
        )


def _verified_only(envelope: Envelope) -> Envelope:
    """The envelope of a verified role without its document: role, version and expiry only."""
    return Envelope(envelope.role, b"", {}, [], b"", envelope.version, envelope.expires)


def check_rotation(gun: str, trusted_root: bytes, new_root: bytes, now: datetime) -> None:
    """Raise unless `new_root` is `trusted_root` or a rotation of it as TUF requires (signed by the
    trusted root's keys to its threshold and by its own keys to its own, version not lower).

    Pure; used to decide between two roots recorded by different processes."""
    if trusted_root == new_root:
        return
    TrustedRepository(gun, now, trusted_root=trusted_root).update_root(new_root)
