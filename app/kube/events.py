"""Reporting on policy resources: Warning Events and the ``Ready`` condition in their status.

Best effort by design: a failure to report is logged and never stops policies from being applied.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from datetime import UTC, datetime

from app.kube.client import KubeApi, KubeError, object_path
from app.policies.kinds import PolicyKind

log = logging.getLogger(__name__)

COMPONENT = "ostiary"


def event_body(
    namespace: str, involved: dict, reason: str, message: str, event_type: str, instance: str, now: datetime
) -> dict:
    """A core/v1 Event about `involved` (its apiVersion, kind, name, ...), as Ostiary reports one."""
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{involved.get('name') or 'policy'}.", "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": message[:1024],
        "type": event_type,
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }


def resource_path(kind: PolicyKind, namespace: str | None, name: str) -> str:
    """The API path of one policy resource."""
    return object_path(kind.api_version, kind.plural, namespace if kind.namespaced else None, name)


class EventReporter:
    """Warning Events and ``status.conditions`` on policy resources; best effort (never raises)."""

    def __init__(self, api: KubeApi, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self._api = api
        self._clock = clock
        self._instance = socket.gethostname()

    def event(
        self, kind: PolicyKind, obj: dict, reason: str, message: str, event_type: str = "Warning"
    ) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"  # where kubectl looks for cluster-scoped objects
        body = event_body(
            namespace,
            {
                "apiVersion": kind.api_version,
                "kind": kind.kind,
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            reason,
            message,
            event_type,
            self._instance,
            self._clock(),
        )
        try:
            self._api.create(object_path("v1", "events", namespace), body)
        except KubeError as exc:
            log.warning("could not record event on %s %s: %s", kind.kind, meta.get("name"), exc)

    def status(self, kind: PolicyKind, obj: dict, ok: bool, reason: str, message: str) -> None:
        if not kind.has_status:
            return
        meta = obj.get("metadata") or {}
        generation = meta.get("generation")
        current = [c for c in ((obj.get("status") or {}).get("conditions") or []) if c.get("type") == "Ready"]
        wanted = {
            "type": "Ready",
            "status": "True" if ok else "False",
            "reason": reason,
            "message": message[:1024],
            "observedGeneration": generation,
        }
        if current and all(current[0].get(k) == v for k, v in wanted.items()):
            return  # unchanged: no write, so no MODIFIED event back to us
        wanted["lastTransitionTime"] = self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"status": {"observedGeneration": generation, "conditions": [wanted]}}
        try:
            self._api.patch(
                resource_path(kind, meta.get("namespace"), meta.get("name", "")) + "/status", body
            )
        except KubeError as exc:
            if exc.status != 404:
                log.warning("could not patch status of %s %s: %s", kind.kind, meta.get("name"), exc)
