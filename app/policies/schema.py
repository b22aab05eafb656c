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

from app.policies.bounds import MAX_ENTRIES
from app.policies.kinds import POLICY_API_VERSIONS, POLICY_KIND_NAMES
from app.policies.model import PolicyError, PolicyResource
from app.signatures.keyless import EXTENSION_FIELDS as KEYLESS_EXTENSION_FIELDS

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

_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_SIGNED_IDENTITY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "type": {
            "enum": [
                "",
                "matchRepoDigestOrExact",
                "matchExact",
                "matchRepository",
                "matchExactReference",
                "matchExactRepository",
                "remapIdentity",
            ]
        },
        "dockerReference": {"type": "string", "minLength": 1, "maxLength": 512},
        "dockerRepository": {"type": "string", "minLength": 1, "maxLength": 512},
        "prefix": {"type": "string", "minLength": 1, "maxLength": 512},
        "signedPrefix": {"type": "string", "minLength": 1, "maxLength": 512},
    },
    "allOf": [
        {
            "if": {"properties": {"type": {"const": "matchExactReference"}}, "required": ["type"]},
            "then": {"required": ["dockerReference"]},
        },
        {
            "if": {"properties": {"type": {"const": "matchExactRepository"}}, "required": ["type"]},
            "then": {"required": ["dockerRepository"]},
        },
        {
            "if": {"properties": {"type": {"const": "remapIdentity"}}, "required": ["type"]},
            "then": {"required": ["prefix", "signedPrefix"]},
        },
    ],
}
# Portieris' `simple` policy (Red Hat simple signing), accepted as Portieris documents write it
# (docs/signatures.md). Every requirement must pass.
_SIMPLE_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["requirements"],
    "properties": {
        "requirements": {
            "type": "array",
            "minItems": 1,
            "maxItems": 16,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["type"],
                "properties": {
                    "type": {"enum": ["signedBy", "insecureAcceptAnything", "reject"]},
                    "keySecret": _NAME,
                    "keySecretNamespace": {"type": "string", "minLength": 1, "maxLength": 63},
                    "signedIdentity": _SIGNED_IDENTITY_SCHEMA,
                },
                "if": {"properties": {"type": {"const": "signedBy"}}},
                "then": {"required": ["keySecret"]},
            },
        },
        "storeURL": {"type": "string", "pattern": r"^https?://[^\s/?#]+(/[^\s?#]*)?$", "maxLength": 1024},
        "storeSecret": _NAME,
    },
}

# Ostiary extension (not in Portieris): cosign key-based signatures (docs/signatures.md). Each entry
# of `keys` is one requirement: a signature by one of the public keys its Secret holds must prove the
# digest; every entry must pass. Key Secrets follow the tenant rule of `simple` keySecret.
_COSIGN_IDENTITY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {"enum": ["matchRepository", "matchExactRepository", "remapIdentity"]},
        "dockerRepository": {"type": "string", "minLength": 1, "maxLength": 512},
        "prefix": {"type": "string", "minLength": 1, "maxLength": 512},
        "signedPrefix": {"type": "string", "minLength": 1, "maxLength": 512},
    },
    "allOf": [
        {
            "if": {"properties": {"type": {"const": "matchExactRepository"}}, "required": ["type"]},
            "then": {"required": ["dockerRepository"]},
        },
        {
            "if": {"properties": {"type": {"const": "remapIdentity"}}, "required": ["type"]},
            "then": {"required": ["prefix", "signedPrefix"]},
        },
    ],
}
# Keyless cosign (docs/signatures.md): one requirement, met by a bundle whose Fulcio certificate one of
# `identities` accepts. In cosign's terms: issuer = --certificate-oidc-issuer(-regexp), subject =
# --certificate-identity(-regexp), the github* fields = --certificate-github-workflow-*. Regular
# expressions are RE2 (matched by OPA's regex.match, linear time) and checked at load (keyless_regex_error).
_REGEX = {"type": "string", "minLength": 1, "maxLength": 512}
_EXACT = {"type": "string", "minLength": 1, "maxLength": 1024}
_KEYLESS_IDENTITY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "issuer": _EXACT,
        "issuerRegExp": _REGEX,
        "subject": _EXACT,
        "subjectRegExp": _REGEX,
        **{name: _EXACT for name in KEYLESS_EXTENSION_FIELDS},
    },
    "allOf": [
        {"oneOf": [{"required": ["issuer"]}, {"required": ["issuerRegExp"]}]},
        {"oneOf": [{"required": ["subject"]}, {"required": ["subjectRegExp"]}]},
    ],
}
_COSIGN_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "anyOf": [{"required": ["keys"]}, {"required": ["identities"]}],
    "properties": {
        "identities": {"type": "array", "minItems": 1, "maxItems": 16, "items": _KEYLESS_IDENTITY_SCHEMA},
        "keys": {
            "type": "array",
            "minItems": 1,
            "maxItems": 16,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["keySecret"],
                "properties": {
                    "keySecret": _NAME,
                    "keySecretNamespace": {"type": "string", "minLength": 1, "maxLength": 63},
                },
            },
        },
        "signedIdentity": _COSIGN_IDENTITY_SCHEMA,
    },
}

# Ostiary extension (not in Portieris): Notation signatures (docs/signatures.md), as one Notation trust
# policy: the trust store is the Secret `caSecret` (tenant rule of cosign keySecret) whose keys `ca.crt`,
# `signingAuthority.crt` and `tsa.crt` are Notation's x509/ca, x509/signingAuthority and x509/tsa named
# stores; `trustStores` says which of them the policy trusts (default: ca). `trustedIdentities` are "*"
# or "x509.subject: <DN>" (checked further by the translator). The verification level is Notation's
# (strict, permissive, audit, skip) with its `override` of single validations; `skip` needs no
# signature, and so names no trust store and no identity (the translator checks that).
NOTATION_LEVELS = ("strict", "permissive", "audit", "skip")
NOTATION_STORES = ("ca", "signingAuthority", "tsa")
_NOTATION_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "anyOf": [
        {"required": ["caSecret", "trustedIdentities"]},
        {
            "required": ["signatureVerification"],
            "properties": {"signatureVerification": {"properties": {"level": {"enum": ["skip"]}}}},
        },
    ],
    "properties": {
        "caSecret": _NAME,
        "caSecretNamespace": {"type": "string", "minLength": 1, "maxLength": 63},
        "trustStores": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "uniqueItems": True,
            "items": {"enum": list(NOTATION_STORES)},
        },
        "trustedIdentities": {
            "type": "array",
            "minItems": 1,
            "maxItems": 32,
            "items": {"type": "string", "minLength": 1, "maxLength": 1024},
        },
        "signatureVerification": {
            "type": "object",
            "additionalProperties": False,
            "required": ["level"],
            "properties": {
                "level": {"enum": list(NOTATION_LEVELS)},
                "override": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "authenticity": {"enum": ["enforce", "log"]},
                        "authenticTimestamp": {"enum": ["enforce", "log"]},
                        "expiry": {"enum": ["enforce", "log"]},
                        "revocation": {"enum": ["enforce", "log", "skip"]},
                    },
                },
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
            "maxItems": MAX_ENTRIES,  # app/policies/bounds.py; the CRDs hold the same number
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
                            "simple": _SIMPLE_SCHEMA,
                            "cosign": _COSIGN_SCHEMA,
                            "notation": _NOTATION_SCHEMA,
                            # Accepted for compatibility with Portieris documents; the Rego
                            # library denies images under them (fail closed) until implemented.
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


def _spec_errors(spec: object, origin: str) -> list[PolicyError]:
    """Every schema violation of `spec`, by field path; an unknown field is reported once per key
    (with the fields allowed there), so a person sees all misspellings of a document at once."""
    found: list[PolicyError] = []
    for error in sorted(
        _VALIDATOR.iter_errors(spec), key=lambda e: [(isinstance(p, str), p) for p in e.absolute_path]
    ):
        allowed = (error.schema or {}).get("properties") if isinstance(error.schema, dict) else None
        if (
            error.validator == "additionalProperties"
            and isinstance(error.instance, dict)
            and isinstance(allowed, dict)
        ):
            for key in sorted(k for k in error.instance if k not in allowed):
                found.append(
                    PolicyError(
                        origin,
                        f"{_path(error)}.{key}",
                        f"unknown field {key!r} (allowed here: {', '.join(allowed)})",
                    )
                )
            continue
        if error.validator == "maxItems" and isinstance(error.instance, list):  # never echo the list
            found.append(
                PolicyError(
                    origin,
                    _path(error),
                    f"{len(error.instance)} items, over the bound of {error.validator_value} here",
                )
            )
            continue
        found.append(PolicyError(origin, _path(error), error.message))
    return found


def policy_document_errors(doc: object, origin: str) -> list[PolicyError]:
    """Every reason `doc` is not a valid ImagePolicy/ClusterImagePolicy ([] when it is valid).

    The checks and the verdict are exactly those of parse_policy_document, which raises the first
    of these; `ostiary check` reports them all.
    """
    if not isinstance(doc, dict):
        return [PolicyError(origin, "", f"expected a mapping, got {type(doc).__name__}")]
    errors = _type_errors(doc, origin)
    kind = doc.get("kind")
    if kind not in POLICY_KIND_NAMES:
        return errors
    errors.extend(_metadata_errors(doc.get("metadata"), kind, origin))
    spec = doc.get("spec")
    too_many = _entries_over_bound(spec, origin)
    if too_many is not None:
        return [*errors, too_many]
    errors.extend(_spec_errors({} if spec is None else spec, origin))
    if not errors:
        errors.extend(_keyless_regex_errors(spec or {}, origin))
    return errors


def _type_errors(doc: dict, origin: str) -> list[PolicyError]:
    """apiVersion and kind: one of Ostiary's."""
    errors: list[PolicyError] = []
    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    if api_version not in POLICY_API_VERSIONS:
        errors.append(
            PolicyError(
                origin, "apiVersion", f"{api_version!r} is not one of {', '.join(POLICY_API_VERSIONS)}"
            )
        )
    if kind not in POLICY_KIND_NAMES:
        errors.append(PolicyError(origin, "kind", f"{kind!r} is not one of {', '.join(POLICY_KIND_NAMES)}"))
    return errors


def _metadata_errors(metadata: object, kind: str, origin: str) -> list[PolicyError]:
    """A valid name; a namespace for an ImagePolicy, none for a ClusterImagePolicy."""
    if not isinstance(metadata, dict):
        return [PolicyError(origin, "metadata", "missing or not a mapping")]
    errors: list[PolicyError] = []
    name = metadata.get("name")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        errors.append(PolicyError(origin, "metadata.name", f"{name!r} is not a valid Kubernetes name"))
    namespace = metadata.get("namespace")
    if kind == "ImagePolicy":
        if not isinstance(namespace, str) or not _DNS_LABEL.match(namespace) or len(namespace) > 63:
            errors.append(
                PolicyError(
                    origin, "metadata.namespace", f"an ImagePolicy needs a valid namespace, got {namespace!r}"
                )
            )
    elif namespace not in (None, ""):
        errors.append(
            PolicyError(
                origin, "metadata.namespace", "a ClusterImagePolicy is cluster-scoped: remove namespace"
            )
        )
    return errors


def _entries_over_bound(spec: object, origin: str) -> PolicyError | None:
    """More repositories than one policy may hold: said before validating a million entries one by one
    (app/policies/bounds.py)."""
    repositories = spec.get("repositories") if isinstance(spec, dict) else None
    if not isinstance(repositories, list) or len(repositories) <= MAX_ENTRIES:
        return None
    return PolicyError(
        origin,
        "spec.repositories",
        f"{len(repositories)} entries, over the bound of {MAX_ENTRIES} entries per policy "
        "(the most the CRDs and `ostiary serve --max-policy-entries` allow); split it or use wildcards",
    )


# Constructs of Python's `re` that RE2 (OPA's regex.match, which matches them) does not have; refused
# at load so a policy never holds a pattern the matcher would reject at admission time.
_NOT_RE2 = ("(?=", "(?!", "(?<=", "(?<!", "(?P=", "(?>", "*+", "++", "?+", "}+")


def keyless_regex_error(pattern: str) -> str | None:
    """Why `pattern` is not a regular expression Ostiary accepts (None when it is): it must compile,
    in the subset RE2 and Python share (no lookaround, backreferences, atomic groups or possessive
    quantifiers). Matching happens in OPA (RE2: linear in the certificate value, so a hostile value
    cannot make it backtrack), never in Python."""
    if any(token in pattern for token in _NOT_RE2):
        return "lookaround, backreferences, atomic groups and possessive quantifiers are not RE2"
    if re.search(r"\\[1-9]", pattern.replace("\\\\", "")):
        return "backreferences are not RE2"
    try:
        re.compile(pattern)
    except re.error as exc:
        return f"not a regular expression: {exc}"
    return None


def _keyless_regex_errors(spec: dict, origin: str) -> list[PolicyError]:
    found = []
    for i, entry in enumerate(spec.get("repositories") or []):
        cosign = (entry.get("policy") or {}).get("cosign") or {}
        for j, identity in enumerate(cosign.get("identities") or []):
            for key in ("issuerRegExp", "subjectRegExp"):
                if key in identity and (why := keyless_regex_error(identity[key])) is not None:
                    path = f"spec.repositories[{i}].policy.cosign.identities[{j}].{key}"
                    found.append(PolicyError(origin, path, why))
    return found


def valid_policy_identity(doc: object) -> tuple[str, str] | None:
    """(namespace, name) of an ImagePolicy document whose metadata names are valid (whatever else
    is wrong with it), else None: an error in such a document is that namespace's alone."""
    metadata = doc.get("metadata") if isinstance(doc, dict) else None
    if not isinstance(metadata, dict):
        return None
    name, namespace = metadata.get("name"), metadata.get("namespace")
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return None
    if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS_LABEL.match(namespace):
        return None
    return namespace, name


def parse_policy_document(doc: object, origin: str) -> PolicyResource:
    """Validate one ImagePolicy/ClusterImagePolicy document; raise PolicyError naming the field
    (the first of policy_document_errors)."""
    errors = policy_document_errors(doc, origin)
    if errors or not isinstance(doc, dict):  # a document that is not a mapping has an error
        raise errors[0]
    metadata = doc["metadata"]
    uid = metadata.get("uid")
    return PolicyResource(
        api_version=doc["apiVersion"],
        kind=doc["kind"],
        name=metadata["name"],
        namespace=metadata.get("namespace") if doc["kind"] == "ImagePolicy" else None,
        spec=doc.get("spec") or {},
        origin=origin,
        uid=uid if isinstance(uid, str) else None,
    )
