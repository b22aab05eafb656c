"""The audit in the background of ``serve --kube --audit``: every ``interval`` seconds, and again
soon after the policies in force change, by whichever replica holds the audit Lease.

The work is spread: decisions are paced so an audit takes about ``SPREAD`` of the interval (at most
``max_rate`` objects per second, at least ``MIN_RATE``), and list pages are paced by their own token
bucket (``api_qps``). Trust data comes through the serving trust service and its cache, so an
image seen within the cache's freshness costs no trust server round trip.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from app.admission.review import Reviewer
from app.audit.config import AuditConfig
from app.audit.engine import Auditor, AuditRun, run_audit
from app.audit.lease import Lease
from app.audit.metrics import AuditMetrics
from app.audit.ratelimit import TokenBucket
from app.audit.reports import ReportWriter
from app.audit.scan import AuditApi, AuditStopped
from app.kube.client import KubeError

log = logging.getLogger("ostiary.audit")

SPREAD = 0.5  # an audit is paced to take about this share of the interval
MIN_RATE = 2.0  # objects per second, however long the interval


class AuditLoop:
    def __init__(
        self,
        api: AuditApi,
        reviewer: Reviewer,
        *,
        system_namespace: str,
        config: AuditConfig,
        metrics: AuditMetrics,
        generation: Callable[[], int] | None = None,  # the policy set's generation (PolicySync.generation)
        ready: Callable[[], bool] | None = None,  # the policy source has synced
        identity: str | None = None,
    ):
        self.api = api
        self.auditor = Auditor(reviewer)
        self.config = config
        self.metrics = metrics
        self.writer = ReportWriter(api, config.page_size)
        self.lease = Lease(
            api,
            system_namespace,
            identity or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            duration=config.lease_duration,
        )
        self.generation = generation or (lambda: 0)
        self.ready = ready or (lambda: True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ostiary-audit", daemon=True)
        self._buckets: list[TokenBucket] = []
        self.last_run: AuditRun | None = None
        self.last_error: str | None = None
        self.completed = 0  # audits whose reports were written
        self._last_count = 0
        self._audited_generation: int | None = None

    def start(self) -> AuditLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        for bucket in self._buckets:
            bucket.close()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.lease.release()

    def _run(self) -> None:
        """Hold (or wait for) the lease; as its holder, audit when the interval since the last audit
        by any replica (the lease's annotation) has passed, or soon after the policies changed."""
        holding = False
        next_due = 0.0  # wall clock: when the next audit is due (set on taking the lease)
        next_skip = 0.0  # wall clock: when a replica without the lease counts its next skipped audit
        changed_at: float | None = None
        last_start = -1e18
        renew_every = max(self.config.lease_duration / 3.0, 1.0)
        while not self._stop.is_set():
            holder = self.lease.acquire()
            now, mono = time.time(), time.monotonic()
            generation = self.generation()
            ready = self.ready()
            if holder and not holding:  # taken (or first held): continue the cluster's rhythm
                audited = self.lease.audited_at
                next_due = audited + self.config.interval if audited is not None else now
                self._audited_generation = generation
                changed_at = None
                log.info(
                    "audit lease taken by %s; next audit in %.0fs",
                    self.lease.identity,
                    max(next_due - now, 0),
                )
            holding = holder
            if not holder:
                self._audited_generation = generation  # the holder audits policy changes
                if ready and now >= next_skip:
                    self.metrics.finished("skipped", time.time())
                    next_skip = now + self.config.interval
            else:
                if self._audited_generation is not None and generation != self._audited_generation:
                    changed_at = changed_at if changed_at is not None else mono
                due = now >= next_due or (
                    changed_at is not None and mono - changed_at >= self.config.change_delay
                )
                if due and ready and mono - last_start >= self.config.min_gap:
                    last_start = mono
                    changed_at = None
                    self._audited_generation = generation
                    if self.audit_once() is not None:
                        self.lease.mark_audited(time.time())
                    next_due = time.time() + self.config.interval
            wait = renew_every
            if holder:
                wait = min(wait, max(next_due - time.time(), 0.5))
                if changed_at is not None:
                    wait = min(wait, self.config.change_delay)
            self._stop.wait(wait)

    def audit_once(self) -> AuditRun | None:
        """One paced audit of the whole cluster, written as reports; None when it did not finish."""
        # Paced by the size of the last audit; the first one (nothing known yet) at the most allowed.
        spread = (
            self._last_count / (self.config.interval * SPREAD) if self._last_count else self.config.max_rate
        )
        rate = min(self.config.max_rate, max(MIN_RATE, spread))
        list_bucket = TokenBucket(self.config.api_qps, burst=2)
        object_bucket = TokenBucket(rate, burst=max(rate, 1.0))
        self._buckets = [list_bucket, object_bucket]
        renewed = [time.monotonic()]

        def keep_lease() -> None:
            if time.monotonic() - renewed[0] >= self.config.lease_duration / 3.0:
                renewed[0] = time.monotonic()
                if not self.lease.acquire():
                    raise AuditStopped("the audit lease was lost to another replica")
            if self._stop.is_set():
                raise AuditStopped("stopping")

        try:
            run = run_audit(
                self.api,
                self.auditor,
                list_bucket=list_bucket,
                object_bucket=object_bucket,
                page_size=self.config.page_size,
                on_object=keep_lease,
            )
            self.metrics.record(run)  # the metrics say what was found, even if no report is written
            unwritten = self.writer.write(run)
        except AuditStopped as exc:
            log.info("audit not finished: %s", exc)
            self.metrics.finished("failed", time.time())
            self.last_error = str(exc)
            return None
        except KubeError as exc:
            log.error("audit reports not written: %s", exc)
            self.metrics.finished("failed", time.time())
            self.last_error = f"the reports could not be written: {exc}"
            return None
        except Exception as exc:  # noqa: BLE001 - the loop must go on; the metric and log say why
            log.exception("audit failed")
            self.metrics.finished("failed", time.time())
            self.last_error = f"{exc.__class__.__name__}: {exc}"
            return None
        finally:
            self._buckets = []
        self._last_count = run.objects
        self.last_run = run
        self.last_error = None
        self.completed += 1
        if unwritten:  # e.g. namespaces being deleted: the others' reports are written
            self.last_error = f"{len(unwritten)} reports not written: " + "; ".join(unwritten[:5])
        self.metrics.finished("incomplete" if run.list_errors or unwritten else "complete", time.time())
        counts = run.counts()
        log.info(
            "audit: %d objects in %.1fs (%.1f/s, %.1fs CPU): %s%s",
            run.objects,
            run.seconds,
            run.objects / run.seconds if run.seconds else 0.0,
            run.cpu_seconds,
            ", ".join(f"{n} {k}" for k, n in counts.items()),
            f"; incomplete: {'; '.join(run.list_errors)}" if run.list_errors else "",
        )
        return run
