"""`ostiary audit`: what running in the cluster would be denied now, and why (docs/audit.md). The
options are parsed here; the audit itself is app/audit (app/audit/options.py run_command)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from app.cli.options import (
    bounds_options,
    ca_file_option,
    checked_root_pins,
    checked_trusted_root,
    registry_endpoint_option,
    rego_dir_option,
    system_namespace_option,
    trust_server_allow_option,
)

if TYPE_CHECKING:
    from app.policies.bounds import Bounds


@click.command()
@click.option(
    "--kubeconfig",
    type=click.Path(exists=True, dir_okay=False),
    help="Kubeconfig (default: in-cluster, then ~/.kube/config).",
)
@click.option("-n", "--namespace", help="Audit this namespace only (default: all).")
@click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(["table", "json", "yaml", "junit"]),
    default="table",
    show_default=True,
)
@ca_file_option()
@system_namespace_option()
@rego_dir_option("The custom Rego the webhook runs with.")
@click.option("--root-pins", type=click.Path(exists=True, dir_okay=False), help="As `serve --root-pins`.")
@registry_endpoint_option("As `serve --registry-endpoint`. Repeatable.")
@click.option(
    "--sigstore-trusted-root",
    type=click.Path(exists=True, dir_okay=False),
    help="As `serve --sigstore-trusted-root`.",
)
@trust_server_allow_option()
@click.option(
    "--api-qps",
    default=20.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="List requests per second at most.",
)
@bounds_options
def audit(
    kubeconfig: str | None,
    namespace: str | None,
    fmt: str,
    ca_file: str | None,
    system_namespace: str,
    rego_dir: str | None,
    root_pins: str | None,
    registry_endpoints: dict[str, str],
    sigstore_trusted_root: str | None,
    trust_server_allow: tuple[str, ...],
    api_qps: float,
    bounds: Bounds,
) -> None:
    """What running in the cluster would be denied now, and why (docs/audit.md). Read-only."""
    from app.audit.options import run_command
    from app.runtime import ServeConfig

    config = ServeConfig(
        kube=True,
        kubeconfig=kubeconfig,
        ca_file=ca_file,
        system_namespace=system_namespace,
        rego_dir=rego_dir,
        root_pins=checked_root_pins(root_pins),
        registry_endpoints=registry_endpoints,
        sigstore_trusted_root=checked_trusted_root(sigstore_trusted_root),
        trust_server_allow=trust_server_allow,
        bounds=bounds,
    )
    run_command(config, namespace, fmt, api_qps)
