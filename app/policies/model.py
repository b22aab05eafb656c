"""The policy resources Ostiary understands, as plain immutable values."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.errors import InputError

DEFAULT_SYSTEM_NAMESPACE = "ostiary-system"

# The root of OPA's data under which the policies' documents live (data.ostiary_policies): a root of
# their own, outside data.ostiary where the library's packages are. OPA checks every data write
# against the path of every rule and copies, per rule, whatever data lies on that path; with the
# documents under data.ostiary a write copied all of them once per library rule (seconds and a
# hundred MiB at a few thousand entries), here no rule path runs through them
# (docs/performance.md, "What a write of policy data costs OPA").
POLICY_DATA_ROOT = "ostiary_policies"


def policy_document_id(namespace: str | None, name: str) -> str:
    """The id (the path under /v1/data) of a policy's document: POLICY_DATA_ROOT/cluster/<name> for
    a ClusterImagePolicy (no namespace), POLICY_DATA_ROOT/namespaced/<namespace>/<name> otherwise."""
    if not namespace:
        return f"{POLICY_DATA_ROOT}/cluster/{name}"
    return f"{POLICY_DATA_ROOT}/namespaced/{namespace}/{name}"


def namespace_policy_of(module_id: str) -> tuple[str, str] | None:
    """(namespace, name) of a namespace policy's document id (policy_document_id), None for any other id."""
    parts = module_id.split("/")
    if parts[:2] != [POLICY_DATA_ROOT, "namespaced"] or len(parts) < 4:
        return None
    return parts[2], "/".join(parts[3:])


class PolicyError(InputError):
    """A policy document is invalid. `origin` names the file and document (or the resource)."""

    def __init__(self, origin: str, field: str, message: str, *, line: int = 0, column: int = 0):
        at = origin + (f":{line}" if line else "") + (f":{column}" if line and column else "")
        where = f"{at}: {field}" if field else at
        super().__init__(f"{where}: {message}")
        self.origin = origin
        self.field = field
        self.message = message
        self.line = line  # 1-based, 0 when unknown (a Rego file's parse error knows it)
        self.column = column
        # (namespace, name) when the error belongs to one ImagePolicy alone: directory mode then
        # refuses that policy only and fails closed for its namespace (app/policies/directory.py).
        self.tenant: tuple[str, str] | None = None


@dataclass(frozen=True)
class PolicyResource:
    api_version: str
    kind: str
    name: str
    namespace: str | None
    spec: dict
    origin: str
    uid: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace or "", self.name)


@dataclass(frozen=True)
class RegoModule:
    id: str
    package: str
    source: str
    origin: str = ""
    # The trust servers (normalized) a ClusterImagePolicy's entries name: the operator's servers,
    # which namespace policies may name too (app.notary.servers.TrustServerAllowList). Empty otherwise.
    trust_servers: frozenset[str] = frozenset()
    # A policy translated as data (app/policies/translate.py): `source` is the canonical JSON of the
    # document written to OPA at /v1/data/<id>, not Rego; PolicySync writes it with the data API.
    is_data: bool = False


@dataclass
class PolicySet:
    """Everything one load of a source produced: policies plus the Secrets/ServiceAccounts beside them."""

    policies: list[PolicyResource] = field(default_factory=list)
    secrets: dict[tuple[str, str], dict] = field(default_factory=dict)
    service_accounts: dict[tuple[str, str], dict] = field(default_factory=dict)
