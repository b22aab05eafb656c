"""The command-line side of the audit: `serve`'s --audit options and `ostiary audit`'s run, so
app/cli only declares options and calls in here."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import click

from app.audit.config import AuditConfig

if TYPE_CHECKING:
    from app.runtime import ServeConfig

DEFAULTS = AuditConfig()
COMMAND_API_QPS = 20.0  # `ostiary audit --api-qps`: one audit from outside may list faster than serve's

# serve's --audit-* options that are numbers: (option, AuditConfig field, lowest value, help)
_NUMBERS = (
    ("--audit-interval", "interval", 30.0, "Seconds between audits (an audit also follows a policy change)."),
    (
        "--audit-rate",
        "max_rate",
        0.1,
        "Objects decided per second at most (an audit is spread over half the interval).",
    ),
    ("--audit-api-qps", "api_qps", 0.1, "List requests per second at most, against the API server."),
)


def serve_options(command: Callable[..., object]) -> Callable[..., object]:
    """--audit, --audit-interval, --audit-rate, --audit-api-qps, passed as `audit` (AuditConfig | None)."""

    def with_audit(
        *args: object,
        audit: bool,
        audit_interval: float,
        audit_rate: float,
        audit_api_qps: float,
        **kwargs: object,
    ) -> object:
        if audit and not kwargs.get("kube"):
            raise click.UsageError("--audit needs --kube: the audit reads what runs in the cluster")
        config = (
            AuditConfig(interval=audit_interval, max_rate=audit_rate, api_qps=audit_api_qps)
            if audit
            else None
        )
        return command(*args, audit=config, **kwargs)

    functools.update_wrapper(with_audit, command)
    options = [
        click.option(
            "--audit/--no-audit",
            default=False,
            show_default=True,
            help="Re-decide every running workload in the background and write PolicyReports (docs/audit.md).",
        ),
        *(
            click.option(
                name,
                default=getattr(DEFAULTS, field),
                show_default=True,
                type=click.FloatRange(min=lowest),
                help=help,
            )
            for name, field, lowest, help in _NUMBERS
        ),
    ]
    for option in reversed(options):
        with_audit = option(with_audit)
    return with_audit


def run_command(config: ServeConfig, namespace: str | None, fmt: str, api_qps: float) -> None:
    """`ostiary audit`: print the audit; exit 0 when everything passes (or warns), 1 when something
    fails or could not be decided, 2 when the audit could not run."""
    from app.audit.engine import ERROR, FAIL  # lazy: these load the runtime; serve's options load fast
    from app.audit.once import AuditUnavailable, audit_once  # lazy: as above
    from app.audit.render import render  # lazy: as above

    try:
        run = audit_once(config, namespace, api_qps=api_qps)
    except AuditUnavailable as exc:
        click.echo(f"ostiary audit: {exc}", err=True)
        sys.exit(2)
    click.echo(render(run, fmt))
    counts = run.counts()
    sys.exit(1 if counts[FAIL] or counts[ERROR] or run.list_errors else 0)
