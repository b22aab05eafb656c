"""The `ostiary` command: serve | check | translate | explain | test | trust inspect | pins | pin | unpin."""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click

from app.policies.model import DEFAULT_SYSTEM_NAMESPACE, PolicyError

if TYPE_CHECKING:  # the commands import their parts lazily, so `ostiary --help` stays fast
    from app.notary.service import TrustService
    from app.notary.state import RecordStore, TrustRecord
    from app.opa.client import OpaClient
    from app.opa.process import LocalOpa
    from app.policies.bounds import Bounds
    from app.policies.model import PolicySet

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


_TRUST_ALLOW_HELP = (
    "A trust server namespace ImagePolicies may name (repeatable; `*` allows any). Always allowed: "
    "the built-in defaults and the servers the ClusterImagePolicies name; any other is denied "
    "without a connection."
)


@click.group()
@click.option("--log-level", default="INFO", show_default=True, help="Python log level.")
def main(log_level: str) -> None:
    """Ostiary: admit only container images whose Notary v1 trust data verifies."""
    from app.logsafe import configure

    configure(getattr(logging, log_level.upper(), logging.INFO))


def _bounds_options(command: Callable) -> Callable:
    """--max-policy-entries, --max-namespace-policy-bytes, --max-policy-bytes (app/policies/bounds.py),
    passed to the command as `bounds`."""
    from app.policies.bounds import DEFAULT_BOUNDS, MAX_ENTRIES

    def with_bounds(
        *args: Any,
        max_policy_entries: int,
        max_namespace_policy_bytes: int,
        max_policy_bytes: int,
        **kwargs: Any,
    ) -> Any:
        from app.policies.bounds import Bounds

        try:
            bounds = Bounds(max_policy_entries, max_namespace_policy_bytes, max_policy_bytes)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        return command(*args, bounds=bounds, **kwargs)

    functools.update_wrapper(with_bounds, command)
    options = [
        click.option(
            "--max-policy-entries",
            default=DEFAULT_BOUNDS.max_entries,
            show_default=True,
            type=click.IntRange(1, MAX_ENTRIES),
            help="Most repository entries in one policy (the CRDs allow at most this default).",
        ),
        click.option(
            "--max-namespace-policy-bytes",
            default=DEFAULT_BOUNDS.max_scope_bytes,
            show_default=True,
            type=click.IntRange(min=1),
            help="Most bytes of Rego one namespace's ImagePolicies (or all ClusterImagePolicies) compile to.",
        ),
        click.option(
            "--max-policy-bytes",
            default=DEFAULT_BOUNDS.max_total_bytes,
            show_default=True,
            type=click.IntRange(min=1),
            help="Most bytes of Rego all policies in force compile to (docs/security.md).",
        ),
    ]
    for option in reversed(options):
        with_bounds = option(with_bounds)
    return with_bounds


@main.command()
@click.option("--policy-dir", type=click.Path(file_okay=False), help="Directory of policy YAML files.")
@click.option(
    "--rego-dir",
    type=click.Path(exists=True, file_okay=False),
    help="Custom Rego rules (package ostiary.custom.<name>).",
)
@click.option("--listen", default="127.0.0.1:8443", show_default=True, help="HOST:PORT to serve on.")
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
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Extra CA bundle for Notary servers, registries and signature stores.",
)
@click.option("--kube", is_flag=True, help="Read policies, secrets and owners from the Kubernetes API.")
@click.option(
    "--kubeconfig", type=click.Path(exists=True, dir_okay=False), help="Kubeconfig (default: in-cluster)."
)
@click.option(
    "--system-namespace",
    default=DEFAULT_SYSTEM_NAMESPACE,
    show_default=True,
    help="Where ClusterImagePolicy signer secrets live.",
)
@click.option(
    "--budget",
    default=8.0,
    show_default=True,
    help="Seconds one admission may take (keep under the webhook timeout).",
)
@click.option(
    "--trust-cache-ttl",
    default=60.0,
    show_default=True,
    help="Seconds verified trust data is reused before refreshing timestamp.json.",
)
@click.option("--threads", default=8, show_default=True, help="Request threads.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False),
    help="Directory of durable trust-on-first-use records (default: $XDG_STATE_HOME/ostiary, "
    "or ~/.local/state/ostiary; with --kube: TrustRecords in --system-namespace unless given).",
)
@click.option(
    "--max-trust-records",
    default=10000,
    show_default=True,
    type=click.IntRange(min=1),
    help="Most trust-on-first-use records kept; a repository used for the first time beyond it is denied.",
)
@click.option(
    "--root-pins",
    type=click.Path(exists=True, dir_okay=False),
    help="YAML file mapping trust server URLs to pinned root material (publicKeys / caCertificates) "
    "for entries without their own rootSecrets.",
)
@click.option(
    "--registry-endpoint",
    "registry_endpoints",
    multiple=True,
    metavar="HOST=URL",
    help="Read the manifests of images from registry HOST at URL (a mirror, or a local registry); "
    "for the signature verifiers (docs/signatures.md). Repeatable.",
)
@click.option(
    "--sigstore-trusted-root",
    "sigstore_trusted_root",
    type=click.Path(exists=True, dir_okay=False),
    help="Keyless cosign: the Sigstore trusted_root.json (Fulcio CAs, Rekor keys) of a private Sigstore; "
    "default: the public-good root Ostiary ships (docs/signatures.md).",
)
@click.option(
    "--decision-log",
    "decision_log",
    default="-",
    show_default=True,
    metavar="PATH|-|off",
    help="One JSON line per admission: '-' standard output, a file (appended to), or 'off'.",
)
@click.option(
    "--trust-server-allow", "trust_server_allow", multiple=True, metavar="URL", help=_TRUST_ALLOW_HELP
)
@_bounds_options
def serve(
    policy_dir: str,
    rego_dir: str | None,
    listen: str,
    tls_cert: str | None,
    tls_key: str | None,
    opa_url: str | None,
    opa_token_file: str | None,
    ca_file: str | None,
    kube: bool,
    kubeconfig: str | None,
    system_namespace: str,
    budget: float,
    trust_cache_ttl: float,
    max_trust_records: int,
    threads: int,
    state_dir: str | None,
    root_pins: str | None,
    registry_endpoints: tuple[str, ...],
    sigstore_trusted_root: str | None,
    decision_log: str,
    trust_server_allow: tuple[str, ...],
    bounds: Bounds,
) -> None:
    """Serve POST /admit, GET /healthz, /readyz, /metrics (under gunicorn)."""
    from app.runtime import ServeConfig, read_token
    from app.wsgi import run_gunicorn

    host, port = _split_listen(listen)
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if not tls_cert and not _is_loopback(host):
        raise click.UsageError("without --tls-cert/--tls-key Ostiary serves plain HTTP on loopback only")
    if not kube and not policy_dir:
        raise click.UsageError("give --policy-dir DIR (or --kube for the cluster source)")
    if decision_log not in ("-", "off"):
        try:
            Path(decision_log).open("a").close()  # fail now, not in the worker at its first admission
        except OSError as exc:
            raise click.BadParameter(
                f"cannot append to {decision_log}: {exc.strerror}", param_hint="--decision-log"
            ) from None
    if opa_token_file:
        if not opa_url:
            raise click.UsageError(
                "--opa-token-file is for --opa-url; the OPA Ostiary starts gets its own token"
            )
        try:
            read_token(opa_token_file)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    config = ServeConfig(
        policy_dir=policy_dir,
        rego_dir=rego_dir,
        opa_url=opa_url,
        opa_token_file=opa_token_file,
        ca_file=ca_file,
        system_namespace=system_namespace,
        budget=budget,
        trust_cache_ttl=trust_cache_ttl,
        max_trust_records=max_trust_records,
        kube=kube,
        kubeconfig=kubeconfig,
        state_dir=_serve_state_dir(state_dir, kube),
        root_pins=_serve_root_pins(root_pins),
        registry_endpoints=_serve_registry_endpoints(registry_endpoints),
        sigstore_trusted_root=_serve_trusted_root(sigstore_trusted_root),
        decision_log=decision_log,
        trust_server_allow=_trust_server_allow(trust_server_allow),
        bounds=bounds,
    )
    run_gunicorn(config, host, port, tls_cert, tls_key, threads)


def _trust_server_allow(servers: tuple[str, ...]) -> tuple[str, ...]:
    """--trust-server-allow values, each an https URL (or `*`), checked now."""
    from app.notary.servers import ANY_SERVER, normalize_trust_server

    for server in servers:
        if server != ANY_SERVER and normalize_trust_server(server)[1] is not None:
            raise click.BadParameter(f"{server!r} is not an https URL", param_hint="--trust-server-allow")
    return servers


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


def _serve_trusted_root(path: str | None) -> str | None:
    """--sigstore-trusted-root, read now: a root Ostiary cannot use stops `serve` with the reason."""
    from app.signatures.keyless import KeylessError, load_trusted_root

    if path is not None:
        try:
            load_trusted_root(path)
        except KeylessError as exc:
            raise click.BadParameter(str(exc), param_hint="--sigstore-trusted-root") from None
    return path


def _serve_registry_endpoints(items: tuple[str, ...]) -> dict[str, str]:
    from app.signatures.registry import parse_endpoints

    try:
        return parse_endpoints(items)
    except ValueError as exc:
        raise click.UsageError(f"--registry-endpoint: {exc}") from None


def _serve_root_pins(path: str | None) -> str | None:
    """Check a --root-pins file now, so a bad one stops the start instead of denying later."""
    if path is None:
        return None
    from app.notary.pins import load_default_root_pins

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
    from app.yamlio import DocumentError, load_file

    try:
        docs = load_file(file)
    except DocumentError as exc:
        _input_error(str(exc))
    try:
        for index, doc in enumerate(docs):
            if doc is None or (isinstance(doc, dict) and doc.get("kind") in ("Secret", "ServiceAccount")):
                continue
            module = to_rego(parse_policy_document(doc, f"{file}#{index}"))
            click.echo(f"# module id: {module.id}")
            click.echo(module.source)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None


def _with_opa(
    policy_dir: str, rego_dir: str | None, system_namespace: str
) -> tuple[LocalOpa, OpaClient, PolicySet]:
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
@click.option("--strict", is_flag=True, help="Warnings (e.g. no policies loaded) fail too.")
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option(
    "--trust-server-allow", "trust_server_allow", multiple=True, metavar="URL", help=_TRUST_ALLOW_HELP
)
@_bounds_options
def check(
    policy_dir: str,
    rego_dir: str | None,
    system_namespace: str,
    strict: bool,
    fmt: str,
    trust_server_allow: tuple[str, ...],
    bounds: Bounds,
) -> None:
    """Find every mistake in a policy directory (and custom Rego), each with file and line, and
    compile it all in a real OPA. Exit 0 when clean, 1 when problems were found, 2 for usage errors."""
    from app.offline.check import render_json, render_text, run_check
    from app.opa.process import OpaNotFound

    try:
        report = run_check(
            policy_dir, rego_dir, system_namespace, _trust_server_allow(trust_server_allow), bounds
        )
    except (OpaNotFound, RuntimeError) as exc:
        _input_error(str(exc))
    if fmt == "json":
        click.echo(render_json(report, strict))
    else:
        verdict, diagnostics = render_text(report, strict)
        if diagnostics:
            click.echo(diagnostics, err=True)
        click.echo(verdict)
    sys.exit(1 if report.failed(strict) else 0)


@main.command()
@click.argument("review", type=click.File("r"))
@click.option("--policy-dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--rego-dir", type=click.Path(exists=True, file_okay=False))
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False))
@click.option("--system-namespace", default=DEFAULT_SYSTEM_NAMESPACE, show_default=True)
@click.option(
    "--trust-data",
    "trust_data",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Verify captured trust data and signatures (`ostiary trust capture`) instead of asking Notary "
    "servers and registries.",
)
@click.option("--at", "at", help="Verify trust data as of this time (RFC 3339).")
def explain(
    review: IO[str],
    policy_dir: str,
    rego_dir: str | None,
    ca_file: str | None,
    system_namespace: str,
    trust_data: tuple[str, ...],
    at: str | None,
) -> None:
    """Decide an AdmissionReview (JSON or YAML file, '-' for stdin) and print the response."""
    from app.admission.extract import BadRequest
    from app.admission.review import Reviewer
    from app.opa.client import OpaError
    from app.policies.directory import DirectoryStore
    from app.yamlio import DocumentError, load, read_stream

    trust = _offline_trust(trust_data, at, ca_file)
    try:
        body = load(read_stream(review, review.name), review.name)
    except DocumentError as exc:
        _input_error(str(exc))
    try:
        opa, client, policy_set = _with_opa(policy_dir, rego_dir, system_namespace)
    except (PolicyError, OpaError) as exc:
        _input_error(str(exc))
    from app.policies.translate import cluster_trust_servers

    trust.allow_only(cluster_trust_servers(policy_set.policies))
    try:
        reviewer = Reviewer(
            client,
            DirectoryStore(policy_set),
            trust=trust,
            system_namespace=system_namespace,
            budget=30.0,
            signatures=_offline_signatures(trust_data, at, ca_file),
        )
        answer, outcome = reviewer.review(body)
    except BadRequest as exc:
        _input_error(f"bad AdmissionReview: {exc}")
    finally:
        opa.stop()
    click.echo(json.dumps({"response": answer["response"], "images": outcome.images}, indent=2))
    sys.exit(0 if outcome.allowed else 1)


@main.command(name="test")
@click.argument("paths", nargs=-1)
@click.option(
    "--rego-dir", type=click.Path(exists=True, file_okay=False), help="Custom rules and their *_test.rego."
)
@click.option("--run", "run_regex", help="Run only tests whose name matches this regular expression.")
@click.option("-v", "--verbose", is_flag=True, help="List every library test, not only failures.")
@click.option(
    "--junit", "junit_file", type=click.Path(dir_okay=False), help="Also write the results as JUnit XML."
)
def test_cmd(
    paths: tuple[str, ...], rego_dir: str | None, run_regex: str | None, verbose: bool, junit_file: str | None
) -> None:
    """Run the Rego unit tests (library, then your --rego-dir) and your declarative tests PATHS...

    PATHS are test files (kind: PolicyTest) or directories searched for *_test.yaml. Exit 1 when a
    test fails, 2 when a test file cannot be read.
    """
    _run_all_tests(paths, rego_dir, run_regex, verbose, junit_file)


@main.group()
def trust() -> None:
    """Notary v1 trust data."""


@trust.command()
@click.argument("image")
@click.option("--trust-server", help="Notary server URL (default: by registry host).")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--signer",
    "signers",
    multiple=True,
    metavar="NAME=PEMFILE",
    help="Required signer and its public key/certificate.",
)
@click.option("--at", "at", help="Verify as of this time (RFC 3339), e.g. for archived data.")
@click.option("--timeout", default=30.0, show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["notary", "cosign", "simple", "notation"]),
    default="notary",
    show_default=True,
    help="Which signatures: Notary trust data, cosign signatures, or simple signing (docs/signatures.md).",
)
@click.option(
    "--key",
    "key_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="cosign/simple: a public key file (PEM, or an armoured OpenPGP block); notation: a CA "
    "certificate file (PEM); repeatable.",
)
@click.option("--store-url", help="simple: the lookaside store (the policy's storeURL).")
@click.option(
    "--registry-endpoint",
    "registry_endpoints",
    multiple=True,
    metavar="HOST=URL",
    help="cosign/simple: read registry HOST at URL (as serve --registry-endpoint).",
)
@click.option(
    "--trust-data",
    "trust_data",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="cosign/simple: read a signature capture (`ostiary trust capture --format`) instead of registries.",
)
def inspect(
    image: str,
    trust_server: str | None,
    ca_file: str | None,
    signers: tuple[str, ...],
    at: str | None,
    timeout: float,
    fmt: str,
    key_files: tuple[str, ...],
    store_url: str | None,
    registry_endpoints: tuple[str, ...],
    trust_data: tuple[str, ...],
) -> None:
    """Print the verified trust facts of IMAGE as JSON, or why they could not be verified.

    With --format cosign or simple: the signature facts the webhook's verifier gives for a requirement
    with --key (the policy's identity rule is not applied; the signed identities are in the facts).
    """
    from app.notary.inspect import explain, inspect_image

    if fmt != "notary":
        _inspect_signatures(
            image, fmt, key_files, store_url, registry_endpoints, trust_data, ca_file, at, timeout
        )
        return

    pairs = []
    for item in signers:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_file():
            raise click.BadParameter(
                f"{item!r} is not NAME=PEMFILE (an existing file)", param_hint="--signer"
            )
        pairs.append((name, Path(path).read_text()))
    moment = None
    if at:
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            raise click.BadParameter(f"{at!r} is not an RFC 3339 time", param_hint="--at") from None
    started = time.monotonic()
    facts, ok = inspect_image(
        image, trust_server=trust_server, ca_file=ca_file, signers=pairs, at=moment, timeout=timeout
    )
    click.echo(json.dumps(facts, indent=2, sort_keys=True))
    if not ok:
        click.echo(f"not verified: {explain(facts)} ({time.monotonic() - started:.2f}s)", err=True)
        sys.exit(1)


def _inspect_signatures(
    image: str,
    fmt: str,
    key_files: tuple[str, ...],
    store_url: str | None,
    registry_endpoints: tuple[str, ...],
    trust_data: tuple[str, ...],
    ca_file: str | None,
    at: str | None,
    timeout: float,
) -> None:
    from app.signatures.replay import SignatureDataError, inspect_signatures

    if not key_files:
        raise click.UsageError(
            f"--format {fmt} needs --key FILE (the public key a signature must verify with)"
        )
    if fmt == "simple" and not store_url:
        raise click.UsageError("--format simple needs --store-url (the lookaside store)")
    keys = [(path, Path(path).read_bytes()) for path in key_files]
    try:
        facts, ok = inspect_signatures(
            image,
            fmt,
            keys,
            store_url=store_url,
            trust_data=trust_data,
            ca_file=ca_file,
            endpoints=_serve_registry_endpoints(registry_endpoints),
            at=_parse_at(at),
            timeout=timeout,
        )
    except SignatureDataError as exc:
        raise click.BadParameter(str(exc), param_hint="--trust-data") from None
    click.echo(json.dumps(facts, indent=2, sort_keys=True))
    if not ok:
        reasons = [
            f"{s.get('source')}: {s['error']}"
            if s.get("error")
            else f"{s.get('source')}: signs {s.get('digest')}, not {facts.get('digest')}"
            for s in facts.get("signatures") or []
        ]
        why = facts.get("error") or "; ".join(reasons) or f"no signature found for {facts.get('digest')}"
        click.echo(f"not verified ({fmt}): {why}", err=True)
        sys.exit(1)


# ---- offline: apply, trust capture, captured trust data (app/offline, app/notary/capture.py) ----


def _quiet_trust_log() -> None:
    """Offline runs report trust failures in their results; at the default level, skip the log lines."""
    if logging.getLogger().level >= logging.INFO:
        logging.getLogger("app.notary").setLevel(logging.WARNING)


def _input_error(message: str) -> NoReturn:
    """Exit 2: the input (files, options, policies) could not be used; 1 is kept for "denied"."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


def _parse_at(at: str | None) -> datetime | None:
    from app.notary.inspect import parse_at_option

    if not at:
        return None
    try:
        return parse_at_option(at)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None


def _offline_signatures(trust_data: tuple[str, ...], at: str | None, ca_file: str | None) -> Any:
    """The SignatureService of explain/apply: replaying the signature captures among --trust-data when
    it is given (app/signatures/replay.py), else reading registries live; at --at."""
    from app.signatures.replay import SignatureDataError, signature_service

    try:
        return signature_service(list(trust_data), _parse_at(at), ca_file)
    except SignatureDataError as exc:
        raise click.BadParameter(str(exc), param_hint="--trust-data") from None


def _offline_trust(trust_data: tuple[str, ...], at: str | None, ca_file: str | None) -> TrustService:
    """The TrustService of explain/apply: replaying --trust-data when given, else live; at --at."""
    from app.offline.replay import TrustDataError, trust_service

    moment = _parse_at(at)
    try:
        return trust_service(list(trust_data), moment, ca_file)
    except TrustDataError as exc:
        raise click.BadParameter(str(exc), param_hint="--trust-data") from None


@main.command(name="apply")
@click.argument("manifests", nargs=-1, required=True)
@click.option(
    "--policy-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="Directory of policy YAML files.",
)
@click.option(
    "--rego-dir",
    type=click.Path(exists=True, file_okay=False),
    help="Custom Rego rules (package ostiary.custom.<name>).",
)
@click.option("-n", "--namespace", help="Namespace of manifests that name none (default: default).")
@click.option(
    "--as",
    "username",
    default="ostiary-apply",
    show_default=True,
    help="Requester's user name (request.userInfo.username).",
)
@click.option("--as-group", "groups", multiple=True, help="Requester's group (repeatable).")
@click.option("--operation", type=click.Choice(["CREATE", "UPDATE"]), default="CREATE", show_default=True)
@click.option(
    "-o",
    "--output",
    "fmt",
    type=click.Choice(["table", "json", "yaml", "junit"]),
    default="table",
    show_default=True,
)
@click.option(
    "--trust-data",
    "trust_data",
    multiple=True,
    type=click.Path(exists=True, file_okay=False),
    help="Captured trust data and signatures (`ostiary trust capture`, repeatable) instead of Notary "
    "servers and registries.",
)
@click.option("--at", "at", help="Verify trust data as of this time (RFC 3339), e.g. when it was captured.")
@click.option(
    "--ca-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Extra CA bundle for Notary servers, registries and signature stores.",
)
@click.option("--system-namespace", default=DEFAULT_SYSTEM_NAMESPACE, show_default=True)
def apply_cmd(
    manifests: tuple[str, ...],
    policy_dir: str,
    rego_dir: str | None,
    namespace: str | None,
    username: str,
    groups: tuple[str, ...],
    operation: str,
    fmt: str,
    trust_data: tuple[str, ...],
    at: str | None,
    ca_file: str | None,
    system_namespace: str,
) -> None:
    """Decide MANIFEST... (files, directories, '-' for stdin) as the webhook would, without a cluster.

    Exit 0 when every object is allowed, 1 when one is denied, 2 when the input cannot be used.
    """
    from app.offline.engine import Engine
    from app.offline.manifests import ManifestError, load_manifests
    from app.offline.report import render
    from app.opa.client import OpaError

    _quiet_trust_log()
    trust = _offline_trust(trust_data, at, ca_file)
    try:
        objects = load_manifests(manifests, stdin=sys.stdin)
    except ManifestError as exc:
        _input_error(str(exc))
    if not objects:
        _input_error("no Kubernetes objects in " + ", ".join(manifests))
    try:
        engine = Engine(
            policy_dir,
            rego_dir=rego_dir,
            trust=trust,
            signatures=_offline_signatures(trust_data, at, ca_file),
            system_namespace=system_namespace,
        )
    except (PolicyError, OpaError, RuntimeError) as exc:
        _input_error(str(exc))
    with engine:
        results = [
            engine.decide(
                m, namespace=namespace, username=username, groups=tuple(groups), operation=operation
            )
            for m in objects
        ]
    click.echo(render(results, fmt))
    sys.exit(0 if all(r.allowed for r in results) else 1)


@trust.command()
@click.argument("images", nargs=-1, required=True)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write (created; repositories are added).",
)
@click.option("--trust-server", help="Notary server URL (default: by registry host).")
@click.option(
    "--ca-file", type=click.Path(exists=True, dir_okay=False), help="Extra CA bundle for the Notary server."
)
@click.option("--timeout", default=30.0, show_default=True, help="Seconds per repository.")
@click.option("--username", help="Registry user for the Notary token service (password read from stdin).")
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(["notary", "cosign", "simple", "notation"]),
    help="What to record (repeatable; default notary): Notary trust data, cosign signatures (.sig tag, "
    "referrers and fallback tag), simple signatures (lookaside under --store-url).",
)
@click.option("--store-url", help="The simple-signing lookaside store (the policy's storeURL).")
@click.option(
    "--registry-endpoint",
    "registry_endpoints",
    multiple=True,
    metavar="HOST=URL",
    help="Read registry HOST at URL (as serve --registry-endpoint); for cosign and simple.",
)
def capture(
    images: tuple[str, ...],
    out: str,
    trust_server: str | None,
    ca_file: str | None,
    timeout: float,
    username: str,
    formats: tuple[str, ...],
    store_url: str | None,
    registry_endpoints: tuple[str, ...],
) -> None:
    """Record the trust data Notary servers serve, or the signatures registries serve, for IMAGE...,
    byte for byte, for offline runs (--trust-data DIR).

    Notary: each repository's root, timestamp, snapshot, targets and delegations are written under
    --out with the server URL and GUN (ostiary-trust.json), then verified from those bytes. cosign and
    simple: every manifest, blob, referrers listing and store file the verifier reads, and the answers
    that were 404 (ostiary-signatures.json); judged when replayed, with the policy's keys. Exit 1 when
    one could not be captured (or, for Notary, does not verify now).
    """
    from app.notary.capture import CaptureError, capture_images
    from app.signatures.replay import capture_signatures

    chosen = list(dict.fromkeys(formats or ("notary",)))
    credentials = ((username, sys.stdin.readline().rstrip("\n")),) if username else ()
    results: list[Any] = []
    if "notary" in chosen:
        try:
            results += capture_images(
                list(images),
                Path(out),
                trust_server=trust_server,
                ca_file=ca_file,
                timeout=timeout,
                credentials=credentials,
            )
        except CaptureError as exc:
            _input_error(str(exc))
    signature_formats = [f for f in chosen if f != "notary"]
    if "simple" in signature_formats and not store_url:
        _input_error("--format simple needs --store-url (the lookaside store of the policy's storeURL)")
    if signature_formats:
        try:
            results += capture_signatures(
                list(images),
                Path(out),
                signature_formats,
                store_url=store_url,
                ca_file=ca_file,
                endpoints=_serve_registry_endpoints(registry_endpoints),
                timeout=timeout,
                credentials=credentials,
            )
        except OSError as exc:
            _input_error(f"cannot write {out}: {exc}")
    ok = True
    for result in results:
        click.echo(result.describe())
        ok = ok and result.ok
    sys.exit(0 if ok else 1)


def _run_all_tests(
    paths: tuple[str, ...],
    rego_dir: str | None,
    run_regex: str | None,
    verbose: bool,
    junit_file: str | None = None,
) -> None:
    """`ostiary test`: the library's tests, the user's Rego tests and the user's policy tests, apart."""
    import re

    from app.offline.testfile import CaseResult, TestFileError, find_test_files, run_rego_tests, run_test_file
    from app.opa.client import OpaError
    from app.paths import rego_library_dir

    try:
        pattern = re.compile(run_regex) if run_regex else None
    except re.error as exc:
        raise click.BadParameter(f"{run_regex!r}: {exc}", param_hint="--run") from None
    _quiet_trust_log()
    try:
        files = find_test_files(paths)
    except TestFileError as exc:
        _input_error(str(exc))
    failed = False
    cases: list[CaseResult] = []
    library, mine, error = run_rego_tests(rego_library_dir(), rego_dir, run_regex)
    click.echo(f"== Ostiary library: Rego unit tests ({rego_library_dir()})")
    for test in library:
        if verbose or not test.passed:
            click.echo(f"  {test.name}: {'PASS' if test.passed else ('FAIL ' + test.detail).strip()}")
    click.echo(f"  {sum(t.passed for t in library)}/{len(library)} passed")
    if error and not rego_dir:
        click.echo(f"  opa test could not run: {error}")
    failed = bool(error) or not all(t.passed for t in library)
    if rego_dir:
        click.echo(f"== Your Rego unit tests ({rego_dir})")
        for test in mine:
            click.echo(
                f"  {test.name}: {'PASS' if test.passed else ('FAIL ' + test.detail).strip()} ({test.millis:.1f}ms)"
            )
        click.echo(f"  {sum(t.passed for t in mine)}/{len(mine)} passed")
        if error:  # with the user's modules loaded, a compile error is almost always theirs
            click.echo(f"  opa test could not run: {error}")
        failed = failed or not all(t.passed for t in mine)
    if paths:
        click.echo(f"== Your policy tests ({', '.join(paths)})")
        for test_file in files:
            try:
                cases.extend(run_test_file(test_file, pattern))
            except (PolicyError, OpaError, RuntimeError) as exc:
                cases.append(
                    CaseResult(str(test_file.path), test_file.name, "*", 0, False, [f"cannot run: {exc}"])
                )
        for case in cases:
            where = f"{case.file}:{case.line}" if case.line else case.file
            click.echo(f"  {'PASS' if case.passed else 'FAIL'} {case.full_name}  [{where}]")
            for failure in case.failures:
                click.echo(f"       {failure}")
        click.echo(f"  {sum(c.passed for c in cases)}/{len(cases)} passed")
        failed = failed or not all(c.passed for c in cases)
    if junit_file:
        _write_test_junit(junit_file, library, mine if rego_dir else [], cases if paths else [], error)
    click.echo("FAIL" if failed else "PASS")
    sys.exit(1 if failed else 0)


def _write_test_junit(
    path: str, library: list[Any], mine: list[Any], cases: list[Any], error: str | None
) -> None:
    from app.offline.report import test_junit

    def rego(tests: list[Any]) -> list[tuple[str, str, list[str]]]:
        return [(t.name, t.file, [] if t.passed else [t.detail or "FAIL"]) for t in tests]

    suites = [
        (
            "Ostiary library: Rego unit tests",
            rego(library) + ([("opa test", "opa", [error])] if error else []),
        )
    ]
    if mine:
        suites.append(("Your Rego unit tests", rego(mine)))
    if cases:
        suites.append(
            (
                "Your policy tests",
                [(c.full_name, c.file, c.failures or ([] if c.passed else ["FAIL"])) for c in cases],
            )
        )
    Path(path).write_text(test_junit(suites))


# -- trust records: pins, pin, unpin (docs/trust.md, "Roots of trust") --------------------------------

_STATE_DIR_HELP = (
    "State directory of `ostiary serve` (default: $XDG_STATE_HOME/ostiary or ~/.local/state/ostiary)."
)


def _kube_records_options(command: Callable[..., None]) -> Callable[..., None]:
    """--kube/--kubeconfig/--system-namespace: the records of `ostiary serve --kube` (TrustRecords)."""
    command = click.option(
        "--system-namespace",
        default=DEFAULT_SYSTEM_NAMESPACE,
        show_default=True,
        help="With --kube: where the TrustRecords live.",
    )(command)
    command = click.option(
        "--kubeconfig",
        type=click.Path(exists=True, dir_okay=False),
        help="With --kube: kubeconfig (default: in-cluster, then ~/.kube/config).",
    )(command)
    return click.option(
        "--kube", is_flag=True, help="Use the cluster's TrustRecords instead of a state directory."
    )(command)


def _record_store(
    state_dir: str | None,
    *,
    create: bool = False,
    kube: bool = False,
    kubeconfig: str | None = None,
    system_namespace: str = DEFAULT_SYSTEM_NAMESPACE,
) -> RecordStore:
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
    from app.notary.servers import normalize_trust_server as _normalize_server
    from app.notary.servers import trust_server_for

    try:
        ref = parse_image(image)
    except InvalidImageReference as exc:
        raise click.BadParameter(str(exc), param_hint="IMAGE") from None
    server = trust_server_for(ref.registry, trust_server)
    if server is None:
        raise click.UsageError(
            f"no Notary trust server is known for registry {ref.registry}; pass --trust-server URL"
        )
    normalized, error = _normalize_server(server)
    if error is not None:
        raise click.UsageError(str(error))
    return normalized, ref.name


def _describe_record(record: TrustRecord) -> dict:
    return {
        "server": record.server,
        "gun": record.gun,
        "rootKeyIDs": list(record.root_keyids),
        "rootDigest": record.root_digest,
        "versions": dict(sorted(record.versions.items())),
        "firstSeen": {"at": record.first_seen_at, "by": record.first_seen_by},
        "updated": {"at": record.updated_at, "by": record.updated_by},
        "how": record.how,
    }


@trust.command()
@click.option("--state-dir", type=click.Path(file_okay=False), help=_STATE_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@_kube_records_options
def pins(
    state_dir: str | None, as_json: bool, kube: bool, kubeconfig: str | None, system_namespace: str
) -> None:
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
@click.option(
    "--pem",
    "pem_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the root certificates to this file (for a policy's rootSecrets `publicKeys`).",
)
@_kube_records_options
def pin(
    image: str,
    trust_server: str | None,
    ca_file: str | None,
    state_dir: str | None,
    timeout: float,
    pem_file: str | None,
    kube: bool,
    kubeconfig: str | None,
    system_namespace: str,
) -> None:
    """Verify IMAGE's trust data now and record its root deliberately, printing the root key IDs.

    An existing record is kept and must agree (same root, or a valid rotation of it): to accept a
    re-keyed repository, `ostiary trust unpin` it first."""
    from dataclasses import replace

    from app.images import parse_image
    from app.notary.service import TrustRequest, TrustService
    from app.notary.state import StateError, this_process

    server, gun = _record_key(image, trust_server)
    store = _record_store(
        state_dir, create=True, kube=kube, kubeconfig=kubeconfig, system_namespace=system_namespace
    )
    service = TrustService(ca_file=ca_file, cache_entries=0, records=store)
    try:
        facts = service.gather(
            [TrustRequest(image=parse_image(image), server=server)], deadline=time.monotonic() + timeout
        )[0]
    finally:
        service.close()
    if facts.get("verified") is not True:
        raise click.ClickException(
            f"not recorded: the trust data of {gun} does not verify: {facts.get('error')}"
        )
    by = f"{this_process()} (ostiary trust pin)"
    try:
        record = store.update(
            server, gun, lambda current: current and replace(current, how="operator", updated_by=by)
        )
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
@_kube_records_options
def unpin(
    image: str,
    trust_server: str | None,
    state_dir: str | None,
    kube: bool,
    kubeconfig: str | None,
    system_namespace: str,
) -> None:
    """Remove IMAGE's trust record: the next admission trusts the repository's current root on first use
    (the documented way to accept a legitimately re-keyed repository)."""
    from app.notary.state import StateError

    server, gun = _record_key(image, trust_server)
    store = _record_store(state_dir, kube=kube, kubeconfig=kubeconfig, system_namespace=system_namespace)
    try:
        removed = store.delete(server, gun)
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    if not removed:
        raise click.ClickException(f"no trust record of {gun} from {server} in {store.description}")
    click.echo(f"removed the trust record of {gun} from {server}; its next use is a first use again")


if __name__ == "__main__":  # pragma: no cover
    main()
