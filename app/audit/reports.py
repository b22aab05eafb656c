"""The audit's results as PolicyReports of the policy working group (``wgpolicyk8s.io/v1alpha2``),
the objects Kyverno writes and the Policy Reporter UI reads.

One ``PolicyReport`` named ``ostiary-audit`` per namespace that has workloads, one result per
object and image; a ``ClusterPolicyReport`` named ``ostiary-audit`` only while something could not
be listed (no workload kind Ostiary checks is cluster-scoped). Reports are created or replaced
with a merge patch carrying the resourceVersion read (a concurrent writer makes it fail, never
lose data), and only when their content changed: a result that is the same as in the last report
keeps its timestamp (when it was first found), so an unchanged cluster costs no write. Reports of
namespaces without workloads any more are deleted. When a kind could not be listed, its results
from the last report are kept, turned into ``error`` (not re-checked) — never left as a pass.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

from app.audit.engine import RESULTS, SOURCE, AuditRun, Result
from app.audit.scan import AuditApi
from app.kube.client import KubeError, object_path

log = logging.getLogger("ostiary.audit")

GROUP, VERSION = "wgpolicyk8s.io", "v1alpha2"
API_VERSION = f"{GROUP}/{VERSION}"
REPORT_NAME = "ostiary-audit"
LABELS = {"app.kubernetes.io/managed-by": "ostiary", "ostiary.dev/audit": "true"}
SELECTOR = ",".join(f"{k}={v}" for k, v in LABELS.items())
CATEGORY = "Image trust"


def report_result(r: Result) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "policy": r.policy,
        "rule": r.rule,
        "result": r.result,
        "message": r.message,
        "source": SOURCE,
        "category": CATEGORY,
        "scored": True,
        "timestamp": {"seconds": int(r.timestamp), "nanos": 0},
        "resources": [
            {
                "apiVersion": r.api_version,
                "kind": r.kind,
                "namespace": r.namespace,
                "name": r.name,
                "uid": r.uid,
            }
        ],
    }
    if r.image:
        entry["properties"] = {"container": r.container, "image": r.image}
    return entry


def _identity(entry: dict) -> tuple:
    """What makes two report results the same finding (everything but the timestamp)."""
    return tuple((k, repr(v)) for k, v in sorted(entry.items()) if k != "timestamp")


def _order(entry: dict) -> tuple:
    res = (entry.get("resources") or [{}])[0]
    props = entry.get("properties") or {}
    return (res.get("kind", ""), res.get("name", ""), props.get("container", ""), entry.get("policy", ""))


def summary(results: list[dict]) -> dict[str, int]:
    counts = dict.fromkeys((*RESULTS, "skip"), 0)
    for entry in results:
        counts[entry["result"]] = counts.get(entry["result"], 0) + 1
    return counts


def build_results(
    current: list[Result], previous: list[dict] | None, failed_kinds: list[str], list_errors: list[str]
) -> list[dict]:
    """The results of one namespace: the audit's, the previous timestamps kept for unchanged
    findings, and the previous results of kinds that could not be listed turned into errors."""
    kept: dict[tuple, object] = {}  # identity -> the timestamp the finding was first reported at
    for entry in previous or []:
        kept.setdefault(_identity(entry), entry.get("timestamp"))
    out = []
    for r in current:
        entry = report_result(r)
        stamp = kept.get(_identity(entry))
        if stamp is not None:
            entry["timestamp"] = stamp
        out.append(entry)
    if failed_kinds:
        why = "; ".join(list_errors)
        for entry in previous or []:
            res = (entry.get("resources") or [{}])[0]
            if f"{res.get('apiVersion')} {res.get('kind')}" not in failed_kinds:
                continue
            message = entry.get("message") or ""
            if not message.startswith("not re-checked"):
                message = f"not re-checked: {why} (last result: {entry.get('result')}: {message})"
            out.append({**entry, "result": "error", "message": message})
    return sorted(out, key=_order)


def report_body(kind: str, namespace: str | None, results: list[dict]) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": REPORT_NAME, "labels": dict(LABELS)}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": metadata,
        "summary": summary(results),
        "results": results,
    }


class ReportWriter:
    """Writes an AuditRun as PolicyReports through a KubeApi (create / merge patch / delete)."""

    def __init__(self, api: AuditApi, page_size: int = 250):
        self.api = api
        self.page_size = page_size
        self.writes = 0  # reports created, patched or deleted (tests and metrics)

    def served(self) -> bool:
        return bool(self.api.group_version_served(GROUP, VERSION))

    def _existing(self, namespace: str | None) -> dict[str, dict]:
        """Ostiary's PolicyReports now, by namespace (all namespaces, or one)."""
        path = object_path(API_VERSION, "policyreports", namespace)
        found: dict[str, dict] = {}
        token = None
        while True:
            page = self.api.list_page(path, self.page_size, token, label_selector=SELECTOR)
            for item in page.get("items") or []:
                meta = item.get("metadata") or {}
                if meta.get("name") == REPORT_NAME:
                    found[str(meta.get("namespace"))] = item
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return found

    def write(self, run: AuditRun) -> list[str]:
        """Make the reports say what `run` found (for its namespace, or all). A report that cannot be
        written (a namespace being deleted refuses new objects) is skipped and named in the list
        returned; the others are written. Raises KubeError when the reports cannot even be listed."""
        failures: list[str] = []
        existing = self._existing(run.namespace)
        by_namespace: dict[str, list[Result]] = defaultdict(list)
        for r in run.results:
            by_namespace[r.namespace].append(r)
        for namespace in sorted(set(by_namespace) | set(existing)):
            before = existing.get(namespace)
            results = build_results(
                by_namespace.get(namespace, []),
                (before or {}).get("results"),
                run.failed_kinds,
                run.list_errors,
            )
            path = object_path(API_VERSION, "policyreports", namespace, REPORT_NAME)
            try:
                if not results:
                    if before is not None:
                        self.api.delete(path)
                        self.writes += 1
                    continue
                self._put(
                    path,
                    object_path(API_VERSION, "policyreports", namespace),
                    before,
                    report_body("PolicyReport", namespace, results),
                )
            except KubeError as exc:
                log.warning("audit: the report of namespace %s was not written: %s", namespace, exc)
                failures.append(f"namespace {namespace}: {exc}")
        if run.namespace is None:
            try:
                self._cluster_report(run)
            except KubeError as exc:
                log.warning("audit: the cluster report was not written: %s", exc)
                failures.append(f"cluster report: {exc}")
        return failures

    def _put(self, path: str, collection: str, before: dict | None, body: dict) -> None:
        if before is None:
            try:
                self.api.create(collection, body)
                self.writes += 1
                return
            except KubeError as exc:
                if exc.status != 409:
                    raise
                before = self.api.get(path)
                if before is None:
                    raise
        if before.get("results") == body["results"] and before.get("summary") == body["summary"]:
            return  # unchanged: no write
        patch = {
            "metadata": {
                "labels": body["metadata"]["labels"],
                "resourceVersion": (before.get("metadata") or {}).get("resourceVersion"),
            },
            "summary": body["summary"],
            "results": body["results"],  # a merge patch replaces a list whole: stale results go
        }
        self.api.patch(path, patch)
        self.writes += 1

    def _cluster_report(self, run: AuditRun) -> None:
        path = object_path(API_VERSION, "clusterpolicyreports", None, REPORT_NAME)
        before = self.api.get(path)
        if not run.list_errors:
            if before is not None:
                self.api.delete(path)
                self.writes += 1
            return
        results = [
            {
                "policy": SOURCE,
                "rule": "list",
                "result": "error",
                "message": message,
                "source": SOURCE,
                "category": CATEGORY,
                "scored": True,
                "timestamp": {"seconds": int(run.started), "nanos": 0},
            }
            for message in run.list_errors
        ]
        self._put(
            path,
            object_path(API_VERSION, "clusterpolicyreports", None),
            before,
            report_body("ClusterPolicyReport", None, results),
        )
