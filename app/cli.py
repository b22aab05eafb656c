"""The `ostiary` command: serve | check | translate | explain | test | trust inspect | pins | pin | unpin."""

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
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), help="Extra CA bundle for Notary servers.")
@click.option("--kube", is_flag=True, help="Read policies, secrets and owners from the Kubernetes API.")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), help="Kubeconfig (default: in-cluster).")
@click.option("--system-namespace", default=DEFAULT_SYSTEM_NAMESPACE, show_default=True, help="Where ClusterImagePolicy signer secrets live.")
@click.option("--budget", default=8.0, show_default=True, help="Seconds one admission may take (keep under the webhook timeout).")
@click.option("--trust-cache-ttl", default=60.0, show_default=True, help="Seconds verified trust data is reused before refreshing timestamp.json.")
@click.option("--threads", default=8, show_default=True, help="Request threads.")
@click.option("--state-dir", type=click.Path(file_okay=False),
              help="Directory of durable trust-on-first-use records (default: $XDG_STATE_HOME/ostiary, "
                   "or ~/.local/state/ostiary; with --kube: TrustRecords in --system-namespace unless given).")
@click.option("--root-pins", type=click.Path(exists=True, dir_okay=False),
              help="YAML file mapping trust server URLs to pinned root material (publicKeys / caCertificates) "
                   "for entries without their own rootSecrets.")
def serve(policy_dir, rego_dir, listen, tls_cert, tls_key, opa_url, ca_file, kube, kubeconfig,
          system_namespace, budget, trust_cache_ttl, threads, state_dir, root_pins) -> None:
    """Serve POST /admit, GET /healthz, /readyz, /metrics (under gunicorn)."""
    from app.server import ServeConfig
    from app.wsgi import run_gunicorn

    host, port = _split_listen(listen)
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if not tls_cert and not _is_loopback(host):
        raise click.UsageError("without --tls-cert/--tls-key Ostiary serves plain HTTP on loopback only")
    if not kube and not policy_dir:
        raise click.UsageError("give --policy-dir DIR (or --kube for the cluster source)")
    config = ServeConfig(
        policy_dir=policy_dir, rego_dir=rego_dir, opa_url=opa_url, ca_file=ca_file,
        system_namespace=system_namespace, budget=budget, trust_cache_ttl=trust_cache_ttl,
        kube=kube, kubeconfig=kubeconfig, state_dir=_serve_state_dir(state_dir, kube),
        root_pins=_serve_root_pins(root_pins),
    )
    run_gunicorn(config, host, port, tls_cert, tls_key, threads)


def _serve_state_dir(state_dir: str | None, kube: bool) -> str | None:
    """The state directory `serve` uses, checked usable now (not at the first admission).

    Directory mode defaults to the user's state dir; with --kube the records are TrustRecord objects
    in the system namespace, shared by all replicas, unless a directory is given (docs/trust.md)."""
    from app.notary.state import FileRecordStore, StateError, default_state_dir

    if state_dir is None and kube:
        return None
    chosen = state_dir or str(default_state_dir())
    try:
        FileRecordStore(chosen).ensure()
    except StateError as exc:
        raise click.UsageError(f"--state-dir: {exc}") from None
    return chosen


def _serve_root_pins(path: str | None) -> str | None:
    """Check a --root-pins file now, so a bad one stops the start instead of denying later."""
    if path is None:
        return None
    from app.notary.verify import load_default_root_pins

    try:
        load_default_root_pins(path)
    except ValueError as exc:
        raise click.UsageError(f"--root-pins: {exc}") from None
    return path


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
    opa = LocalOpa().start()
    client = OpaClient(opa.url)
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


# -- trust records: pins, pin, unpin (docs/trust.md, "Roots of trust") --------------------------------

_STATE_DIR_HELP = "State directory of `ostiary serve` (default: $XDG_STATE_HOME/ostiary or ~/.local/state/ostiary)."


def _kube_records_options(command):
    """--kube/--kubeconfig/--system-namespace: the records of `ostiary serve --kube` (TrustRecords)."""
    command = click.option("--system-namespace", default=DEFAULT_SYSTEM_NAMESPACE, show_default=True,
                           help="With --kube: where the TrustRecords live.")(command)
    command = click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False),
                           help="With --kube: kubeconfig (default: in-cluster, then ~/.kube/config).")(command)
    return click.option("--kube", is_flag=True, help="Use the cluster's TrustRecords instead of a state directory.")(command)


def _record_store(state_dir: str | None, *, create: bool = False, kube: bool = False,
                  kubeconfig: str | None = None, system_namespace: str = DEFAULT_SYSTEM_NAMESPACE):
    from app.notary.state import FileRecordStore, StateError, default_state_dir

    if kube:
        from app.kube.client import RestKubeApi
        from app.kube.records import KubeRecordStore

        if state_dir:
            raise click.UsageError("--kube and --state-dir are two different stores: give one")
        try:
            return KubeRecordStore(RestKubeApi.from_kubeconfig(kubeconfig), system_namespace)
        except Exception as exc:  # noqa: BLE001 - no kubeconfig, unreadable file: a message, not a traceback
            raise click.ClickException(f"cannot reach the cluster's TrustRecords: {exc}") from None
    store = FileRecordStore(state_dir or default_state_dir())
    if create:
        try:
            store.ensure()
        except StateError as exc:
            raise click.ClickException(str(exc)) from None
    return store


def _record_key(image: str, trust_server: str | None) -> tuple[str, str]:
    """(server, GUN) of IMAGE as `ostiary serve` keys its records."""
    from app.images import InvalidImageReference, parse_image
    from app.notary.service import _normalize_server, trust_server_for

    try:
        ref = parse_image(image)
    except InvalidImageReference as exc:
        raise click.BadParameter(str(exc), param_hint="IMAGE") from None
    server = trust_server_for(ref.registry, trust_server)
    if server is None:
        raise click.UsageError(f"no Notary trust server is known for registry {ref.registry}; pass --trust-server URL")
    normalized, error = _normalize_server(server)
    if error is not None:
        raise click.UsageError(str(error))
    return normalized, ref.name


def _describe_record(record) -> dict:
    return {
        "server": record.server, "gun": record.gun, "rootKeyIDs": list(record.root_keyids),
        "rootDigest": record.root_digest, "versions": dict(sorted(record.versions.items())),
        "firstSeen": {"at": record.first_seen_at, "by": record.first_seen_by},
        "updated": {"at": record.updated_at, "by": record.updated_by}, "how": record.how,
    }


@trust.command()
@click.option("--state-dir", type=click.Path(file_okay=False), help=_STATE_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@_kube_records_options
def pins(state_dir, as_json, kube, kubeconfig, system_namespace) -> None:
    """List the recorded roots of trust: server, GUN, root key IDs, versions, first seen when and by whom."""
    from app.notary.state import StateError

    try:
        store = _record_store(state_dir, kube=kube, kubeconfig=kubeconfig, system_namespace=system_namespace)
        records = store.records()
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([_describe_record(r) for r in records], indent=2))
        return
    if not records:
        click.echo(f"no trust records in {store.description}")
        return
    for record in records:
        versions = " ".join(f"{role}={v}" for role, v in sorted(record.versions.items()))
        click.echo(f"{record.gun}  ({record.server})")
        click.echo(f"  root keys:  {', '.join(record.root_keyids)}")
        click.echo(f"  versions:   {versions}")
        click.echo(f"  first seen: {record.first_seen_at} by {record.first_seen_by} ({record.how})")
        click.echo(f"  updated:    {record.updated_at} by {record.updated_by}")


@trust.command()
@click.argument("image")
@click.option("--trust-server", help="Notary server URL (default: by registry host).")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--state-dir", type=click.Path(file_okay=False), help=_STATE_DIR_HELP)
@click.option("--timeout", default=30.0, show_default=True)
@click.option("--pem", "pem_file", type=click.Path(dir_okay=False, writable=True),
              help="Also write the root certificates to this file (for a policy's rootSecrets `publicKeys`).")
@_kube_records_options
def pin(image, trust_server, ca_file, state_dir, timeout, pem_file, kube, kubeconfig, system_namespace) -> None:
    """Verify IMAGE's trust data now and record its root deliberately, printing the root key IDs.

    An existing record is kept and must agree (same root, or a valid rotation of it): to accept a
    re-keyed repository, `ostiary trust unpin` it first."""
    from dataclasses import replace

    from app.images import parse_image
    from app.notary.service import TrustRequest, TrustService
    from app.notary.state import StateError, this_process

    server, gun = _record_key(image, trust_server)
    store = _record_store(state_dir, create=True, kube=kube, kubeconfig=kubeconfig,
                          system_namespace=system_namespace)
    service = TrustService(ca_file=ca_file, cache_entries=0, records=store)
    try:
        facts = service.gather([TrustRequest(image=parse_image(image), server=server)],
                               deadline=time.monotonic() + timeout)[0]
    finally:
        service.close()
    if facts.get("verified") is not True:
        raise click.ClickException(f"not recorded: the trust data of {gun} does not verify: {facts.get('error')}")
    by = f"{this_process()} (ostiary trust pin)"
    try:
        record = store.update(server, gun, lambda current: current and replace(current, how="operator", updated_by=by))
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    if record is None:
        raise click.ClickException(f"internal error: no record of {gun} after verifying it")
    click.echo(f"recorded the root of {gun} from {server} in {store.description}")
    click.echo(f"root key IDs (review them): {', '.join(record.root_keyids)}")
    click.echo(f"root version {record.root_version}, {record.root_digest}")
    if pem_file:
        Path(pem_file).write_text(_root_certificates(record.root))
        click.echo(f"root certificates written to {pem_file}")


def _root_certificates(root: bytes) -> str:
    """The PEM certificates of the root role's keys in a (verified) root.json."""
    import base64

    signed = json.loads(root)["signed"]
    return "".join(
        base64.b64decode(signed["keys"][keyid]["keyval"]["public"]).decode("ascii")
        for keyid in signed["roles"]["root"]["keyids"]
    )


@trust.command()
@click.argument("image")
@click.option("--trust-server", help="Notary server URL (default: by registry host).")
@click.option("--state-dir", type=click.Path(file_okay=False), help=_STATE_DIR_HELP)
def unpin(image, trust_server, state_dir) -> None:
    """Remove IMAGE's trust record: the next admission trusts the repository's current root on first use
    (the documented way to accept a legitimately re-keyed repository)."""
    from app.notary.state import StateError

    server, gun = _record_key(image, trust_server)
    store = _record_store(state_dir)
    try:
        removed = store.delete(server, gun)
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    if not removed:
        raise click.ClickException(f"no trust record of {gun} from {server} in {store.description}")
    click.echo(f"removed the trust record of {gun} from {server}; its next use is a first use again")

if __name__ == "__main__":  # pragma: no cover
    main()
