"""What Ostiary will not push to OPA: a set over the push budget, or a set OPA died of.

OPA holds every module in memory; a set too large for its memory limit gets it killed (the
kubelet's OOM kill of the sidecar, or the local OPA's), and pushing the same set again after each
restart kills it again, forever. PolicySync (app/policies/sync.py) asks this guard before every
push and tells it what happened after:

- ``refusal(modules)``: why a set must not be pushed, or None. A set over ``budget`` bytes of
  module text (Bounds.max_push_bytes: derived from OPA's memory limit) is refused outright; a set
  OPA died of ``deaths_to_hold`` times is refused until ``retry_after`` seconds have passed (then
  tried once more, the wait doubling after each further death), or until the set changes.
- ``attempted(modules)``: a push of this set is starting.
- ``lost_everything()``: OPA was found holding none of Ostiary's modules (it restarted). Within
  ``window`` seconds of a push, that push is blamed: one death of its set.
- ``settled(modules)``: OPA holds exactly this set; once it has held it for ``window`` seconds,
  it is the last set that fitted (``last_good``), the one kept when a later set is refused.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from app.policies.model import RegoModule

Modules = Mapping[str, RegoModule]


def set_bytes(modules: Modules) -> int:
    """The bytes of module text a set is: what Ostiary pushes and OPA parses and keeps."""
    return sum(len(m.source.encode()) for m in modules.values())


def fingerprint(modules: Modules) -> str:
    digest = hashlib.sha256()
    for module_id in sorted(modules):
        digest.update(module_id.encode() + b"\0" + modules[module_id].source.encode() + b"\0")
    return digest.hexdigest()


@dataclass
class _Deaths:
    count: int
    size: int
    not_before: float = 0.0  # when the set may be tried once more


class PushGuard:
    def __init__(
        self,
        budget: int,
        *,
        # An OPA holding a set near its memory limit may live a minute or more before a query or the
        # collector tips it over (95 s measured in tests/integration/test_opa_memory.py; the chart's
        # liveness probe adds up to 40 s): a death within ten minutes of a push blames that push.
        window: float = 600.0,
        deaths_to_hold: int = 2,
        retry_after: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        on_death: Callable[[], None] | None = None,
    ):
        self.budget = budget
        self.window = window
        self.deaths_to_hold = deaths_to_hold
        self.retry_after = retry_after
        self._clock = clock
        self._on_death = on_death
        self._lock = threading.Lock()
        self._deaths: dict[str, _Deaths] = {}
        self._attempt: tuple[str, int, float] | None = None  # (fingerprint, bytes, when)
        self._settled: tuple[str, float] | None = None  # (fingerprint, since when OPA holds it)
        self.last_good: dict[str, RegoModule] | None = None
        self.deaths_total = 0  # OPA deaths blamed on a push

    def refusal(self, modules: Modules) -> str | None:
        size = set_bytes(modules)
        if size > self.budget:
            return (
                f"the policy set is {size} bytes (policy data and Rego), over the budget of {self.budget} bytes that fits "
                "OPA's memory limit (ostiary serve --opa-push-budget, --opa-memory-limit); not pushed"
            )
        with self._lock:
            deaths = self._deaths.get(fingerprint(modules))
            if deaths is None or deaths.count < self.deaths_to_hold:
                return None
            left = deaths.not_before - self._clock()
            if left <= 0:
                return None
        return (
            f"OPA died {deaths.count} times within {self.window:.0f}s of being given this policy set "
            f"({deaths.size} bytes of policy data and Rego: too large for its memory limit?); not pushed again for "
            f"{left:.0f}s or until the policies change"
        )

    def killed(self, modules: Modules) -> bool:
        """Whether OPA died of this set often enough to hold it back."""
        with self._lock:
            deaths = self._deaths.get(fingerprint(modules))
            return deaths is not None and deaths.count >= self.deaths_to_hold

    def attempted(self, modules: Modules) -> None:
        with self._lock:
            self._attempt = (fingerprint(modules), set_bytes(modules), self._clock())

    def lost_everything(self) -> str | None:
        """OPA restarted: blame the last push if it was recent. Returns the set's fingerprint when
        that makes it a set to hold back."""
        with self._lock:
            self._settled = None
            if self._attempt is None:
                return None
            fp, size, when = self._attempt
            now = self._clock()
            if now - when > self.window:
                return None
            self._attempt = None
            self.deaths_total += 1
            deaths = self._deaths.setdefault(fp, _Deaths(0, size))
            deaths.count += 1
            held = deaths.count >= self.deaths_to_hold
            if held:
                deaths.not_before = now + self.retry_after * 2 ** (deaths.count - self.deaths_to_hold)
        if self._on_death is not None:
            self._on_death()
        return fp if held else None

    def settled(self, modules: Modules) -> None:
        fp = fingerprint(modules)
        now = self._clock()
        with self._lock:
            if self._settled is None or self._settled[0] != fp:
                self._settled = (fp, now)
                return
            if now - self._settled[1] >= self.window and (self._attempt is None or self._attempt[0] == fp):
                self.last_good = dict(modules)
                self._deaths.pop(fp, None)
                self._attempt = None
