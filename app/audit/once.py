"""``ostiary audit``: one audit of the cluster (or a namespace) from outside, with the same
decision as the serving webhook: a read-only cluster-mode runtime (its own OPA, the policies from
the API, trust records read but never written) decides every listed object and prints the table."""

from __future__ import annotations

import time
from dataclasses import replace

from app.audit.engine import Auditor, AuditRun, run_audit
from app.audit.options import COMMAND_API_QPS
from app.audit.ratelimit import TokenBucket
from app.audit.scan import DEFAULT_PAGE_SIZE, paged
from app.errors import OstiaryError, UnavailableError
from app.kube.client import KubeError
from app.runtime import Runtime, ServeConfig


class AuditUnavailable(UnavailableError):
    """The audit could not run at all (no policies in force, the API not reachable)."""


def audit_once(
    config: ServeConfig,
    namespace: str | None = None,
    *,
    api_qps: float = COMMAND_API_QPS,
    page_size: int = DEFAULT_PAGE_SIZE,
    ready_timeout: float = 60.0,
) -> AuditRun:
    """One audit through a runtime built from `config` (a ServeConfig with kube=True)."""
    config = replace(config, kube=True, read_only=True, audit=None, decision_log="off")
    try:
        runtime = Runtime(config)
    except OstiaryError as exc:  # the kubeconfig (KubeConfigError), a token file: say which and stop
        raise AuditUnavailable(f"cannot build the audit runtime: {exc}") from None
    try:
        runtime.start()
        deadline = time.monotonic() + ready_timeout
        assert runtime.kube is not None
        while not (runtime.kube.ready and runtime.serving()):
            if time.monotonic() > deadline:
                raise AuditUnavailable(
                    "the policies did not come into force within "
                    f"{ready_timeout:.0f}s: {runtime.load_error or 'the cluster policy source has not synced'}"
                )
            time.sleep(0.1)
        try:
            return run_audit(
                paged(runtime.kube.api),
                Auditor(runtime.reviewer),
                namespace=namespace,
                list_bucket=TokenBucket(api_qps, burst=max(api_qps, 1.0)),
                page_size=page_size,
            )
        except KubeError as exc:
            raise AuditUnavailable(f"the Kubernetes API failed: {exc}") from None
    finally:
        runtime.stop()
