"""The audit's Prometheus metrics, on the application's registry (app/metrics.py makes them, so
/metrics names them even while the audit is off)."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge

from app.audit.config import ERROR, FAIL, RESULTS

if TYPE_CHECKING:
    from app.audit.engine import AuditRun


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry):
        self.failing = Gauge(
            "ostiary_audit_failing_objects",
            "Objects the last audit found would be denied now (fail) or could not decide (error), by "
            "namespace, policy and result.",
            ["namespace", "policy", "result"],
            registry=registry,
        )
        self.results = Gauge(
            "ostiary_audit_results", "Results of the last audit, by result.", ["result"], registry=registry
        )
        self.objects = Gauge("ostiary_audit_objects", "Objects the last audit decided.", registry=registry)
        self.duration = Gauge(
            "ostiary_audit_duration_seconds",
            "Wall time of the last audit (paced: spread over part of the interval on purpose).",
            registry=registry,
        )
        self.rate = Gauge(
            "ostiary_audit_objects_per_second",
            "Objects decided per second in the last audit.",
            registry=registry,
        )
        self.cpu = Gauge(
            "ostiary_audit_cpu_seconds",
            "CPU time of Ostiary's process during the last audit.",
            registry=registry,
        )
        self.runs = Counter(
            "ostiary_audit_runs_total",
            "Audits by outcome: complete, incomplete (a kind could not be listed), failed (nothing "
            "reported: the reports could not be written, the lease was lost), skipped (another replica "
            "holds the lease).",
            ["outcome"],
            registry=registry,
        )
        self.last_success = Gauge(
            "ostiary_audit_last_complete_timestamp_seconds",
            "When the last complete audit finished (seconds since the epoch).",
            registry=registry,
        )

    def record(self, run: AuditRun) -> None:
        """The gauges of what `run` found (set before its reports are written)."""
        objects: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        for r in run.results:
            if r.result in (FAIL, ERROR):
                objects[(r.namespace, r.policy, r.result)].add(r.uid or f"{r.kind}/{r.name}")
        self.failing.clear()
        for (namespace, policy, result), uids in objects.items():
            self.failing.labels(namespace, policy, result).set(len(uids))
        counts = run.counts()
        for result in RESULTS:
            self.results.labels(result).set(counts[result])
        self.objects.set(run.objects)
        self.duration.set(run.seconds)
        self.rate.set(run.objects / run.seconds if run.seconds > 0 else 0.0)
        self.cpu.set(run.cpu_seconds)

    def finished(self, outcome: str, at: float) -> None:
        """Count one audit by outcome (complete, incomplete, failed, skipped)."""
        self.runs.labels(outcome).inc()
        if outcome == "complete":
            self.last_success.set(at)
