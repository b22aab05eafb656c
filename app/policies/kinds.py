"""The one table of policy kinds: which resources are policies, in which API groups, and how a
policy resource is named wherever Ostiary talks about it (module origin, log lines, Events).

Used by the schema (which apiVersions and kinds a document may have), the directory loader, the
cluster source (what to list and watch), the validating webhook, and the tests that hold the
chart's webhook rules to it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PolicyKind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    required: bool  # Ostiary's own kinds: their CRDs must be installed
    has_status: bool  # the CRD has a status subresource Ostiary may patch

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


def _kinds(group: str, version: str, required: bool) -> list[PolicyKind]:
    return [
        PolicyKind(group, version, "imagepolicies", "ImagePolicy", True, required, required),
        PolicyKind(group, version, "clusterimagepolicies", "ClusterImagePolicy", False, required, required),
    ]


OSTIARY_GROUP = "ostiary.dev"

# In order of precedence when two resources would make the same module.
POLICY_KINDS: tuple[PolicyKind, ...] = (
    *_kinds(OSTIARY_GROUP, "v1", True),
    *_kinds("portieris.cloud.ibm.com", "v1", False),
    *_kinds("securityenforcement.admission.cloud.ibm.com", "v1beta1", False),
)

OSTIARY_GROUP_VERSION = POLICY_KINDS[0].api_version
POLICY_API_VERSIONS: tuple[str, ...] = tuple(dict.fromkeys(k.api_version for k in POLICY_KINDS))
PORTIERIS_GROUP_VERSIONS: tuple[str, ...] = tuple(
    v for v in POLICY_API_VERSIONS if v != OSTIARY_GROUP_VERSION
)
POLICY_KIND_NAMES: tuple[str, ...] = tuple(dict.fromkeys(k.kind for k in POLICY_KINDS))

Key = tuple[str, str, str, str]  # (apiVersion, kind, namespace or "", name)


def kind_of(api_version: str, kind: str) -> PolicyKind | None:
    """The table's row for an apiVersion and kind, None when it is no policy kind."""
    for candidate in POLICY_KINDS:
        if (candidate.api_version, candidate.kind) == (api_version, kind):
            return candidate
    return None


def object_key(kind: PolicyKind, obj: dict) -> Key:
    meta = obj.get("metadata") or {}
    return (kind.api_version, kind.kind, meta.get("namespace") or "", meta.get("name") or "")


def describe(key: Key) -> str:
    api_version, kind, namespace, name = key
    return f"{kind}.{api_version.split('/')[0]} {namespace + '/' if namespace else ''}{name}"


def origin_of(key: Key) -> str:
    api_version, kind, namespace, name = key
    return f"kube:{kind}/{namespace + '/' if namespace else ''}{name} ({api_version})"


def as_document(kind: PolicyKind, obj: dict) -> dict:
    """The parts of an API object ``parse_policy_document`` reads (status and server fields dropped)."""
    meta = obj.get("metadata") or {}
    doc_meta = {k: meta[k] for k in ("name", "namespace", "uid") if meta.get(k)}
    return {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": doc_meta, "spec": obj.get("spec")}
