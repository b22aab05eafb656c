"""`ostiary serve`: check every option now, then hand a ServeConfig to gunicorn (app/wsgi.py)."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING

import click

from app import defaults
from app.audit.options import serve_options as audit_serve_options
from app.cli.options import (
    ca_file_option,
    decision_options,
    rego_dir_option,
    serve_config,
    system_namespace_option,
)

if TYPE_CHECKING:
    from app.runtime import ServeConfig

LOOPBACK_NAMES = {"localhost"}


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def state_dir_for_serve(state_dir: str | None, kube: bool) -> str | None:
    """The state directory `serve` uses, checked usable now (not at the first admission).

    Directory mode defaults to the user's state dir; with --kube the records are TrustRecord objects
    in the system namespace, shared by all replicas, unless a directory is given (docs/trust.md)."""
    from app.notary.state import FileRecordStore, StateError, default_state_dir  # lazy: start-up

    if state_dir is None and kube:
        return None
    chosen = state_dir or str(default_state_dir())
    try:
        FileRecordStore(chosen).ensure()
    except StateError as exc:
        if state_dir is None:
            # The default is a home directory: a container user often has none, on a read-only root.
            # Records in a temporary folder would be forgotten silently, so this is a refusal, not a
            # fallback.
            raise click.UsageError(
                f"--state-dir: {exc}. That is the default ($XDG_STATE_HOME/ostiary or "
                "~/.local/state/ostiary); give --state-dir DIR on a writable volume that lasts as long "
                "as the records should (the Helm chart mounts one: value stateVolume)"
            ) from None
        raise click.UsageError(f"--state-dir: {exc}") from None
    return chosen


@click.command()
@click.option("--policy-dir", type=click.Path(file_okay=False), help="Directory of policy YAML files.")
@rego_dir_option()
@click.option("--listen", default=defaults.LISTEN, show_default=True, help="HOST:PORT to serve on.")
@click.option(
    "--tls-cert",
    type=click.Path(exists=True, dir_okay=False),
    help="TLS certificate (PEM); reloaded when it changes.",
)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="TLS private key (PEM).")
@click.option("--opa-url", help="Use this OPA (e.g. the sidecar) instead of starting one.")
@click.option(
    "--opa-token-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Bearer token for --opa-url (OPA run with --authentication=token); the OPA Ostiary starts gets a random one.",
)
@ca_file_option()
@click.option("--kube", is_flag=True, help="Read policies, secrets and owners from the Kubernetes API.")
@click.option(
    "--kubeconfig", type=click.Path(exists=True, dir_okay=False), help="Kubeconfig (default: in-cluster)."
)
@system_namespace_option("Where ClusterImagePolicy signer secrets live.")
@click.option(
    "--budget",
    default=defaults.BUDGET_SECONDS,
    show_default=True,
    help="Seconds one admission may take (keep under the webhook timeout).",
)
@click.option(
    "--trust-cache-ttl",
    default=defaults.TRUST_CACHE_TTL,
    show_default=True,
    help="Seconds verified trust data is reused before refreshing timestamp.json; also how long "
    "verified cosign and simple-signing results and tag resolutions are kept (docs/signatures.md).",
)
@click.option("--threads", default=defaults.THREADS, show_default=True, help="Request threads.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="Directory of durable trust-on-first-use records (default: $XDG_STATE_HOME/ostiary, "
    "or ~/.local/state/ostiary; with --kube: TrustRecords in --system-namespace unless given).",
)
@click.option(
    "--max-trust-records",
    default=defaults.MAX_TRUST_RECORDS,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most trust-on-first-use records kept; a repository used for the first time beyond it is denied.",
)
@click.option(
    "--decision-log",
    "decision_log",
    default="-",
    show_default=True,
    metavar="PATH|-|off",
    help="One JSON line per admission: '-' standard output, a file (appended to), or 'off'.",
)
@decision_options
@audit_serve_options
@serve_config()
def serve(config: ServeConfig, listen: str, tls_cert: str | None, tls_key: str | None, threads: int) -> None:
    """Serve POST /admit, GET /healthz, /readyz, /metrics (under gunicorn)."""
    from app.wsgi import run_gunicorn  # lazy: gunicorn and the whole runtime load only to serve

    host, port = split_listen(listen)
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if not tls_cert and not is_loopback(host):
        raise click.UsageError("without --tls-cert/--tls-key Ostiary serves plain HTTP on loopback only")
    if not config.kube and not config.policy_dir:
        raise click.UsageError("give --policy-dir DIR (or --kube for the cluster source)")
    check_decision_log(config.decision_log)
    check_opa_token(config.opa_token_file, config.opa_url)
    if config.kube:
        check_kubeconfig(config.kubeconfig)
    config = dataclasses.replace(config, state_dir=state_dir_for_serve(config.state_dir, config.kube))
    run_gunicorn(config, host, port, tls_cert, tls_key, threads)


def check_decision_log(target: str | None) -> None:
    """--decision-log FILE: appendable now, not in the worker at its first admission."""
    if target in (None, "-", "off"):
        return
    try:
        Path(str(target)).open("a").close()
    except OSError as exc:
        raise click.BadParameter(
            f"cannot append to {target}: {exc.strerror}", param_hint="--decision-log"
        ) from None


def check_kubeconfig(kubeconfig: str | None) -> None:
    """--kube: the cluster configuration is usable now, not a traceback in a worker that fails to boot."""
    from app.kube.client import KubeConfigError, load_api_client  # lazy: start-up

    try:
        load_api_client(kubeconfig)  # builds the client only: nothing is sent, nothing kept open
    except KubeConfigError as exc:
        raise click.UsageError(str(exc)) from None


def check_opa_token(token_file: str | None, opa_url: str | None) -> None:
    """--opa-token-file: for --opa-url only, and holding one token, read now."""
    from app.supervise import read_token  # lazy: start-up

    if not token_file:
        return
    if not opa_url:
        raise click.UsageError("--opa-token-file is for --opa-url; the OPA Ostiary starts gets its own token")
    try:
        read_token(token_file)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
