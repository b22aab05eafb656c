"""Secrets and service accounts read from the Kubernetes API, one ``get`` at a time, briefly cached.

Least privilege: Ostiary reads only the objects a policy or a pod names (``get`` on secrets and
serviceaccounts), never lists all secrets of the cluster, so its service account cannot be used to
dump them. Each answer — found or not found — is kept for a short TTL: a burst of pods from one
ReplicaSet costs one read, and a rotated signer key or pull secret is seen within seconds.

Errors other than 404 are not cached and read as "not there" (``None``), which fails closed: a
missing signer secret denies, a missing pull secret means anonymous access, which the registry may
refuse.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from app.kube.client import KubeApi, KubeError, object_path
from app.lru import TTLCache, json_size

log = logging.getLogger(__name__)
MAX_BYTES = 16 * 1024 * 1024  # objects kept, as JSON (a Secret may hold up to 1 MiB)


class KubeObjectStore:
    """``ObjectStore`` (see docs/internals.md) over the API: ``get_secret``, ``get_service_account``."""

    def __init__(
        self,
        api: KubeApi,
        ttl: float = 10.0,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._api = api
        # a pod names the Secrets and service accounts read: bounded in bytes, not only in entries
        self._cache: TTLCache[tuple[str, str, str], dict | None] = TTLCache(
            ttl, max_entries, clock, max_bytes=MAX_BYTES, size=json_size
        )

    def get_secret(self, namespace: str, name: str) -> dict | None:
        return self._get("v1", "secrets", namespace, name)

    def get_service_account(self, namespace: str, name: str) -> dict | None:
        return self._get("v1", "serviceaccounts", namespace, name)

    def invalidate(self) -> None:
        self._cache.clear()

    def _get(self, api_version: str, plural: str, namespace: str, name: str) -> dict | None:
        if not namespace or not name:
            return None
        key = (plural, namespace, name)
        hit, value = self._cache.get(key)
        if hit:
            return value
        try:
            obj = self._api.get(object_path(api_version, plural, namespace, name))
        except KubeError as exc:
            log.warning("reading %s %s/%s failed: %s", plural, namespace, name, exc)
            return None
        self._cache.put(key, obj)
        return obj
