"""The bounds on what policies may cost OPA: the one place they are defined and enforced.

OPA holds every policy document in memory, and a document's cost grows with its entries: measured
with scripts/measure_policy_cost.py (docs/security.md, "Bounds on policies"), about 640 bytes of
data and 12 to 22 MiB of OPA's peak memory per 1,000 entries during a write. One tenant's huge
policy could otherwise push OPA over its memory limit and deny every admission in the cluster.
Three bounds say no before anything reaches OPA:

- **entries per policy** (``max_entries``, default MAX_ENTRIES): also the ``maxItems`` of
  ``spec.repositories`` in the schema (app/policies/schema.py) and the CRDs (helm/ostiary/crds/),
  which is why the operator can lower it but never raise it above MAX_ENTRIES;
- **one scope's modules** (``max_scope_bytes``): the translated module text of one namespace's
  ImagePolicies together, and of all ClusterImagePolicies together;
- **the total** (``max_total_bytes``) of every policy module in force.

Used by the validating webhook (app/kube/validate.py), the cluster source (app/kube/source.py),
the directory loader (app/runtime.py through app/policies/directory.py) and ``ostiary check``.
A policy over a bound is refused with the bound, its measured size and the flag that sets it;
the other policies stay in force.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from app.policies.model import PolicyError, PolicyResource, RegoModule, namespace_policy_of

MAX_ENTRIES = 500

# What OPA's memory limit allows to be pushed (scripts/measure_policy_cost.py, docs/security.md):
# a bare OPA takes 36 MiB and 57 MiB with the library. Policies are data documents under their
# own root (app/policies/model.py POLICY_DATA_ROOT); a write of them peaks at 19 to 36 bytes of
# OPA memory per byte of data (1,000 to 5,000 entries, the chart's GOGC and GOMEMLIMIT), and 50
# leaves a margin over the worst of those for the custom Rego in RESERVED_BYTES (a compiled module
# costs 70 to 107). A quarter of the limit stays free for queries, the trust facts and the garbage
# collector. Of the push budget, RESERVED_BYTES are for the library (41 KiB), custom rules and the
# refusal documents; the policies get the rest, one scope half of that.
DEFAULT_OPA_MEMORY = 256 * 1024 * 1024  # the chart's opa.resources.limits.memory
OPA_BASE_BYTES = 64 * 1024 * 1024
OPA_BYTES_PER_BYTE_PUSHED = 50
OPA_MEMORY_FRACTION = 0.75
RESERVED_BYTES = 128 * 1024
_GRAIN = 64 * 1024


def push_budget_for(opa_memory: int) -> int:
    """The bytes of module text Ostiary may push to an OPA limited to `opa_memory` bytes."""
    budget = int((opa_memory * OPA_MEMORY_FRACTION - OPA_BASE_BYTES) / OPA_BYTES_PER_BYTE_PUSHED)
    return budget // _GRAIN * _GRAIN


def total_bytes_for(opa_memory: int) -> int:
    """The default bound on all policies' Rego for an OPA limited to `opa_memory` bytes."""
    return (push_budget_for(opa_memory) - RESERVED_BYTES) // _GRAIN * _GRAIN


def parse_quantity(text: str) -> int:
    """A Kubernetes memory quantity ("256Mi", "1Gi", "300M", "268435456") in bytes."""
    units = {
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
        "k": 10**3,
        "M": 10**6,
        "G": 10**9,
        "T": 10**12,
    }
    value = text.strip()
    suffix = next((u for u in units if value.endswith(u)), "")
    number, factor = value[: len(value) - len(suffix)], units.get(suffix, 1)
    try:
        amount = float(number)
    except ValueError:
        raise ValueError(f"{text!r} is no memory quantity (like 256Mi)") from None
    if amount <= 0:
        raise ValueError(f"{text!r}: a memory quantity must be positive")
    return int(amount * factor)


DEFAULT_TOTAL_BYTES = total_bytes_for(DEFAULT_OPA_MEMORY)  # 2432 KiB
DEFAULT_SCOPE_BYTES = DEFAULT_TOTAL_BYTES // 2  # 1216 KiB
DEFAULT_PUSH_BYTES = push_budget_for(DEFAULT_OPA_MEMORY)  # 2560 KiB

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Bounds:
    max_entries: int = MAX_ENTRIES  # serve/check --max-policy-entries
    max_scope_bytes: int = DEFAULT_SCOPE_BYTES  # serve/check --max-namespace-policy-bytes
    max_total_bytes: int = DEFAULT_TOTAL_BYTES  # serve/check --max-policy-bytes
    # What may be pushed to OPA at once (library, custom rules, policies, refusals): serve --opa-push-budget
    max_push_bytes: int = DEFAULT_PUSH_BYTES

    @classmethod
    def for_opa_memory(
        cls,
        opa_memory: int = DEFAULT_OPA_MEMORY,
        *,
        max_entries: int = MAX_ENTRIES,
        max_scope_bytes: int | None = None,
        max_total_bytes: int | None = None,
        max_push_bytes: int | None = None,
    ) -> Bounds:
        """The bounds for an OPA limited to `opa_memory` bytes (serve --opa-memory-limit): each
        one not given is derived from it (push_budget_for, total_bytes_for, a scope half the total)."""
        push = max_push_bytes if max_push_bytes is not None else push_budget_for(opa_memory)
        total = max_total_bytes if max_total_bytes is not None else total_bytes_for(opa_memory)
        if total < _GRAIN and max_total_bytes is None:
            raise ValueError(
                f"an OPA memory limit of {opa_memory // 2**20} MiB leaves no room for policies: "
                "give OPA at least 128Mi (--opa-memory-limit)"
            )
        scope = max_scope_bytes if max_scope_bytes is not None else total // 2
        return cls(max_entries, scope, total, push)

    def __post_init__(self) -> None:
        if not 1 <= self.max_entries <= MAX_ENTRIES:
            raise ValueError(
                f"--max-policy-entries must be between 1 and {MAX_ENTRIES} (the CRDs' maxItems), "
                f"not {self.max_entries}"
            )
        if self.max_scope_bytes < 1 or self.max_total_bytes < self.max_scope_bytes:
            raise ValueError(
                "--max-namespace-policy-bytes must be positive and --max-policy-bytes at least as large "
                f"(got {self.max_scope_bytes} and {self.max_total_bytes})"
            )
        if self.max_push_bytes < self.max_total_bytes:
            raise ValueError(
                "--opa-push-budget must be at least --max-policy-bytes "
                f"(got {self.max_push_bytes} and {self.max_total_bytes})"
            )


DEFAULT_BOUNDS = Bounds()


def module_bytes(module: RegoModule) -> int:
    return len(module.source.encode())


def scope_of(module: RegoModule) -> str:
    """Which scope a policy module counts against: "the cluster" (ClusterImagePolicies) or "namespace <ns>"."""
    tenant = namespace_policy_of(module.id)
    return "the cluster" if tenant is None else f"namespace {tenant[0]}"


def check_policy(resource: PolicyResource, module: RegoModule, bounds: Bounds = DEFAULT_BOUNDS) -> None:
    """Raise PolicyError when one policy alone is over a bound (its entries, or its module's size
    against the bound of its whole scope)."""
    entries = resource.spec.get("repositories") or []
    if isinstance(entries, list) and len(entries) > bounds.max_entries:
        raise PolicyError(
            resource.origin,
            "spec.repositories",
            f"{len(entries)} entries, over the bound of {bounds.max_entries} entries per policy "
            "(ostiary serve --max-policy-entries); split it or use wildcards. Not in force",
        )
    size = module_bytes(module)
    if size > bounds.max_scope_bytes:
        raise PolicyError(
            resource.origin,
            "spec",
            f"it is {size} bytes of policy data in OPA, over the bound of {bounds.max_scope_bytes} bytes for "
            f"the policies of one scope ({scope_of(module)}; ostiary serve --max-namespace-policy-bytes). "
            "Not in force",
        )


def bounded(
    translate: Callable[[PolicyResource], RegoModule], bounds: Bounds = DEFAULT_BOUNDS
) -> Callable[[PolicyResource], RegoModule]:
    """`translate` that also refuses (PolicyError) a policy over a bound of check_policy. The
    entry count is checked before translating, so a policy of a million entries costs nothing."""

    def translate_bounded(resource: PolicyResource) -> RegoModule:
        entries = resource.spec.get("repositories") or []
        if isinstance(entries, list) and len(entries) > bounds.max_entries:
            check_policy(resource, RegoModule("", "", ""), bounds)
        module = translate(resource)
        check_policy(resource, module, bounds)
        return module

    return translate_bounded


def over_bounds(modules: Iterable[tuple[K, RegoModule]], bounds: Bounds = DEFAULT_BOUNDS) -> dict[K, str]:
    """Which of a set of policy modules are refused by the scope and total bounds, and why.

    In each scope the smaller modules are kept first (ties by id) while the scope fits; then whole
    scopes are kept, the ClusterImagePolicies first and then the namespaces from the smallest,
    while the total fits. So the policies refused are those of the namespace that grew too large,
    never the operator's cluster policies (their scope is smaller than the total) or a small
    tenant's."""
    scopes: dict[str, list[tuple[K, RegoModule]]] = {}
    for key, module in modules:
        scopes.setdefault(scope_of(module), []).append((key, module))
    refused: dict[K, str] = {}
    kept: dict[str, int] = {}
    for scope, members in scopes.items():
        used = 0
        for key, module in sorted(members, key=lambda m: (module_bytes(m[1]), m[1].id)):
            size = module_bytes(module)
            if used + size > bounds.max_scope_bytes:
                refused[key] = (
                    f"the policies of {scope} together would be over the bound of {bounds.max_scope_bytes} bytes "
                    f"(this one {size} bytes, the smaller ones kept {used} bytes; ostiary serve "
                    "--max-namespace-policy-bytes). Not in force"
                )
                continue
            used += size
        kept[scope] = used
    total = 0
    order = sorted(kept, key=lambda s: (s != "the cluster", kept[s], s))
    for scope in order:
        if total + kept[scope] > bounds.max_total_bytes:
            for key, _ in scopes[scope]:
                refused.setdefault(
                    key,
                    f"all policies in force together would be over the bound of {bounds.max_total_bytes} "
                    f"bytes (the {kept[scope]} bytes of {scope} on top of {total} bytes of smaller scopes; "
                    "ostiary serve --max-policy-bytes). Not in force",
                )
            continue
        total += kept[scope]
    return refused
