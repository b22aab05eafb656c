"""Verified results of the signature verifiers (simple signing, cosign key-based and keyless), kept
between admissions so that a ReplicaSet of 50 Pods reads the registry and verifies the signatures
once, not 50 times.

What is kept, and under which key (never a tag alone):

- `facts`: the facts one requirement gave (app/signatures/facts.py), keyed by everything they were
  computed from: the format, the image's registry and repository (where the signatures were looked
  for), the manifest digest they prove, the requirement as planned (its key Secrets, identities,
  store URL, ...: the facts echo it) and the fingerprint of the material it was verified with — the
  keys the Secrets hold now (cosign, simple) or the Sigstore trusted root (keyless). A key removed
  from or replaced in a Secret changes the fingerprint, so the next admission verifies again; a
  success for key A is never the answer for a requirement of key B. Only facts whose reads succeeded
  (`verified` true) are kept; a failed read or a bad key is never remembered.
- `tags`: tag -> manifest digest, for `ttl` seconds — the time a Notary v1 tag resolution is served
  from the trust cache (`serve --trust-cache-ttl`). A tag moved to an unsigned digest is seen at the
  latest `ttl` seconds later; meanwhile the tag keeps resolving to the signed digest it had, and the
  admitted Pod is pinned to that digest (never to the new one).

Freshness, as the Notary trust cache's: an entry is served for `ttl` seconds and never past the
earliest expiry of what it proved (a simple signature's OpenPGP expiry: `valid_until`); after that it
is verified again, and a failure then is a denial, never the old success. `ttl` 0 keeps nothing.

Both maps are LRUs bounded in entries and in bytes (app/lru.py). Counted for the metrics
(`ostiary_signature_cache_*`, app/metrics.py).
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from app.images import ImageRef
from app.lru import TTLCache, json_size
from app.notary import clock as clocks
from app.signatures.port import SignatureRequest
from app.signatures.registry import Manifest, NoManifest

FACTS_ENTRIES = 4096
FACTS_BYTES = 16 << 20  # a requirement's facts are a few KiB (at most 32 signatures, bounded errors)
TAG_ENTRIES = 4096
TAG_BYTES = 2 << 20
STAT_NAMES = ("hits", "misses", "stored", "tag_hits", "tag_misses")

Key = tuple[str, str, str, str, str, str]  # (format, registry, repository, digest, requirement, material)


class _Manifests(Protocol):
    def manifest(
        self, image: ImageRef, reference: str, deadline: float, credentials: Sequence[tuple[str, str]] = ()
    ) -> Manifest | None: ...


def fingerprint(parts: Iterable[str]) -> str:
    """One sha256 over `parts` in order (key fingerprints, a trusted root's digest)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode()
        h.update(len(data).to_bytes(4, "big") + data)
    return "sha256:" + h.hexdigest()


def _requirement_id(requirement: Mapping[str, Any]) -> str:
    text = json.dumps(requirement, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class SignatureCache:
    """Thread-safe; one per process, shared by the verifiers (runtime.py)."""

    def __init__(
        self,
        ttl: float = 60.0,
        *,
        max_entries: int = FACTS_ENTRIES,
        max_bytes: int = FACTS_BYTES,
        monotonic: Callable[[], float] = clocks.monotonic,
        clock: Callable[[], float] = time.time,
    ):
        self.ttl = max(0.0, ttl)
        self._clock = clock  # wall clock of `valid_until` (OpenPGP expiry times are epoch seconds)
        self._facts: TTLCache[Key, tuple[float | None, dict]] = TTLCache(
            self.ttl, max_entries, monotonic, max_bytes=max_bytes, size=json_size
        )
        self._tags: TTLCache[tuple[str, str, str], str] = TTLCache(
            self.ttl, TAG_ENTRIES, monotonic, max_bytes=TAG_BYTES, size=json_size
        )
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def stats(self) -> dict[str, int]:
        """Counters since start (STAT_NAMES) and the gauges `entries`, `bytes`, `tags`."""
        with self._lock:
            counts = {name: self._stats[name] for name in STAT_NAMES}
        return {**counts, "entries": len(self._facts), "bytes": self._facts.bytes, "tags": len(self._tags)}

    # -- tag -> digest ------------------------------------------------------------------------------

    def digest(self, reader: _Manifests, request: SignatureRequest, deadline: float) -> str | None:
        """The manifest digest `request.image` names: the digest of a digest reference; for a tag, the
        sha256 of the manifest the registry serves (remembered `ttl` seconds). None: no such manifest
        (not remembered). Raises the reader's ReadError."""
        image = request.image
        if image.digest is not None:
            return image.digest
        key = (image.registry, image.repository, image.tag or "latest")
        if self.ttl > 0:
            hit, digest = self._tags.get(key)
            if hit and digest is not None:
                self._count("tag_hits")
                return digest
        self._count("tag_misses")
        manifest = reader.manifest(image, image.tag or "latest", deadline, request.credentials)
        if manifest is None:
            return None
        if self.ttl > 0:
            self._tags.put(key, manifest.digest)
        return str(manifest.digest)

    def resolve(self, reader: _Manifests, request: SignatureRequest, deadline: float) -> str:
        """digest(), raising NoManifest (a ReadError) when the registry has no manifest for the image."""
        digest = self.digest(reader, request, deadline)
        if digest is None:
            raise NoManifest(request.image)
        return digest

    def lookup(
        self, reader: _Manifests, request: SignatureRequest, deadline: float, format: str, material: str
    ) -> tuple[str, Key, dict | None]:
        """(the digest, the facts key, the cached facts or None) of a requirement; `material` as in key().
        Raises the reader's ReadError, NoManifest when the registry has no manifest for the image."""
        digest = self.resolve(reader, request, deadline)
        key = self.key(format, request, digest, material)
        return digest, key, self.facts(key)

    # -- verified facts -----------------------------------------------------------------------------

    @staticmethod
    def key(format: str, request: SignatureRequest, digest: str, material: str) -> Key:
        """What a requirement's facts were computed from; `material`: fingerprint() of the keys or root."""
        image = request.image
        return (
            format,
            image.registry,
            image.repository,
            digest,
            _requirement_id(request.requirement),
            material,
        )

    def facts(self, key: Key) -> dict | None:
        """A copy of the facts kept under `key` while fresh, else None (counted as a hit or a miss)."""
        if self.ttl > 0:
            hit, value = self._facts.get(key)
            if hit and value is not None:
                valid_until, facts = value
                if valid_until is None or self._clock() < valid_until:
                    self._count("hits")
                    return copy.deepcopy(facts)
                self._facts.pop(key)
        self._count("misses")
        return None

    def put(self, key: Key, facts: dict, valid_until: float | None = None) -> dict:
        """Keep `facts` (when their reads succeeded) until `ttl` or `valid_until` (epoch seconds), whichever
        comes first; returns `facts`."""
        if self.ttl > 0 and facts.get("verified") is True:
            self._facts.put(key, (valid_until, copy.deepcopy(facts)))
            self._count("stored")
        return facts

    def clear(self) -> None:
        self._facts.clear()
        self._tags.clear()


def no_cache() -> SignatureCache:
    """A cache that keeps nothing: every admission reads and verifies again (offline runs, tests)."""
    return SignatureCache(0.0)
