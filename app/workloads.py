"""The one table of workload kinds: every kind that carries a pod spec, where it keeps it, and how
the API server names it.

Used by the extractor (where the pod spec is), the owner checks (which owners have a pod template
and how to read one), `ostiary apply` (the resource an AdmissionReview names), the end-to-end
webhook registration, and the chart test that holds the chart's webhook rules to this table.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkloadKind:
    kind: str
    group: str  # API group ("" for core)
    version: str
    plural: str
    pod_spec_path: tuple[str, ...]  # where the pod spec is inside the object
    subresources: tuple[str, ...] = ()  # subresources that carry images too (admitted separately)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def template_path(self) -> tuple[str, ...] | None:
        """Where the pod template is (the pod spec's parent), None for a Pod (it has no template)."""
        return self.pod_spec_path[:-1] if len(self.pod_spec_path) > 1 else None

    @property
    def resources(self) -> tuple[str, ...]:
        """The resource names a webhook rule must list for this kind."""
        return (self.plural, *(f"{self.plural}/{sub}" for sub in self.subresources))


_TEMPLATE_SPEC = ("spec", "template", "spec")

WORKLOADS: tuple[WorkloadKind, ...] = (
    WorkloadKind("Pod", "", "v1", "pods", ("spec",), ("ephemeralcontainers",)),
    WorkloadKind("ReplicationController", "", "v1", "replicationcontrollers", _TEMPLATE_SPEC),
    WorkloadKind("Deployment", "apps", "v1", "deployments", _TEMPLATE_SPEC),
    WorkloadKind("ReplicaSet", "apps", "v1", "replicasets", _TEMPLATE_SPEC),
    WorkloadKind("StatefulSet", "apps", "v1", "statefulsets", _TEMPLATE_SPEC),
    WorkloadKind("DaemonSet", "apps", "v1", "daemonsets", _TEMPLATE_SPEC),
    WorkloadKind("Job", "batch", "v1", "jobs", _TEMPLATE_SPEC),
    WorkloadKind("CronJob", "batch", "v1", "cronjobs", ("spec", "jobTemplate", "spec", "template", "spec")),
)

BY_KIND: dict[str, WorkloadKind] = {w.kind: w for w in WORKLOADS}


def webhook_resources() -> dict[str, list[str]]:
    """API group -> the resources a mutating webhook rule must cover (every workload kind)."""
    rules: dict[str, list[str]] = {}
    for workload in WORKLOADS:
        rules.setdefault(workload.group, []).extend(workload.resources)
    return rules
