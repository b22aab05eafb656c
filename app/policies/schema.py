"""Strict validation of policy documents (ImagePolicy / ClusterImagePolicy, Portieris schema).

A document is accepted only if its apiVersion and kind are known, its metadata names are valid
Kubernetes names, and its spec matches POLICY_SPEC_SCHEMA. Errors name the origin (file and
document index, or the API resource) and the field, so a person can fix the right line. Unknown
fields are refused rather than ignored: a misspelt `trust` must not silently turn trust off.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema

from app.policies.kinds import POLICY_API_VERSIONS, POLICY_KIND_NAMES
from app.policies.model import PolicyError, PolicyResource

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

_TRUST_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "enabled": {"type": "boolean"},
        "trustServer": {"type": "string", "pattern": r"^https://[^\s/?#]+(/[^\s?#]*)?$"},
        "signerSecrets": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 253}},
            },
        },
        # Ostiary extension (not in Portieris): Secrets holding pinned root-of-trust material
        # (`publicKeys` and/or `caCertificates`, PEM). When given, root.json must be signed by it to
        # the root threshold and the entry has no trust on first use (docs/trust.md).
        "rootSecrets": {
            "type": "array",
            "maxItems": 16,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 253}},
            },
        },
    },
}

POLICY_SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "mode": {"enum": ["enforce", "warn"]},
        "repositories": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 512},
                    "policy": {
                        "type": ["object", "null"],
                        "additionalProperties": False,
                        "properties": {
                            "trust": _TRUST_SCHEMA,
                            "mutateImage": {"type": "boolean"},
                            # Accepted for compatibility with Portieris documents; the Rego
                            # library denies images under them (fail closed) until implemented.
                            "simple": {"type": "object"},
                            "va": {"type": "object"},
                            "vulnerability": {"type": "object"},
                        },
                    },
                },
            },
        },
    },
}

_VALIDATOR = jsonschema.Draft202012Validator(POLICY_SPEC_SCHEMA)


def _path(error: jsonschema.ValidationError) -> str:
    parts = ["spec"]
    for p in error.absolute_path:
        parts.append(f"[{p}]" if isinstance(p, int) else f".{p}")
    return "".join(parts)


def parse_policy_document(doc: Any, origin: str) -> PolicyResource:
    """Validate one ImagePolicy/ClusterImagePolicy document; raise PolicyError naming the field."""
    if not isinstance(doc, dict):
        raise PolicyError(origin, "", f"expected a mapping, got {type(doc).__name__}")
    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    if api_version not in POLICY_API_VERSIONS:
        raise PolicyError(
            origin, "apiVersion", f"{api_version!r} is not one of {', '.join(POLICY_API_VERSIONS)}"
        )
    if kind not in POLICY_KIND_NAMES:
        raise PolicyError(origin, "kind", f"{kind!r} is not one of {', '.join(POLICY_KIND_NAMES)}")
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict):
        raise PolicyError(origin, "metadata", "missing or not a mapping")
    name = metadata.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise PolicyError(origin, "metadata.name", f"{name!r} is not a valid Kubernetes name")
    namespace = metadata.get("namespace")
    if kind == "ImagePolicy":
        if not isinstance(namespace, str) or not _DNS_LABEL.match(namespace) or len(namespace) > 63:
            raise PolicyError(
                origin, "metadata.namespace", f"an ImagePolicy needs a valid namespace, got {namespace!r}"
            )
    else:
        if namespace not in (None, ""):
            raise PolicyError(
                origin, "metadata.namespace", "a ClusterImagePolicy is cluster-scoped: remove namespace"
            )
        namespace = None
    spec = doc.get("spec")
    if spec is None:
        spec = {}
    errors = sorted(_VALIDATOR.iter_errors(spec), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        raise PolicyError(origin, _path(first), first.message)
    uid = metadata.get("uid")
    return PolicyResource(
        api_version=api_version,
        kind=kind,
        name=name,
        namespace=namespace,
        spec=spec,
        origin=origin,
        uid=uid if isinstance(uid, str) else None,
    )
