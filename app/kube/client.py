"""A thin JSON client for the Kubernetes API, on top of the official client's connection handling.

The official client does the hard parts (kubeconfig and in-cluster configuration, TLS, bearer
token refresh); its typed models are not used: every object here is the plain dict the API server
sent, with the field names of the wire (``imagePullSecrets``, ``ownerReferences``), so the rest of
Ostiary sees a Secret from the API exactly as it sees one from a YAML file.

``KubeApi`` is the whole surface the policy source, the object store and the owner verifier use;
tests replace it with a fake.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import quote

import urllib3

from app.errors import ConfigError, UnavailableError

log = logging.getLogger(__name__)

JSON_MERGE_PATCH = "application/merge-patch+json"


class KubeError(UnavailableError):
    """An API call failed; ``status`` is the HTTP status (0 when the server was not reached)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message


class WatchExpired(KubeError):
    """The watch's resourceVersion is too old (410 Gone): list again."""


class KubeConfigError(ConfigError):
    """No usable cluster configuration: the kubeconfig is missing, unreadable or malformed."""


class KubeApi(Protocol):
    def get(self, path: str) -> dict | None: ...  # None on 404
    def list(self, path: str) -> dict: ...  # a *List object
    def watch(self, path: str, resource_version: str, timeout_seconds: int) -> Iterator[tuple[str, dict]]: ...
    def create(self, path: str, body: dict) -> dict: ...
    def patch(self, path: str, body: dict, content_type: str = JSON_MERGE_PATCH) -> dict: ...
    def delete(self, path: str, body: dict | None = None) -> dict | None: ...  # None on 404
    def group_version_served(self, group: str, version: str) -> bool: ...


def object_path(api_version: str, plural: str, namespace: str | None, name: str | None = None) -> str:
    """REST path of a collection or object: ``("apps/v1", "deployments", "ns", "web")``."""
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespace is not None:
        base += f"/namespaces/{quote(namespace, safe='')}"
    base += f"/{plural}"
    if name is not None:
        base += f"/{quote(name, safe='')}"
    return base


class ApiClient(Protocol):
    """What Ostiary uses of the official client's ``kubernetes.client.ApiClient`` (untyped)."""

    def call_api(
        self, resource_path: str, method: str, *args: object, **kwargs: object
    ) -> urllib3.BaseHTTPResponse: ...


# A request's timeout as urllib3 takes it: one number, or (connect, read).
Timeout = float | tuple[float, float]


# What the kubernetes package's loader raises on a missing, unreadable or malformed kubeconfig: its
# own ConfigException, YAML errors, and whatever its walk over the parsed document trips on (a number
# where a list belongs is a TypeError, bad base64 a ValueError, a missing field a KeyError).
_KUBECONFIG_ERRORS = (OSError, ValueError, TypeError, KeyError, AttributeError, IndexError)


def load_api_client(kubeconfig: str | None) -> ApiClient:
    """An ``ApiClient`` from the kubeconfig file given, else in-cluster, else the default kubeconfig.
    KubeConfigError (an input error) when none can be used, saying which and why."""
    import yaml
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    configuration = k8s_client.Configuration()
    # Watches hold one connection each, and every request thread may read a secret or an owner.
    configuration.connection_pool_maxsize = 32
    where = f"the kubeconfig {kubeconfig}" if kubeconfig else "the in-cluster configuration or ~/.kube/config"
    try:
        if kubeconfig:
            k8s_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        else:
            try:
                k8s_config.load_incluster_config(client_configuration=configuration)
            except k8s_config.ConfigException:
                k8s_config.load_kube_config(client_configuration=configuration)
    except (k8s_config.ConfigException, yaml.YAMLError, *_KUBECONFIG_ERRORS) as exc:
        reason = " ".join(str(exc).split())[:300] or exc.__class__.__name__
        raise KubeConfigError(f"cannot use {where}: {reason}") from None
    return k8s_client.ApiClient(configuration)


class RestKubeApi:
    """``KubeApi`` over an official ``ApiClient``; requests carry a timeout so no call hangs forever."""

    def __init__(self, api_client: ApiClient, request_timeout: float = 10.0):
        self._client = api_client
        self._timeout = request_timeout

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None, request_timeout: float = 10.0) -> RestKubeApi:
        return cls(load_api_client(kubeconfig), request_timeout)

    def with_timeout(self, request_timeout: float) -> RestKubeApi:
        """The same connection pool, another per-request timeout."""
        return RestKubeApi(self._client, request_timeout)

    def _send(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: dict | None = None,
        content_type: str | None = None,
        timeout: Timeout | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """One request; its response not read yet (a watch streams it)."""
        from kubernetes.client.rest import ApiException

        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            response = self._client.call_api(
                path,
                method,
                query_params=query or [],
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout if timeout is not None else (self._timeout, self._timeout),
                _return_http_data_only=True,
            )
        except ApiException as exc:
            raise KubeError(exc.status or 0, _status_message(exc.body) or str(exc.reason)) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:  # refused, TLS, timeouts
            raise KubeError(0, f"{method} {path}: {exc}") from None
        return response

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: dict | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        """One request and its answer, a JSON object (an empty answer reads as {})."""
        response = self._send(method, path, query=query, body=body, content_type=content_type)
        answer = json.loads(response.data or b"null")
        return answer if isinstance(answer, dict) else {}

    def get(self, path: str) -> dict | None:
        try:
            return self._call("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, path: str) -> dict:
        return self._call("GET", path)

    def list_page(
        self, path: str, limit: int, continue_token: str | None = None, label_selector: str | None = None
    ) -> dict:
        """One page of a collection (the API server's ``limit``/``continue`` pagination)."""
        query = [("limit", str(limit))]
        if continue_token:
            query.append(("continue", continue_token))
        if label_selector:
            query.append(("labelSelector", label_selector))
        return self._call("GET", path, query=query)

    def watch(self, path: str, resource_version: str, timeout_seconds: int) -> Iterator[tuple[str, dict]]:
        query = [
            ("watch", "true"),
            ("resourceVersion", resource_version),
            ("timeoutSeconds", str(timeout_seconds)),
            ("allowWatchBookmarks", "true"),
        ]
        # (connect, read): the read timeout is longer than the server's own, so a silent connection ends.
        response = self._send("GET", path, query=query, timeout=(self._timeout, timeout_seconds + 15))
        try:
            buffer = b""
            for chunk in response.stream(amt=None, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield _watch_event(json.loads(line))
            if buffer.strip():
                yield _watch_event(json.loads(buffer))
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:  # dropped, timed out, not JSON
            raise KubeError(0, f"watch {path}: {exc}") from None
        finally:
            response.release_conn()

    def create(self, path: str, body: dict) -> dict:
        return self._call("POST", path, body=body, content_type="application/json")

    def patch(self, path: str, body: dict, content_type: str = JSON_MERGE_PATCH) -> dict:
        return self._call("PATCH", path, body=body, content_type=content_type)

    def delete(self, path: str, body: dict | None = None) -> dict | None:
        """DELETE `path` (with DeleteOptions `body`, e.g. preconditions); None when it does not exist."""
        try:
            return self._call("DELETE", path, body=body, content_type="application/json" if body else None)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def group_version_served(self, group: str, version: str) -> bool:
        """Discovery (allowed to every authenticated user): is ``group/version`` served?"""
        return self.get(f"/apis/{quote(group, safe='')}/{quote(version, safe='')}") is not None


def _watch_event(event: dict) -> tuple[str, dict]:
    kind, obj = event.get("type", ""), event.get("object") or {}
    if kind == "ERROR":
        code = int(obj.get("code") or 0)
        message = obj.get("message") or obj.get("reason") or "watch error"
        if code == 410:
            raise WatchExpired(code, message)
        raise KubeError(code, message)
    return kind, obj


def _status_message(body: str | bytes | None) -> str:
    if body is None:
        return ""
    try:
        return str(json.loads(body).get("message", ""))
    except (ValueError, TypeError, AttributeError):
        return ""
