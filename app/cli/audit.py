"""`ostiary audit`: what running in the cluster would be denied now, and why (docs/audit.md). The
options are parsed here, with serve's own for what the webhook decides with; the audit itself is
app/audit (app/audit/options.py run_command)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from app.audit.options import COMMAND_API_QPS
from app.cli.options import (
    ca_file_option,
    decision_options,
    rego_dir_option,
    report_format_option,
    serve_config,
    system_namespace_option,
)

if TYPE_CHECKING:
    from app.runtime import ServeConfig


@click.command()
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    help="Kubeconfig (default: in-cluster, then ~/.kube/config).",
)
@click.option("-n", "--namespace", help="Audit this namespace only (default: all).")
@report_format_option()
@ca_file_option()
@system_namespace_option()
@rego_dir_option("The custom Rego the webhook runs with.")
@click.option(
    "--api-qps",
    default=COMMAND_API_QPS,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="List requests per second at most.",
)
@decision_options
@serve_config(kube=True)
def audit(config: ServeConfig, namespace: str | None, fmt: str, api_qps: float) -> None:
    """What running in the cluster would be denied now, and why (docs/audit.md). Read-only."""
    from app.audit.options import run_command  # lazy: loads the runtime; `ostiary --help` stays fast

    run_command(config, namespace, fmt, api_qps)
