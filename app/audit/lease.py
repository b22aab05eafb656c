"""One audit at a time across replicas: a ``coordination.k8s.io/v1`` Lease in the system namespace.

The holder renews it while it audits (and between audits, so the replica that audits stays the same);
another replica takes it only once it has not been renewed for ``leaseDurationSeconds``. Every
change carries the resourceVersion read, so two replicas racing for it cannot both win.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from app.kube.client import KubeApi, KubeError, object_path

log = logging.getLogger("ostiary.audit")

LEASE_NAME = "ostiary-audit"
AUDITED = "ostiary.dev/audited-at"  # annotation: when the last complete audit finished (epoch seconds)


def _seconds(text: object) -> float | None:
    if not isinstance(text, str | int | float):
        return None
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def micro_time(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: object) -> float | None:
    if not isinstance(text, str):
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


class Lease:
    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        identity: str,
        duration: int = 60,
        name: str = LEASE_NAME,
        clock: Callable[[], float] = time.time,
    ):
        self.api = api
        self.namespace = namespace
        self.identity = identity
        self.duration = duration
        self.name = name
        self.clock = clock
        self.path = object_path("coordination.k8s.io/v1", "leases", namespace, name)
        self.held_until = 0.0  # by our clock: when our hold lapses unless renewed
        self.audited_at: float | None = None  # the last complete audit by any holder (AUDITED annotation)

    def held(self) -> bool:
        return self.clock() < self.held_until

    def acquire(self) -> bool:
        """Take or renew the lease; False when another replica holds it (or the API failed)."""
        now = self.clock()
        try:
            lease = self.api.get(self.path)
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": self._spec(now, now, 0),
                }
                self.api.create(object_path("coordination.k8s.io/v1", "leases", self.namespace), body)
                self.held_until = now + self.duration
                return True
            spec = lease.get("spec") or {}
            self.audited_at = _seconds(((lease.get("metadata") or {}).get("annotations") or {}).get(AUDITED))
            holder = spec.get("holderIdentity")
            renewed = parse_micro_time(spec.get("renewTime")) or 0.0
            duration = int(spec.get("leaseDurationSeconds") or self.duration)
            if holder and holder != self.identity and renewed + duration > now:
                return False  # another replica audits
            transitions = int(spec.get("leaseTransitions") or 0)
            acquired = spec.get("acquireTime") if holder == self.identity else micro_time(now)
            if holder != self.identity:
                transitions += 1
            patch = {
                "metadata": {"resourceVersion": (lease.get("metadata") or {}).get("resourceVersion")},
                "spec": {**self._spec(now, now, transitions), "acquireTime": acquired},
            }
            self.api.patch(self.path, patch)
        except KubeError as exc:
            if exc.status != 409:
                log.warning("audit lease %s/%s: %s", self.namespace, self.name, exc)
            self.held_until = 0.0
            return False
        self.held_until = now + self.duration
        return True

    def mark_audited(self, at: float) -> None:
        """Note on the lease that an audit finished at `at`, so the next holder keeps the interval."""
        try:
            self.api.patch(self.path, {"metadata": {"annotations": {AUDITED: f"{at:.0f}"}}})
            self.audited_at = at
        except KubeError as exc:
            log.warning("audit lease %s/%s: could not note the audit: %s", self.namespace, self.name, exc)

    def release(self) -> None:
        """Give the lease up (on stop), so another replica need not wait for it to lapse."""
        if not self.held():
            return
        try:
            lease = self.api.get(self.path)
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                self.api.patch(
                    self.path,
                    {
                        "metadata": {"resourceVersion": (lease.get("metadata") or {}).get("resourceVersion")},
                        "spec": {"holderIdentity": None},
                    },
                )
        except KubeError as exc:
            log.info("audit lease %s/%s not released: %s", self.namespace, self.name, exc)
        self.held_until = 0.0

    def _spec(self, acquired: float, renewed: float, transitions: int) -> dict:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration,
            "acquireTime": micro_time(acquired),
            "renewTime": micro_time(renewed),
            "leaseTransitions": transitions,
        }
