"""Registry credentials from Kubernetes image pull secrets.

Why this exists: a private repository's Notary server answers only to the registry's token service,
and that service wants the same username and password the kubelet uses to pull. Those live in the
pod's (and its service account's) pull secrets. This module turns such Secrets into an ordered list of
(username, password) pairs for one registry host; nothing here does any I/O.

Accepted secrets (a v1 Secret as a dict, `data` base64 as the API serves it, or `stringData` plain, as
a directory of YAML files may carry it):

- `kubernetes.io/dockerconfigjson`: key `.dockerconfigjson`, a docker config with an `auths` map;
- `kubernetes.io/dockercfg`: key `.dockercfg`, the legacy map of registry -> entry.

A registry key may be written as `host`, `host:port`, `https://host`, `https://host/v1/`,
`http://host/anything`; the path is ignored (the token service is per registry, not per path).
Docker Hub is known under `docker.io`, `index.docker.io`, `registry-1.docker.io` and
`https://index.docker.io/v1/`; all of them are one registry. A key `*.example.com` matches exactly one
extra DNS label (`a.example.com`, not `a.b.example.com`), as the kubelet matches. An entry gives its
credentials either as `auth` (base64 of `user:password`) or as `username` and `password` fields.

Order: exact host matches first, wildcard matches after, each in secret order, duplicates dropped.
Malformed secrets or entries are skipped, never raised: a broken pull secret must not stop an
admission that may not even need it (anonymous access is tried when there are no credentials).

    >>> secret = {"type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson":
    ...     '{"auths": {"https://index.docker.io/v1/": {"username": "u", "password": "p"}}}'}}
    >>> credentials_for("docker.io", [secret])
    [('u', 'p')]
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from app.yamlio import load_json

log = logging.getLogger(__name__)

DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"
DOCKERCFG = "kubernetes.io/dockercfg"

_DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def normalize_registry_host(key: str) -> str:
    """`https://index.docker.io/v1/` -> `docker.io`; `HTTPS://Quay.io:443/x` -> `quay.io:443`."""
    host = key.strip()
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].lower()
    if host in _DOCKER_HUB_ALIASES:
        return _DOCKER_HUB
    return host


def _host_matches(pattern: str, host: str) -> tuple[bool, bool]:
    """(matches, exact). Wildcards are per DNS label, the port must agree exactly."""
    if pattern == host:
        return True, True
    if "*" not in pattern:
        return False, False
    pattern_name, _, pattern_port = pattern.partition(":")
    host_name, _, host_port = host.partition(":")
    if pattern_port != host_port:
        return False, False
    pattern_labels = pattern_name.split(".")
    host_labels = host_name.split(".")
    if len(pattern_labels) != len(host_labels):
        return False, False
    return all(
        _label_matches(want, have) for want, have in zip(pattern_labels, host_labels, strict=True)
    ), False


def _label_matches(want: str, have: str) -> bool:
    """One DNS label against a pattern label: "*", a partial wildcard ("reg*"), or the label itself."""
    if want == "*":
        return True
    if "*" not in want:
        return want == have
    prefix, _, suffix = want.partition("*")
    return (
        "*" not in suffix
        and have.startswith(prefix)
        and have.endswith(suffix)
        and len(have) >= len(prefix) + len(suffix)
    )


def secret_value(secret: Mapping[str, Any], key: str) -> str | None:
    """One field of a Secret: `stringData` as written, else `data` base64-decoded as UTF-8; None
    when absent or undecodable (the one decoder of Secret fields in Ostiary)."""
    string_data = secret.get("stringData") or {}
    if isinstance(string_data, Mapping) and isinstance(string_data.get(key), str):
        return string_data[key]
    data = secret.get("data") or {}
    if isinstance(data, Mapping) and isinstance(data.get(key), str):
        try:
            return base64.b64decode(data[key], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            log.warning("pull secret %s: %s is not valid base64 UTF-8", _secret_name(secret), key)
    return None


def _secret_name(secret: Mapping[str, Any]) -> str:
    metadata = secret.get("metadata") or {}
    if isinstance(metadata, Mapping):
        return f"{metadata.get('namespace', '')}/{metadata.get('name', '?')}"
    return "?"


def _registry_entries(secret: Mapping[str, Any]) -> Mapping[str, Any]:
    """The registry -> entry map of one secret, or {} when it is not a readable pull secret."""
    secret_type = secret.get("type")
    candidates: list[tuple[str, bool]]
    if secret_type == DOCKERCONFIGJSON:
        candidates = [(".dockerconfigjson", True)]
    elif secret_type == DOCKERCFG:
        candidates = [(".dockercfg", False)]
    else:
        # An untyped secret from a YAML directory: accept whichever key is present.
        candidates = [(".dockerconfigjson", True), (".dockercfg", False)]
    for key, has_auths in candidates:
        text = secret_value(secret, key)
        if text is None:
            continue
        try:
            document = load_json(text, f"pull secret {_secret_name(secret)}")
        except ValueError:
            log.warning("pull secret %s: %s is not JSON", _secret_name(secret), key)
            return {}
        if not isinstance(document, Mapping):
            return {}
        if has_auths:
            auths = document.get("auths")
            return auths if isinstance(auths, Mapping) else {}
        # .dockercfg is the bare map; tolerate an "auths" wrapper written by newer tools.
        auths = document.get("auths")
        return auths if isinstance(auths, Mapping) else document
    return {}


def _entry_credentials(entry: object) -> tuple[str, str] | None:
    if not isinstance(entry, Mapping):
        return None
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            decoded = ""
        username, sep, password = decoded.partition(":")
        if sep and username:
            return username, password
    user_field, password_field = entry.get("username"), entry.get("password")
    if isinstance(user_field, str) and user_field and isinstance(password_field, str):
        return user_field, password_field
    return None


def credentials_for(registry_host: str, secrets: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(username, password) pairs for `registry_host` from `secrets`, best match first, deduplicated."""
    return _matching(
        registry_host, [_registry_entries(secret) for secret in secrets if isinstance(secret, Mapping)]
    )


def credentials_from_docker_config(registry_host: str, document: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The same, from a parsed ~/.docker/config.json (for `ostiary trust inspect` on a workstation).

    Only inline `auths` entries are read; credential helpers (`credsStore`, `credHelpers`) are not run.
    """
    auths = document.get("auths") if isinstance(document, Mapping) else None
    return _matching(registry_host, [auths] if isinstance(auths, Mapping) else [])


def _matching(registry_host: str, maps: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    host = normalize_registry_host(registry_host)
    exact: list[tuple[str, str]] = []
    wildcard: list[tuple[str, str]] = []
    for entries in maps:
        for key, entry in entries.items():
            if not isinstance(key, str):
                continue
            matches, is_exact = _host_matches(normalize_registry_host(key), host)
            if not matches:
                continue
            pair = _entry_credentials(entry)
            if pair is None:
                continue
            (exact if is_exact else wildcard).append(pair)
    ordered: list[tuple[str, str]] = []
    for pair in exact + wildcard:
        if pair not in ordered:
            ordered.append(pair)
    return ordered
