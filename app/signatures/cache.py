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

Notation's facts also depend on the verification time (a certificate's validity, a signature's
expiry, checked now): such an entry is kept with the moments around the verification time at which
the answer would change (`valid_from`, `valid_until`), and served only to a verifier's clock (`now`:
an offline run's `--at`) strictly between the two.

Single flight: concurrent misses of one requirement (a Deployment scaled to 50 replicas, a burst of
the same unsigned image) verify once. Inside `fly()` (`@SignatureCache.single_flight` on a
verifier's `verify`), the first miss of a (format, image reference, requirement, material,
credentials) leads: it reads and verifies; the others wait for its facts, each until its own
deadline (then a failure of its own, `SharedVerificationFailed`, never a success). The leader's
facts, a failure included, are every waiter's answer, except a failure for want of an answer when
the leader ran out of its own, earlier deadline: a waiter with time left then verifies again. Only a
success is kept. A leader that raises releases its waiters with a failure (`fly` lands every flight
it led, whatever happens). Registry credentials are part of the flight's key, so a leader refused
with other pull secrets never answers for an admission with its own.
Counted as `shared_verifications`. `ttl` 0 (no_cache()) keeps nothing and shares nothing.

Both maps are LRUs bounded in entries and in bytes (app/lru.py). Counted for the metrics
(`ostiary_signature_cache_*`, app/metrics.py).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from app.images import ImageRef
from app.lru import TTLCache, json_size
from app.notary import clock as clocks
from app.signatures.port import SignatureRequest
from app.signatures.registry import Manifest, NoManifest, RegistryUnavailable

FACTS_ENTRIES = 4096
FACTS_BYTES = 16 << 20  # a requirement's facts are a few KiB (at most 32 signatures, bounded errors)
TAG_ENTRIES = 4096
TAG_BYTES = 2 << 20
STAT_NAMES = ("hits", "misses", "stored", "tag_hits", "tag_misses", "shared_verifications")

# A leader that landed within this of its deadline ran out of time; a waiter with at least RETRY_AT_LEAST
# left verifies again instead of taking that failure (as a Notary walk does: app/notary/service.py).
RAN_OUT_MARGIN = 0.1
RETRY_AT_LEAST = 0.5

Key = tuple[str, str, str, str, str, str]  # (format, registry, repository, digest, requirement, material)
# (format, registry, repository, tag or digest, requirement, material, credentials)
FlightKey = tuple[str, str, str, str, str, str, str]
# (valid_from, valid_until): served to a clock strictly between the two (epoch seconds; None: unbounded)
Window = tuple[float | None, float | None]
Lookup = tuple[str, Key, dict | None]


class _Manifests(Protocol):
    def manifest(
        self, image: ImageRef, reference: str, deadline: float, credentials: Sequence[tuple[str, str]] = ()
    ) -> Manifest | None: ...


class SharedVerificationFailed(RegistryUnavailable):
    """The verification of the same requirement that a concurrent admission led, which this one waited
    for, gave no answer before this admission's deadline, or raised: nothing was learnt here."""


class _Flight:
    """A verification in progress, which concurrent misses of the same requirement wait for."""

    def __init__(self, deadline: float) -> None:
        self.done = threading.Event()
        self.deadline = deadline  # the leader's (monotonic)
        self.ended: float | None = None  # when the leader landed it (monotonic)
        self.facts: dict | None = None  # the leader's answer; None when it raised
        self.window: Window = (None, None)  # when that answer holds (put's valid_from, valid_until)

    def ran_out(self, facts: dict, deadline: float) -> bool:
        """The leader's answer is a failure for want of an answer that came from running out of its own
        deadline, earlier than `deadline` (a waiter's), which leaves time to verify again."""
        return (
            getattr(facts, "unavailable", False) is True
            and self.ended is not None
            and self.ended >= self.deadline - RAN_OUT_MARGIN
            and clocks.monotonic() < deadline - RETRY_AT_LEAST
        )


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


def _credentials_id(request: SignatureRequest) -> str:
    parts = [str(len(request.credentials))] + [p for pair in request.credentials for p in pair]
    parts += [str(len(request.store_credentials))] + [p for pair in request.store_credentials for p in pair]
    return fingerprint(parts)


class _Verifier(Protocol):
    cache: SignatureCache


_V = TypeVar("_V", bound=_Verifier)


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
        self._facts: TTLCache[Key, tuple[Window, dict]] = TTLCache(
            self.ttl, max_entries, monotonic, max_bytes=max_bytes, size=json_size
        )
        self._tags: TTLCache[tuple[str, str, str], str] = TTLCache(
            self.ttl, TAG_ENTRIES, monotonic, max_bytes=TAG_BYTES, size=json_size
        )
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()
        self._flights: dict[FlightKey, _Flight] = {}
        self._flights_lock = threading.Lock()
        self._local = threading.local()  # `led`: the flights the running fly() leads on this thread

    def _count(self, name: str) -> None:
        with self._lock:
            self._stats[name] += 1

    def stats(self) -> dict[str, int]:
        """Counters since start (STAT_NAMES) and the gauges `entries`, `bytes`, `tags`."""
        with self._lock:
            counts = {name: self._stats[name] for name in STAT_NAMES}
        return {**counts, "entries": len(self._facts), "bytes": self._facts.bytes, "tags": len(self._tags)}

    # -- tag -> digest ------------------------------------------------------------------------------

    def digest(
        self,
        reader: _Manifests,
        request: SignatureRequest,
        deadline: float,
        manifests: list[Manifest] | None = None,
    ) -> str | None:
        """The manifest digest `request.image` names: the digest of a digest reference; for a tag, the
        sha256 of the manifest the registry serves (remembered `ttl` seconds; the manifest read is
        appended to `manifests` when given). None: no such manifest (not remembered). Raises the
        reader's ReadError."""
        image = request.image
        if image.digest is not None:
            return image.digest
        known = self._tag(image)
        if known is not None:
            self._count("tag_hits")
            return known
        self._count("tag_misses")
        manifest = reader.manifest(image, image.tag or "latest", deadline, request.credentials)
        if manifest is None:
            return None
        if manifests is not None:
            manifests.append(manifest)
        if self.ttl > 0:
            self._tags.put((image.registry, image.repository, image.tag or "latest"), manifest.digest)
        return str(manifest.digest)

    def _tag(self, image: ImageRef) -> str | None:
        """The digest remembered for the image's tag, if fresh (not counted)."""
        if self.ttl <= 0:
            return None
        hit, digest = self._tags.get((image.registry, image.repository, image.tag or "latest"))
        return digest if hit else None

    def resolve(
        self,
        reader: _Manifests,
        request: SignatureRequest,
        deadline: float,
        manifests: list[Manifest] | None = None,
    ) -> str:
        """digest(), raising NoManifest (a ReadError) when the registry has no manifest for the image."""
        digest = self.digest(reader, request, deadline, manifests)
        if digest is None:
            raise NoManifest(request.image)
        return digest

    def lookup(
        self,
        reader: _Manifests,
        request: SignatureRequest,
        deadline: float,
        format: str,
        material: str,
        *,
        now: float | None = None,
        manifests: list[Manifest] | None = None,
    ) -> Lookup:
        """(the digest, the facts key, the cached facts or None) of a requirement; `material` as in key(),
        `now` the verifier's clock for entries bounded in time (default: the cache's wall clock), and
        `manifests` as in digest(). Inside fly(), a miss that another admission is verifying already
        waits for it, and answers its facts. Raises the reader's ReadError, NoManifest when the
        registry has no manifest for the image, SharedVerificationFailed when the verification waited
        for gave no answer in time."""
        if self.ttl > 0:
            known = self._known(format, request, material, now)
            if known is not None:
                return known
            shared = self._join(format, request, material, deadline, now)
            if shared is not None:
                return shared
        digest = self.resolve(reader, request, deadline, manifests)
        key = self.key(format, request, digest, material)
        return digest, key, self.facts(key, now=now)

    def _known(
        self, format: str, request: SignatureRequest, material: str, now: float | None
    ) -> Lookup | None:
        """A fresh entry found without a read (a digest reference, or a remembered tag), counted as a hit."""
        image = request.image
        digest = image.digest or self._tag(image)
        if digest is None:
            return None
        key = self.key(format, request, digest, material)
        facts = self._fresh(key, now)
        if facts is None:
            return None
        self._count("hits")
        if image.digest is None:
            self._count("tag_hits")
        return digest, key, facts

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

    def _holds(self, window: Window, now: float | None) -> bool:
        valid_from, valid_until = window
        if valid_from is None and valid_until is None:
            return True
        moment = self._clock() if now is None else now
        return (valid_from is None or valid_from < moment) and (valid_until is None or moment < valid_until)

    def _fresh(self, key: Key, now: float | None) -> dict | None:
        if self.ttl <= 0:
            return None
        hit, value = self._facts.get(key)
        if not hit or value is None:
            return None
        window, facts = value
        if not self._holds(window, now):
            self._facts.pop(key)
            return None
        return copy.deepcopy(facts)

    def facts(self, key: Key, *, now: float | None = None) -> dict | None:
        """A copy of the facts kept under `key` while fresh (and `now` within their validity), else None
        (counted as a hit or a miss)."""
        facts = self._fresh(key, now)
        self._count("hits" if facts is not None else "misses")
        return facts

    def put(
        self, key: Key, facts: dict, valid_until: float | None = None, *, valid_from: float | None = None
    ) -> dict:
        """Keep `facts` (when their reads succeeded) until `ttl` or `valid_until` (epoch seconds), whichever
        comes first, and only for a clock after `valid_from`; returns `facts`. The flights this thread
        leads answer their waiters for that same time range only."""
        window = (valid_from, valid_until)
        for _, flight in getattr(self._local, "led", None) or ():
            flight.window = window
        empty = valid_from is not None and valid_until is not None and valid_until <= valid_from
        if self.ttl > 0 and facts.get("verified") is True and not empty:
            self._facts.put(key, (window, copy.deepcopy(facts)))
            self._count("stored")
        return facts

    def clear(self) -> None:
        self._facts.clear()
        self._tags.clear()

    # -- single flight ------------------------------------------------------------------------------

    def fly(self, work: Callable[[], dict]) -> dict:
        """`work()` (a verifier's verify), landing every flight it leads when it returns or raises: its
        facts are the waiters' answer; when it raised, they fail (SharedVerificationFailed)."""
        outer = getattr(self._local, "led", None)
        led: list[tuple[FlightKey, _Flight]] = []
        self._local.led = led
        facts: dict | None = None
        try:
            facts = work()
            return facts
        finally:
            self._local.led = outer
            for fkey, flight in led:
                self._land(fkey, flight, facts)

    @staticmethod
    def single_flight(
        verify: Callable[[_V, SignatureRequest, float], dict],
    ) -> Callable[[_V, SignatureRequest, float], dict]:
        """Decorates a verifier's `verify(request, deadline)` (`@SignatureCache.single_flight`): run
        inside its cache's fly(), so that concurrent misses of one requirement verify once."""

        @functools.wraps(verify)
        def run(self: _V, request: SignatureRequest, deadline: float) -> dict:
            return self.cache.fly(lambda: verify(self, request, deadline))

        return run

    def _land(self, fkey: FlightKey, flight: _Flight, facts: dict | None) -> None:
        flight.facts = copy.deepcopy(facts) if facts is not None else None
        flight.ended = clocks.monotonic()
        with self._flights_lock:
            if self._flights.get(fkey) is flight:
                del self._flights[fkey]
        flight.done.set()

    def _join(
        self, format: str, request: SignatureRequest, material: str, deadline: float, now: float | None
    ) -> Lookup | None:
        """None: this thread leads the verification (or runs outside fly(), alone, or the answer it
        waited for does not hold at `now`); else the answer of the one another admission led."""
        led: list[tuple[FlightKey, _Flight]] | None = getattr(self._local, "led", None)
        if led is None:
            return None
        image = request.image
        fkey: FlightKey = (
            format,
            image.registry,
            image.repository,
            image.digest or image.tag or "latest",
            _requirement_id(request.requirement),
            material,
            _credentials_id(request),
        )
        while True:
            with self._flights_lock:
                flight = self._flights.get(fkey)
                if flight is None:
                    flight = self._flights[fkey] = _Flight(deadline)
                    led.append((fkey, flight))
                    return None
            if any(mine is flight for _, mine in led):  # never wait for oneself
                return None
            self._count("shared_verifications")
            facts = self._follow(flight, request, format, deadline)
            # Its failure is ours too (same registry, same bytes), unless it ran out of its own, earlier
            # deadline: then lead (or join) a verification again, time permitting. A landed flight is
            # no longer in _flights, so this ends: each round's leader had a later deadline, ours last.
            if not flight.ran_out(facts, deadline):
                break
        if not self._holds(flight.window, now):
            return None
        digest = str(facts.get("digest") or "")
        return digest, self.key(format, request, digest, material), facts

    @staticmethod
    def _follow(flight: _Flight, request: SignatureRequest, format: str, deadline: float) -> dict:
        what = f"the {format} signatures of {request.image.normalized}"
        if not flight.done.wait(max(0.0, deadline - clocks.monotonic())):
            raise SharedVerificationFailed(
                f"{what} were being verified for a concurrent admission, which did not finish before this "
                "admission's deadline"
            )
        if flight.facts is None:
            raise SharedVerificationFailed(
                f"the verification of {what} for a concurrent admission, which this admission waited for, "
                "failed (an internal error, logged)"
            )
        return copy.deepcopy(flight.facts)


def no_cache() -> SignatureCache:
    """A cache that keeps nothing: every admission reads and verifies again (offline runs, tests)."""
    return SignatureCache(0.0)
