"""Prometheus metrics (one registry per application, so tests can build many apps)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import ClassVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.audit.metrics import AuditMetrics
from app.policies.reconcile import Drift


class TrustStatsCollector(Collector):
    """Exports the trust service's own counters (cache hits, walks, failures) at scrape time."""

    GAUGES = frozenset({"cached_repositories", "records", "cached_bytes", "in_flight_bytes"})
    # Verified images by how their root was trusted (facts' root_trust): one counter with a label.
    ROOT_TRUST: ClassVar[dict[str, str]] = {
        "roots_pinned": "pinned",
        "roots_recorded": "recorded",
        "roots_first_use": "first-use",
    }

    def __init__(self, stats: Callable[[], dict[str, int]]):
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats()
        roots = CounterMetricFamily(
            "ostiary_trust_root_trust",
            "Images whose trust data verified, by how the root was trusted: pinned (policy rootSecrets), "
            "recorded (a durable or remembered first use), first-use (no record yet).",
            labels=["how"],
        )
        for name, how in self.ROOT_TRUST.items():
            roots.add_metric([how], stats.pop(name, 0))
        yield roots
        for name, value in sorted(stats.items()):
            if name in self.GAUGES:
                yield GaugeMetricFamily(f"ostiary_trust_{name}", f"Trust service: {name}.", value=value)
            else:
                yield CounterMetricFamily(f"ostiary_trust_{name}", f"Trust service: {name}.", value=value)


class SignatureStatsCollector(Collector):
    """Exports the signature service's requirements gathered, by format and outcome, at scrape time."""

    def __init__(self, stats: Callable[[], dict[tuple[str, str], int]]):
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "ostiary_signature_requirements",
            "Signature requirements gathered (beyond Notary v1), by format (simple) and outcome "
            "(verified: the signatures could be looked for; not_verified: a read or the keys failed).",
            labels=["format", "outcome"],
        )
        for (fmt, outcome), value in sorted(self.stats().items()):
            family.add_metric([fmt, outcome], value)
        yield family


class SignatureCacheCollector(Collector):
    """Exports the signature cache's counters and size (app/signatures/cache.py) at scrape time."""

    GAUGES: ClassVar[frozenset[str]] = frozenset({"entries", "bytes", "tags"})
    HELP: ClassVar[dict[str, str]] = {
        "hits": "Signature requirements answered from the cache of verified facts.",
        "misses": "Signature requirements verified because the cache had no fresh entry.",
        "stored": "Verified facts kept in the cache.",
        "tag_hits": "Tag to digest resolutions answered from the cache.",
        "tag_misses": "Tag to digest resolutions read from the registry.",
        "shared_verifications": "Signature requirements that waited for a concurrent admission's verification.",
        "entries": "Verified facts in the cache now.",
        "bytes": "Estimated bytes of the verified facts in the cache now.",
        "tags": "Tag to digest resolutions in the cache now.",
    }

    def __init__(self, stats: Callable[[], dict[str, int]]):
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        for name, value in sorted(self.stats().items()):
            family = GaugeMetricFamily if name in self.GAUGES else CounterMetricFamily
            yield family(
                f"ostiary_signature_cache_{name}",
                self.HELP.get(name, f"Signature cache: {name}."),
                value=value,
            )


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.admissions = Counter(
            "ostiary_admission_requests_total",
            "Admission requests by verdict (allowed, denied) and whether an error caused the denial.",
            ["verdict", "error"],
            registry=self.registry,
        )
        self.images = Counter(
            "ostiary_image_decisions_total",
            "Image decisions by verdict.",
            ["verdict"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "ostiary_admission_duration_seconds",
            "Time to decide one admission request.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.policies = Gauge(
            "ostiary_policies_loaded", "Policy resources currently loaded into OPA.", registry=self.registry
        )
        self.opa_resyncs = Counter(
            "ostiary_opa_resyncs_total", "Times the modules were pushed to OPA again.", registry=self.registry
        )

        self.opa_foreign_changes = Counter(
            "ostiary_opa_foreign_changes_total",
            "Modules found in OPA differing from Ostiary's set and repaired, by change: foreign "
            "(a module Ostiary does not want: planted or left over), altered (replaced in place), "
            "missing (deleted, or OPA restarted).",
            ["change"],
            registry=self.registry,
        )
        self.audit = AuditMetrics(self.registry)  # app/audit (docs/audit.md)

        self.opa_push_held_back = Gauge(
            "ostiary_opa_push_held_back",
            "1 while the policy set asked for is not pushed to OPA (over the push budget, or OPA died of "
            "it) and OPA keeps the last set that fitted; 0 otherwise.",
            registry=self.registry,
        )
        self.opa_push_deaths = Counter(
            "ostiary_opa_push_deaths_total",
            "Times OPA was found restarted with nothing in it within 10 minutes of a policy push (the push blamed).",
            registry=self.registry,
        )

    def record_drift(self, found: Drift) -> None:
        """One repair of OPA's modules (see app.policies.sync.PolicySync.repair)."""
        self.opa_resyncs.inc()
        for change, ids in (
            ("foreign", found.foreign),
            ("altered", found.altered),
            ("missing", found.missing),
        ):
            if ids:
                self.opa_foreign_changes.labels(change).inc(len(ids))

    def watch_trust(self, stats: Callable[[], dict[str, int]]) -> None:
        self.registry.register(TrustStatsCollector(stats))

    def watch_signatures(self, stats: Callable[[], dict[tuple[str, str], int]]) -> None:
        self.registry.register(SignatureStatsCollector(stats))

    def watch_signature_cache(self, stats: Callable[[], dict[str, int]]) -> None:
        self.registry.register(SignatureCacheCollector(stats))

    def record(self, allowed: bool, error: bool, images: list[dict], seconds: float) -> None:
        self.admissions.labels("allowed" if allowed else "denied", "true" if error else "false").inc()
        for item in images:
            self.images.labels("allowed" if item.get("allowed") else "denied").inc()
        self.latency.observe(seconds)
