"""In-memory state kept between admissions: verified repositories and trust-on-first-use roots.

Why two stores:

- `verified` holds, per (server, GUN), the last fully verified repository, the timestamp.json bytes it
  was verified with and the earliest `expires` of its roles. It is an LRU bounded in entries
  (`entries`) and in bytes (`max_bytes` overall, `max_bytes_per_server` for one trust server, counted
  by TrustedRepository.kept_bytes; app/notary/budget.py), and only a performance aid: an entry is
  served without network for `ttl` seconds and never once any of its roles has expired. After the
  TTL the service re-fetches timestamp.json; unchanged bytes renew the entry,
  anything else (or any failure) means a full walk or a denial, never the stale entry.
- `trusted` holds, per (server, GUN), the root bytes and the highest version of every role ever
  verified: the trust-on-first-use anchor and the rollback floor handed to the next TrustedRepository.
  It is separate (and larger) so that evicting a cached repository does not forget the root it was
  anchored to. It is bounded too, because memory is; an evicted anchor is re-learnt on first use again,
  which is the documented weakness of TOFU, not a new one.

All methods are thread-safe; none does I/O.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from app.notary import clock as clocks
from app.notary.budget import CACHE_BYTES, CACHE_BYTES_PER_SERVER
from app.notary.trusted import TrustedRepository

Key = tuple[str, str]  # (server URL, GUN)


@dataclass
class CachedRepository:
    repository: TrustedRepository  # verified
    timestamp_bytes: bytes
    expires: datetime  # the earliest `expires` among the roles it was verified with
    checked_at: float  # the injected monotonic clock's value at the last successful fetch or refresh
    size: int = 0  # bytes it holds (repository.kept_bytes()), counted against the cache's budgets


@dataclass
class TrustAnchor:
    root_bytes: bytes
    versions: dict[str, int] = field(default_factory=dict)


class TrustCache:
    def __init__(
        self,
        *,
        ttl: float,
        entries: int,
        anchors: int | None = None,
        monotonic: Callable[[], float] = clocks.monotonic,
        max_bytes: int = CACHE_BYTES,
        max_bytes_per_server: int = CACHE_BYTES_PER_SERVER,
    ):
        self.ttl = ttl
        self._entries = max(0, entries)
        self.max_bytes = max_bytes
        self.max_bytes_per_server = min(max_bytes_per_server, max_bytes)
        self._bytes = 0
        self._bytes_by_server: dict[str, int] = {}
        self._anchor_entries = anchors if anchors is not None else max(4096, 8 * self._entries)
        self._monotonic = monotonic
        self._verified: OrderedDict[Key, CachedRepository] = OrderedDict()
        self._anchors: OrderedDict[Key, TrustAnchor] = OrderedDict()
        self._lock = threading.Lock()

    # -- verified repositories ----------------------------------------------------------------------

    def lookup(self, key: Key) -> tuple[CachedRepository | None, bool]:
        """(entry, fresh): fresh means within the TTL; the caller still checks `expires` against its clock."""
        with self._lock:
            entry = self._verified.get(key)
            if entry is None:
                return None, False
            self._verified.move_to_end(key)
            return entry, self._monotonic() - entry.checked_at < self.ttl

    def store(self, key: Key, entry: CachedRepository) -> bool:
        """Keep `entry`, evicting the least recently used entries (of the same server first) to stay
        within the budgets; False (not kept) when it alone is over the per-server budget."""
        if self._entries == 0:
            return False
        server = key[0]
        with self._lock:
            self._drop(key)
            if entry.size > self.max_bytes_per_server:
                return False
            while self._bytes_by_server.get(server, 0) + entry.size > self.max_bytes_per_server:
                self._drop(next(k for k in self._verified if k[0] == server))
            while self._verified and (
                self._bytes + entry.size > self.max_bytes or len(self._verified) >= self._entries
            ):
                self._drop(next(iter(self._verified)))
            self._verified[key] = entry
            self._bytes += entry.size
            self._bytes_by_server[server] = self._bytes_by_server.get(server, 0) + entry.size
            return True

    def _drop(self, key: Key) -> None:
        """Remove `key`'s entry and its bytes (the lock is held)."""
        entry = self._verified.pop(key, None)
        if entry is None:
            return
        self._bytes -= entry.size
        left = self._bytes_by_server.get(key[0], 0) - entry.size
        if left > 0:
            self._bytes_by_server[key[0]] = left
        else:
            self._bytes_by_server.pop(key[0], None)

    @property
    def held_bytes(self) -> int:
        """Bytes held by the cached repositories (their kept_bytes)."""
        with self._lock:
            return self._bytes

    def renew(self, key: Key, entry: CachedRepository) -> None:
        """timestamp.json came back byte-for-byte the same: the entry is fresh again."""
        with self._lock:
            if self._verified.get(key) is entry:
                entry.checked_at = self._monotonic()

    def discard(self, key: Key) -> None:
        with self._lock:
            self._drop(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._verified)

    # -- trust on first use -----------------------------------------------------------------------

    def anchor(self, key: Key) -> TrustAnchor | None:
        with self._lock:
            anchor = self._anchors.get(key)
            if anchor is None:
                return None
            self._anchors.move_to_end(key)
            return TrustAnchor(anchor.root_bytes, dict(anchor.versions))

    def remember(self, key: Key, root_bytes: bytes, versions: Mapping[str, int]) -> None:
        """Record a verified repository's root and versions; versions only ever go up.

        Two admissions may verify the same repository at once; the root with the higher version wins
        and each role keeps the highest version either saw, so a slower, older walk cannot lower the
        rollback floor.
        """
        with self._lock:
            current = self._anchors.get(key)
            if current is None:
                self._anchors[key] = TrustAnchor(root_bytes, dict(versions))
            else:
                if versions.get("root", 0) >= current.versions.get("root", 0):
                    current.root_bytes = root_bytes
                for role, version in versions.items():
                    if version > current.versions.get(role, -1):
                        current.versions[role] = version
            self._anchors.move_to_end(key)
            while len(self._anchors) > self._anchor_entries:
                self._anchors.popitem(last=False)
