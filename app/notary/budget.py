"""Bytes of trust data the trust service may hold, so no trust server can exhaust the worker's memory.

A hostile (or just huge) repository within every count limit (docs/trust.md) can still be large:
20,000 targets in each of many delegations. Two ledgers bound what such data costs, overall and per
trust server, well below the container's memory limit (docs/security.md, "Memory"):

- in flight: the bytes of trust data walks are downloading and verifying now. Every chunk is
  counted as it arrives (NotaryClient's `account`), weighted by IN_FLIGHT_WEIGHT (parsing JSON and
  the structures kept cost several times the bytes received), and given back when the walk ends.
  A walk that would go over the per-server or overall budget stops and its images are denied
  ("... in flight ... at its budget"); other servers' walks go on. One repository may not exceed
  MAX_REPOSITORY_BYTES of trust data at all: denied, not cached.
- cached: app/notary/cache.py counts what each verified repository keeps (TrustedRepository.kept_bytes:
  its targets, keys and root; the documents themselves are dropped once verified) and evicts the
  least recently used entries to stay within its budgets.
"""

from __future__ import annotations

import threading
import time

from app.notary.errors import LimitExceeded

MAX_REPOSITORY_BYTES = 8 << 20  # trust data of one repository (all its documents), as received
IN_FLIGHT_WEIGHT = 6  # memory per byte received while a walk holds it (measured: docs/security.md)
IN_FLIGHT_BYTES = 144 << 20  # weighted bytes of all walks in progress
IN_FLIGHT_BYTES_PER_SERVER = 72 << 20  # weighted bytes of the walks of one trust server
CACHE_BYTES = 96 << 20  # kept bytes of all cached repositories
CACHE_BYTES_PER_SERVER = 48 << 20  # kept bytes of the cached repositories of one trust server


def size_text(size: int) -> str:
    """`size` bytes for a message: MiB from 1 MiB up, else bytes."""
    return f"{size / (1 << 20):g} MiB" if size >= 1 << 20 else f"{size} bytes"


class ByteBudget:
    """Bytes held, overall and per trust server, against two limits. Thread-safe."""

    def __init__(self, total: int, per_server: int):
        self.total = total
        self.per_server = per_server
        self._held = 0
        self._by_server: dict[str, int] = {}
        self._lock = threading.Condition()

    def take(self, server: str, size: int, wait: float = 0.0) -> bool:
        """Reserve `size` bytes for `server` when both limits allow it, waiting up to `wait` seconds
        for others to give some back; False (nothing taken) when they do not."""
        end = time.monotonic() + wait
        with self._lock:
            while True:
                mine = self._by_server.get(server, 0)
                if self._held + size <= self.total and mine + size <= self.per_server:
                    self._held += size
                    self._by_server[server] = mine + size
                    return True
                left = end - time.monotonic()
                if left <= 0 or size > self.per_server:
                    return False
                self._lock.wait(left)

    def give(self, server: str, size: int) -> None:
        with self._lock:
            self._lock.notify_all()
            self._held -= size
            left = self._by_server.get(server, 0) - size
            if left > 0:
                self._by_server[server] = left
            else:
                self._by_server.pop(server, None)

    @property
    def held(self) -> int:
        with self._lock:
            return self._held


class WalkBytes:
    """What one walk of one repository holds in flight. Use as a context manager: everything taken
    is given back when the walk ends.

    Once snapshot.json is verified the walk knows what the rest will weigh (the lengths snapshot
    lists for targets and every delegation): `reserve` takes all of it at once, waiting for other
    walks to give budget back, so walks queue for memory instead of each taking part of it and
    none finishing. `account` (NotaryClient's hook) counts every chunk as it arrives; what is not
    covered by the reservation (root, timestamp, snapshot, or bytes beyond what snapshot listed) is
    taken then, without waiting."""

    def __init__(
        self, budget: ByteBudget, server: str, gun: str, max_repository_bytes: int = MAX_REPOSITORY_BYTES
    ):
        self.budget = budget
        self.server = server
        self.gun = gun
        self.max_repository_bytes = max_repository_bytes
        self.received = 0
        self._taken = 0  # weighted bytes taken from the budget: received ones and the reservation
        self._closed = False
        self._lock = threading.Lock()  # sibling delegations arrive on several threads

    def _over_repository_limit(self, role: str) -> LimitExceeded:
        return LimitExceeded(
            role,
            f"trust data for {self.gun} is more than {size_text(self.max_repository_bytes)}, "
            "exceeding the limit for one repository; it is not verified or cached",
        )

    def _over_budget(self, role: str) -> LimitExceeded:
        return LimitExceeded(
            role,
            f"trust data in flight from {self.server} (or from all servers) is at its memory budget "
            f"({size_text(self.budget.per_server)} per server, {size_text(self.budget.total)} in all); "
            "try again shortly",
        )

    def _take(self, role: str, weighted: int, wait: float) -> None:
        """Take `weighted` bytes (outside our lock: it may wait) and hold them, or raise."""
        if not self.budget.take(self.server, weighted, wait):
            raise self._over_budget(role)
        with self._lock:
            if not self._closed:
                self._taken += weighted
                return
        self.budget.give(self.server, weighted)
        raise LimitExceeded(role, "the walk this download was for has ended")

    def reserve(self, role: str, listed: int, wait: float) -> None:
        """Hold the budget for `listed` more bytes (what snapshot.json lists), waiting up to `wait`
        seconds for it; refuse at once a repository that lists more than one may hold."""
        with self._lock:
            if self.received + listed > self.max_repository_bytes:
                raise self._over_repository_limit(role)
        self._take(role, listed * IN_FLIGHT_WEIGHT, wait)

    def account(self, role: str, size: int) -> None:
        """Count `size` more bytes of `role`; raise LimitExceeded when over a budget."""
        with self._lock:
            if self._closed:  # a fetch the walk abandoned (its deadline passed) is still reading
                raise LimitExceeded(role, "the walk this download was for has ended")
            self.received += size
            if self.received > self.max_repository_bytes:
                raise self._over_repository_limit(role)
            missing = self.received * IN_FLIGHT_WEIGHT - self._taken
        if missing > 0:
            self._take(role, missing, 0.0)

    def __enter__(self) -> WalkBytes:
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            taken, self._taken, self._closed = self._taken, 0, True
        self.budget.give(self.server, taken)
