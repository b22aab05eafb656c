"""The one place that decides what "OPA holds exactly Ostiary's modules" means (pure, no I/O).

Ostiary owns the whole policy namespace of its OPA: every module OPA holds that is not in the
desired set is removed, whatever its id or package, and every desired module whose text differs
from OPA's copy is written again. Directory mode and the cluster source both go through here
(via app.policies.sync.PolicySync), so both mean the same by "exactly".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Plan:
    """The operations that turn what OPA holds into the desired set: write these, delete those."""

    put: tuple[str, ...]
    delete: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.put and not self.delete


@dataclass(frozen=True)
class Drift:
    """How OPA's modules differ from the desired set, by kind of difference."""

    missing: tuple[str, ...]  # desired, not in OPA (OPA restarted, or someone deleted it)
    altered: tuple[str, ...]  # in OPA under a desired id, with other text (replaced in place)
    foreign: tuple[str, ...]  # in OPA, not desired (planted, or left by an earlier process)

    @property
    def empty(self) -> bool:
        return not self.missing and not self.altered and not self.foreign

    def describe(self) -> str:
        parts = [
            f"{label}: {', '.join(ids)}"
            for label, ids in (
                ("missing", self.missing),
                ("altered", self.altered),
                ("foreign", self.foreign),
            )
            if ids
        ]
        return "; ".join(parts) or "none"


def drift(desired: Mapping[str, str], present: Mapping[str, str]) -> Drift:
    """Compare module id -> source maps: the desired set against what OPA holds."""
    return Drift(
        missing=tuple(sorted(i for i in desired if i not in present)),
        altered=tuple(sorted(i for i in desired if i in present and present[i] != desired[i])),
        foreign=tuple(sorted(i for i in present if i not in desired)),
    )


def plan(desired: Mapping[str, str], present: Mapping[str, str]) -> Plan:
    """Writes first (so a reload never passes through a state with fewer policies than either end),
    then deletions."""
    d = drift(desired, present)
    return Plan(put=tuple(sorted(d.missing + d.altered)), delete=d.foreign)
