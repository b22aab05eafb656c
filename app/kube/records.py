"""Trust-on-first-use records in the cluster: one `TrustRecord` (ostiary.dev/v1) per (server, GUN) in
Ostiary's namespace, shared by every replica (app/notary/state.py has the record and the interface).

Why the API server: it is the one store all replicas already trust and reach, with optimistic
concurrency built in. Creation is create-if-absent (POST; 409 AlreadyExists means another replica
was first: read theirs and decide again); an update is a merge patch carrying the resourceVersion
that was read, so the API server refuses it (409 Conflict) if anyone wrote in between, and the change
is decided again on the fresh object. Two replicas can therefore never swap a root or lower a version.
Only Ostiary's service account may write these objects (chart RBAC); an operator accepts a
re-keyed repository by removing its record: `ostiary trust unpin --kube IMAGE` (or `kubectl delete
trustrecord`), with their own credentials (Ostiary's role has no delete). A root conflict is also reported as a Warning Event
on the record, naming the GUN.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from datetime import UTC, datetime

from app.kube.client import KubeApi, KubeError, object_path
from app.kube.events import event_body
from app.notary.state import Change, StateError, TrustRecord, record_name

log = logging.getLogger(__name__)

API_VERSION = "ostiary.dev/v1"
KIND = "TrustRecord"
PLURAL = "trustrecords"
ATTEMPTS = 8  # optimistic-concurrency retries before giving up (fail closed)
COMPONENT = "ostiary"
EVENT_INTERVAL = 60.0  # seconds between two Events about one record from one process


def object_name(server: str, gun: str) -> str:
    return f"tr-{record_name(server, gun)}"


class KubeRecordStore:
    def __init__(self, api: KubeApi, namespace: str):
        self._api = api
        self._namespace = namespace
        self._instance = socket.gethostname()
        self._lock = threading.Lock()
        self._reported: dict[str, float] = {}

    @property
    def description(self) -> str:
        return f"TrustRecords in namespace {self._namespace}"

    def _path(self, name: str | None = None) -> str:
        return object_path(API_VERSION, PLURAL, self._namespace, name)

    def _fail(self, what: str, exc: KubeError) -> StateError:
        hint = ""
        if exc.status == 404:
            hint = " (is the TrustRecord CRD helm/ostiary/crds/trustrecords.ostiary.dev.yaml installed?)"
        elif exc.status == 403:
            hint = " (Ostiary's service account needs get, list, create, patch on trustrecords.ostiary.dev)"
        return StateError(f"cannot {what} {self.description}: {exc}{hint}")

    def _read(self, server: str, gun: str) -> tuple[dict | None, TrustRecord | None]:
        name = object_name(server, gun)
        try:
            obj = self._api.get(self._path(name))
        except KubeError as exc:
            raise self._fail(f"read TrustRecord {name} of {gun} in", exc) from None
        if obj is None:
            return None, None
        record = TrustRecord.from_json(obj.get("spec"), f"TrustRecord {self._namespace}/{name}")
        if (record.server, record.gun) != (server, gun):
            raise StateError(f"TrustRecord {self._namespace}/{name} is for {record.gun}, not {gun}")
        return obj, record

    def get(self, server: str, gun: str) -> TrustRecord | None:
        return self._read(server, gun)[1]

    def update(self, server: str, gun: str, change: Change) -> TrustRecord | None:
        name = object_name(server, gun)
        for _attempt in range(ATTEMPTS):
            obj, current = self._read(server, gun)
            try:
                new = change(current)
            except Exception as refused:
                if current is not None:
                    self.report(server, gun, str(refused))
                raise
            if new is None or new == current:
                return current
            try:
                if obj is None:
                    self._api.create(
                        self._path(),
                        {
                            "apiVersion": API_VERSION,
                            "kind": KIND,
                            "metadata": {
                                "name": name,
                                "namespace": self._namespace,
                                "labels": {"app.kubernetes.io/managed-by": COMPONENT},
                            },
                            "spec": new.to_json(),
                        },
                    )
                else:
                    resource_version = (obj.get("metadata") or {}).get("resourceVersion")
                    self._api.patch(
                        self._path(name),
                        {
                            "metadata": {"resourceVersion": resource_version},
                            "spec": new.to_json(),
                        },
                    )
                return new
            except KubeError as exc:
                if exc.status == 409:  # created or changed by another replica meanwhile: decide again
                    continue
                raise self._fail(f"write TrustRecord {name} of {gun} in", exc) from None
        raise StateError(f"TrustRecord {name} of {gun} kept changing under {ATTEMPTS} attempts; not changed")

    def delete(self, server: str, gun: str) -> bool:
        """Remove the record of (server, GUN) (`ostiary trust unpin --kube`): False if there is none.
        The delete is conditional on the uid read, so it removes the record checked to be this GUN's."""
        name = object_name(server, gun)
        obj, _record = self._read(server, gun)
        if obj is None:
            return False
        uid = (obj.get("metadata") or {}).get("uid")
        try:
            gone = self._api.delete(
                self._path(name),
                {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}},
            )
        except KubeError as exc:
            if exc.status == 409:  # deleted and created again meanwhile: that new record is not removed
                raise StateError(
                    f"TrustRecord {name} of {gun} was replaced while being removed; not removed, try again"
                ) from None
            if exc.status == 403:
                raise StateError(
                    f"cannot delete TrustRecord {name} of {gun} in {self.description}: {exc} (removing a "
                    "record needs delete on trustrecords.ostiary.dev: an operator's credentials, which "
                    "Ostiary's own role does not have)"
                ) from None
            raise self._fail(f"delete TrustRecord {name} of {gun} in", exc) from None
        return gone is not None

    def records(self) -> list[TrustRecord]:
        try:
            listed = self._api.list(self._path())
        except KubeError as exc:
            raise self._fail("list", exc) from None
        found = [
            TrustRecord.from_json(item.get("spec"), f"TrustRecord {(item.get('metadata') or {}).get('name')}")
            for item in listed.get("items") or []
        ]
        return sorted(found, key=lambda r: (r.server, r.gun))

    def report(self, server: str, gun: str, message: str, reason: str = "RootNotTrusted") -> None:
        """A Warning Event on the record naming the GUN, when an admission was denied because the served
        root contradicts it. Best effort (the denial stands regardless), at most one per record a minute."""
        name = object_name(server, gun)
        moment = time.monotonic()
        with self._lock:
            if moment - self._reported.get(name, -EVENT_INTERVAL) < EVENT_INTERVAL:
                return
            if len(self._reported) > 4096:
                self._reported.clear()
            self._reported[name] = moment
        body = event_body(
            self._namespace,
            {"apiVersion": API_VERSION, "kind": KIND, "name": name, "namespace": self._namespace},
            reason,
            f"{gun}: {message}",
            "Warning",
            self._instance,
            datetime.now(UTC),
        )
        try:
            self._api.create(object_path("v1", "events", self._namespace), body)
        except KubeError as exc:
            log.warning("could not record an event on TrustRecord %s: %s", name, exc)
