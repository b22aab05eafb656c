"""The one bounded LRU in Ostiary, with an optional time-to-live per entry (injectable clock) and an
optional byte budget (for caches whose entries a request chooses the size of)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from app import jsonio

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def json_size(key: object, value: object) -> int:
    """An entry's weight for a byte budget: the length of its key and value as JSON (cheap, and
    close to the memory that strings hold; nested dicts and lists hold a few times more)."""
    return len(jsonio.dumps(key, default=str)) + len(jsonio.dumps(value, default=str))


class TTLCache(Generic[K, V]):
    """A small thread-safe LRU with a time-to-live per entry (``ttl=float("inf")``: none).

    With ``size`` (a cheap estimate of an entry's bytes, e.g. the length of its serialized key and
    value), the entries together stay within ``max_bytes`` as well as ``max_entries``: the least
    recently used go first, and an entry larger than the whole budget is not kept at all.
    """

    def __init__(
        self,
        ttl: float,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_bytes: int | None = None,
        size: Callable[[K, V], int] | None = None,
    ):
        if (max_bytes is None) != (size is None):
            raise ValueError("max_bytes and size go together")
        self._ttl = ttl
        self._max = max_entries
        self._max_bytes = max_bytes
        self._size = size
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> tuple[bool, V | None]:
        """``(True, value)`` when a fresh entry exists, else ``(False, None)``."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return False, None
            expires, value, _ = item
            if self._clock() >= expires:
                self._remove(key)
                return False, None
            self._items.move_to_end(key)
            return True, value

    def put(self, key: K, value: V) -> None:
        size = self._size(key, value) if self._size is not None else 0
        with self._lock:
            self._remove(key)
            if self._max_bytes is not None and size > self._max_bytes:
                return
            self._items[key] = (self._clock() + self._ttl, value, size)
            self._bytes += size
            while len(self._items) > self._max or (
                self._max_bytes is not None and self._bytes > self._max_bytes
            ):
                _, (_, _, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def _remove(self, key: K) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self._bytes -= item[2]

    def pop(self, key: K) -> None:
        with self._lock:
            self._remove(key)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def bytes(self) -> int:
        """The estimated bytes of the entries kept (0 without a byte budget)."""
        with self._lock:
            return self._bytes
