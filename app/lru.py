"""The one bounded LRU in Ostiary, with an optional time-to-live per entry (injectable clock)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """A small thread-safe LRU with a time-to-live per entry (``ttl=float("inf")``: none)."""

    def __init__(self, ttl: float, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic):
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> tuple[bool, V | None]:
        """``(True, value)`` when a fresh entry exists, else ``(False, None)``."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return False, None
            expires, value = item
            if self._clock() >= expires:
                del self._items[key]
                return False, None
            self._items.move_to_end(key)
            return True, value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = (self._clock() + self._ttl, value)
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
