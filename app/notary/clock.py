"""The clocks of the trust core, in one place: nothing else in app/notary reads the time.

The state machine (trusted.py) takes a reference time; the service (service.py) takes a wall clock
(for that reference time and record stamps) and monotonic clocks (cache ages, remembered failures,
deadlines) as arguments. These are the real ones, the defaults wherever a caller injects none.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utcnow() -> datetime:
    """The wall clock, as an aware UTC datetime."""
    return datetime.now(UTC)


def monotonic() -> float:
    """The monotonic clock of deadlines and ages (seconds)."""
    return time.monotonic()
