"""A token bucket: at most `rate` takes per second on average, `burst` at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ):
        if rate <= 0:
            raise ValueError("a token bucket needs a rate above 0")
        self.rate = rate
        self.burst = max(burst, 1.0)
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep if sleep is not None else self._stop.wait
        self._tokens = self.burst
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Wait for a token; False when the bucket was closed while waiting."""
        while True:
            with self._lock:
                now = self._clock()
                self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
                self._at = now
                if self._tokens >= 1.0 - 1e-9:  # float rounding must not leave a waiter spinning
                    self._tokens = max(self._tokens - 1.0, 0.0)
                    return True
                wait = (1.0 - self._tokens) / self.rate
            if self._stop.is_set():
                return False
            self._sleep(wait)
            if self._stop.is_set():
                return False

    def close(self) -> None:
        """Wake and refuse every waiter (the audit is stopping)."""
        self._stop.set()
