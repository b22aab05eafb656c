"""Which module each policy resource becomes: the pure part of the cluster source (no I/O).

Given the resources seen (by key) and a function that turns one into its module or the reason it
has none, decide the desired module set: one module per resource that translates, resources of a
higher-precedence kind first (ostiary.dev before the Portieris groups), and a resource that would
make the same module as an earlier one reported as a conflict instead of applied. Comparing that
set with what OPA holds is app.policies.reconcile's job.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from app.policies.kinds import Key, PolicyKind, describe
from app.policies.model import RegoModule

ModuleOrError = RegoModule | str  # a str says why the resource has no module
CONFLICT = "conflicts with "  # how the reason of a resource shadowed by another begins


def derive(
    objects: Mapping[Key, tuple[PolicyKind, dict]],
    kinds: Sequence[PolicyKind],
    module_for: Callable[[Key, PolicyKind, dict], ModuleOrError],
) -> tuple[dict[str, tuple[Key, RegoModule]], dict[Key, str]]:
    """(module id -> (resource key, module), resource key -> why it is not applied)."""
    precedence = {kind: i for i, kind in enumerate(kinds)}
    ordered = sorted(objects.items(), key=lambda item: (precedence.get(item[1][0], len(precedence)), item[0]))
    desired: dict[str, tuple[Key, RegoModule]] = {}
    errors: dict[Key, str] = {}
    for key, (kind, obj) in ordered:
        module = module_for(key, kind, obj)
        if isinstance(module, str):
            errors[key] = module
        elif module.id in desired:
            errors[key] = (
                f"{CONFLICT}{describe(desired[module.id][0])}: both would be module "
                f"{module.id}; this one is not applied"
            )
        else:
            desired[module.id] = (key, module)
    return desired, errors
