"""Listing what runs: every workload kind of app/workloads.py, through the API server's pagination
(``limit``/``continue``), each page request paced by a token bucket."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from app.audit.ratelimit import TokenBucket
from app.errors import OstiaryError, UnavailableError
from app.kube.client import KubeApi, KubeError, WatchExpired, object_path
from app.workloads import WORKLOADS, WorkloadKind

DEFAULT_PAGE_SIZE = 250


class PagedApi(Protocol):
    def list_page(
        self, path: str, limit: int, continue_token: str | None = None, label_selector: str | None = None
    ) -> dict: ...


@runtime_checkable
class AuditApi(KubeApi, PagedApi, Protocol):
    """What the audit reads and writes through: the KubeApi, with lists in pages (RestKubeApi)."""


def paged(api: KubeApi) -> AuditApi:
    """The runtime's KubeApi as the audit uses it. KubeApi does not declare list_page (the policy
    source and the object store never page); RestKubeApi, what the runtime builds, has it. An API
    client without it is a bug in how the runtime was put together, said as such."""
    if not isinstance(api, AuditApi):
        raise TypeError(f"the audit lists in pages, and {type(api).__name__} has no list_page")
    return api


class AuditStopped(OstiaryError):
    """The audit was stopped (the process is shutting down) before it finished."""


class ListFailed(UnavailableError):
    """A list request failed: the audit of this kind cannot be trusted to be complete."""

    def __init__(self, kind: WorkloadKind, namespace: str | None, error: KubeError):
        where = f"in namespace {namespace}" if namespace else "in all namespaces"
        super().__init__(f"listing {kind.plural} {where} failed: {error}")
        self.kind = kind
        self.error = error


@dataclass(frozen=True)
class Listed:
    kind: WorkloadKind
    obj: dict


def strip(obj: dict, kind: WorkloadKind) -> dict:
    """The stored object as the audit keeps it: managedFields dropped (they are large and say who
    wrote which field, not what runs); apiVersion and kind set (a list's items lack them)."""
    metadata = dict(obj.get("metadata") or {})
    metadata.pop("managedFields", None)
    return {**obj, "apiVersion": kind.api_version, "kind": kind.kind, "metadata": metadata}


MAX_RESTARTS = 3  # a listing whose continue token expires more often than this has failed


def list_kind(
    api: PagedApi,
    kind: WorkloadKind,
    namespace: str | None,
    bucket: TokenBucket | None,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> Iterator[dict]:
    """Every object of `kind` (in `namespace`, or all), page by page. A continue token that expired
    (410) starts the listing again; objects already yielded are not yielded twice (by uid)."""
    path = object_path(kind.api_version, kind.plural, namespace)
    seen: set[str] = set()
    token: str | None = None
    restarts = 0
    while True:
        if bucket is not None and not bucket.take():
            raise AuditStopped("the audit was stopped while listing")
        try:
            page = api.list_page(path, page_size, token)
        except KubeError as exc:
            expired = isinstance(exc, WatchExpired) or exc.status == 410
            if not expired or restarts >= MAX_RESTARTS:
                raise ListFailed(kind, namespace, exc) from None
            restarts, token = restarts + 1, None
            continue
        yield from _unseen(page.get("items") or [], kind, seen)
        token = (page.get("metadata") or {}).get("continue") or None
        if not token:
            return


def _unseen(items: list, kind: WorkloadKind, seen: set[str]) -> Iterator[dict]:
    """The page's objects not yielded before (by uid; `seen` is updated), stripped."""
    for item in items:
        if not isinstance(item, dict):
            continue
        uid = str((item.get("metadata") or {}).get("uid") or "")
        if uid and uid in seen:
            continue
        if uid:
            seen.add(uid)
        yield strip(item, kind)


def list_workloads(
    api: PagedApi,
    namespace: str | None = None,
    bucket: TokenBucket | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    kinds: tuple[WorkloadKind, ...] = WORKLOADS,
) -> Iterator[Listed]:
    for kind in kinds:
        for obj in list_kind(api, kind, namespace, bucket, page_size):
            yield Listed(kind, obj)
