"""The `ostiary` command: serve | check | translate | explain | test | trust inspect."""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import click
import yaml

from app.policies.model import DEFAULT_SYSTEM_NAMESPACE, PolicyError

LOOPBACK_NAMES = {"localhost"}


def _split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter(f"{listen!r} is not HOST:PORT", param_hint="--listen")
    return host.strip("[]"), int(port)


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.group()
@click.option("--log-level", default="INFO", show_default=True, help="Python log level.")
def main(log_level: str) -> None:
    """Ostiary: admit only container images whose Notary v1 trust data verifies."""
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )


@main.command()
@click.option("--policy-dir", type=click.Path(file_okay=False), help="Directory of policy YAML files.")
@click.option("--rego-dir", type=click.Path(exists=True, file_okay=False), help="Custom Rego rules (package ostiary.custom.<name>).")
@click.option("--listen", default="127.0.0.1:8443", show_default=True, help="HOST:PORT to serve on.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="TLS certificate (PEM); reloaded when it changes.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="TLS private key (PEM).")
@click.option("--opa-url", help="Use this OPA (e.g. the sidecar) instead of starting one.")
@click.option("--opa-token-file", type=click.Path(exists=True, dir_okay=False),
              help="Bearer token for --opa-url (OPA run with --authentication=token); the OPA Ostiary starts gets a random one.")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), help="Extra CA bundle for Notary servers.")
@click.option("--kube", is_flag=True, help="Read policies, secrets and owners from the Kubernetes API.")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), help="Kubeconfig (default: in-cluster).")
@click.option("--system-namespace", default=DEFAULT_SYSTEM_NAMESPACE, show_default=True, help="Where ClusterImagePolicy signer secrets live.")
@click.option("--budget", default=8.0, show_default=True, help="Seconds one admission may take (keep under the webhook timeout).")
@click.option("--trust-cache-ttl", default=60.0, show_default=True, help="Seconds verified trust data is reused before refreshing timestamp.json.")
@click.option("--threads", default=8, show_default=True, help="Request threads.")
def serve(policy_dir, rego_dir, listen, tls_cert, tls_key, opa_url, opa_token_file, ca_file, kube, kubeconfig,
          system_namespace, budget, trust_cache_ttl, threads) -> None:
    """Serve POST /admit, GET /healthz, /readyz, /metrics (under gunicorn)."""
    from app.server import ServeConfig, read_token
    from app.wsgi import run_gunicorn

    host, port = _split_listen(listen)
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if not tls_cert and not _is_loopback(host):
        raise click.UsageError("without --tls-cert/--tls-key Ostiary serves plain HTTP on loopback only")
    if not kube and not policy_dir:
        raise click.UsageError("give --policy-dir DIR (or --kube for the cluster source)")
    if opa_token_file:
        if not opa_url:
            raise click.UsageError("--opa-token-file is for --opa-url; the OPA Ostiary starts gets its own token")
        try:
            read_token(opa_token_file)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    config = ServeConfig(
        policy_dir=policy_dir, rego_dir=rego_dir, opa_url=opa_url, opa_token_file=opa_token_file, ca_file=ca_file,
        system_namespace=system_namespace, budget=budget, trust_cache_ttl=trust_cache_ttl,
        kube=kube, kubeconfig=kubeconfig,
    )
    run_gunicorn(config, host, port, tls_cert, tls_key, threads)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def translate(file: str) -> None:
    """Print the Rego module of every policy in FILE."""
    from app.policies.schema import parse_policy_document
    from app.policies.translate import translate as to_rego

    try:
        docs = list(yaml.safe_load_all(Path(file).read_text()))
        for index, doc in enumerate(docs):
            if doc is None or (isinstance(doc, dict) and doc.get("kind") in ("Secret", "ServiceAccount")):
                continue
            module = to_rego(parse_policy_document(doc, f"{file}#{index}"))
            click.echo(f"# module id: {module.id}")
            click.echo(module.source)
    except (PolicyError, yaml.YAMLError) as exc:
        raise click.ClickException(str(exc)) from None


def _with_opa(policy_dir: str, rego_dir: str | None, system_namespace: str):
    from app.opa.client import OpaClient
    from app.opa.process import LocalOpa
    from app.policies.directory import load_custom_rego, load_policy_set, translate_all
    from app.policies.sync import PolicySync, library_modules

    policy_set = load_policy_set(policy_dir, system_namespace)
    modules = translate_all(policy_set.policies)
    opa = LocalOpa(authenticate=True).start()
    client = OpaClient(opa.url, token=opa.token)
    sync = PolicySync(client)
    sync.set_base(library_modules() + (load_custom_rego(rego_dir) if rego_dir else []))
    sync.replace_all(modules)
    return opa, client, policy_set


@main.command()
@click.option("--policy-dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--rego-dir", type=click.Path(exists=True, file_okay=False))
@click.option("--system-namespace", default=DEFAULT_SYSTEM_NAMESPACE, show_default=True)
def check(policy_dir, rego_dir, system_namespace) -> None:
    """Validate a policy directory (and custom Rego) and compile it in a real OPA."""
    from app.opa.client import OpaError

    try:
        opa, _, policy_set = _with_opa(policy_dir, rego_dir, system_namespace)
    except (PolicyError, OpaError) as exc:
        raise click.ClickException(str(exc)) from None
    opa.stop()
    click.echo(
        f"ok: {len(policy_set.policies)} policies, {len(policy_set.secrets)} secrets, "
        f"{len(policy_set.service_accounts)} service accounts compile in OPA"
    )


@main.command()
@click.argument("review", type=click.File("r"))
@click.option("--policy-dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--rego-dir", type=click.Path(exists=True, file_okay=False))
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--system-namespace", default=DEFAULT_SYSTEM_NAMESPACE, show_default=True)
def explain(review, policy_dir, rego_dir, ca_file, system_namespace) -> None:
    """Decide an AdmissionReview (JSON or YAML file, '-' for stdin) and print the response."""
    from app.admission.extract import BadRequest
    from app.admission.review import Reviewer
    from app.notary.service import TrustService
    from app.opa.client import OpaError
    from app.policies.directory import DirectoryStore

    try:
        body = yaml.safe_load(review.read())
        opa, client, policy_set = _with_opa(policy_dir, rego_dir, system_namespace)
    except (PolicyError, OpaError, yaml.YAMLError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        reviewer = Reviewer(client, DirectoryStore(policy_set), trust=TrustService(ca_file=ca_file),
                            system_namespace=system_namespace, budget=30.0)
        answer, outcome = reviewer.review(body)
    except BadRequest as exc:
        raise click.ClickException(f"bad AdmissionReview: {exc}") from None
    finally:
        opa.stop()
    click.echo(json.dumps({"response": answer["response"], "images": outcome.images}, indent=2))
    sys.exit(0 if outcome.allowed else 1)


@main.command(name="test")
@click.option("--rego-dir", type=click.Path(exists=True, file_okay=False), help="Custom rules and their *_test.rego.")
def test_cmd(rego_dir) -> None:
    """Run `opa test` over Ostiary's Rego library (and custom rules with their tests)."""
    from app.opa.process import find_opa
    from app.paths import rego_library_dir

    args = [find_opa(), "test", "-v", str(rego_library_dir())]
    if rego_dir:
        args.append(rego_dir)
    sys.exit(subprocess.call(args))


@main.group()
def trust() -> None:
    """Notary v1 trust data."""


@trust.command()
@click.argument("image")
@click.option("--trust-server", help="Notary server URL (default: by registry host).")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--signer", "signers", multiple=True, metavar="NAME=PEMFILE", help="Required signer and its public key/certificate.")
@click.option("--at", "at", help="Verify as of this time (RFC 3339), e.g. for archived data.")
@click.option("--timeout", default=30.0, show_default=True)
def inspect(image, trust_server, ca_file, signers, at, timeout) -> None:
    """Print the verified trust facts of IMAGE as JSON, or why they could not be verified."""
    from app.notary.inspect import explain, inspect_image

    pairs = []
    for item in signers:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_file():
            raise click.BadParameter(f"{item!r} is not NAME=PEMFILE (an existing file)", param_hint="--signer")
        pairs.append((name, Path(path).read_text()))
    moment = None
    if at:
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            raise click.BadParameter(f"{at!r} is not an RFC 3339 time", param_hint="--at") from None
    started = time.monotonic()
    facts, ok = inspect_image(image, trust_server=trust_server, ca_file=ca_file, signers=pairs, at=moment, timeout=timeout)
    click.echo(json.dumps(facts, indent=2, sort_keys=True))
    if not ok:
        click.echo(f"not verified: {explain(facts)} ({time.monotonic() - started:.2f}s)", err=True)
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
