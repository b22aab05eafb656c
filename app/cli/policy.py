"""The policy commands: translate, check, explain, apply, test (docs/policy-as-code.md).

Each parses its options and hands the work to app/offline (check, engine, report, testfile)."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable
from datetime import datetime
from typing import IO, TYPE_CHECKING

import click

from app.cli.options import (
    CommandFn,
    at_option,
    bounds_options,
    ca_file_option,
    decision_options,
    input_error,
    policy_dir_option,
    quiet_trust_log,
    rego_dir_option,
    report_format_option,
    serve_config,
    sigstore_root_option,
    system_namespace_option,
    trust_data_option,
    trust_server_allow_option,
)
from app.errors import InputError, OpaUnavailable
from app.policies.model import PolicyError

if TYPE_CHECKING:
    from app.notary.state import TrustRecord
    from app.offline.engine import Engine
    from app.policies.bounds import Bounds
    from app.runtime import ServeConfig


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
def translate(file: str) -> None:
    """Print the data document OPA holds for every policy in FILE (its path under /v1/data, then the JSON)."""
    from app.policies.schema import parse_policy_document  # lazy: start-up
    from app.policies.translate import translate as to_rego  # lazy: start-up
    from app.yamlio import DocumentError, load_file  # lazy: start-up

    try:
        docs = load_file(file)
    except DocumentError as exc:
        input_error(str(exc))
    try:
        for index, doc in enumerate(docs):
            if doc is None or (isinstance(doc, dict) and doc.get("kind") in ("Secret", "ServiceAccount")):
                continue
            module = to_rego(parse_policy_document(doc, f"{file}#{index}"))
            click.echo(f"# data: /v1/data/{module.id}")
            click.echo(module.source)
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@policy_dir_option()
@rego_dir_option()
@system_namespace_option()
@click.option("--strict", is_flag=True, help="Warnings (e.g. no policies loaded) fail too.")
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@trust_server_allow_option()
@bounds_options
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
    from app.offline.check import InputRefused, render_json, render_text, run_check  # lazy: start-up

    try:
        report = run_check(policy_dir, rego_dir, system_namespace, trust_server_allow, bounds)
    except (InputRefused, OpaUnavailable) as exc:  # a file over a bound; no opa binary, or it did not start
        input_error(str(exc))
    if fmt == "json":
        click.echo(render_json(report, strict))
    else:
        verdict, diagnostics = render_text(report, strict)
        if diagnostics:
            click.echo(diagnostics, err=True)
        click.echo(verdict)
    sys.exit(1 if report.failed(strict) else 0)


def _trust_records(
    ctx: click.Context, param: click.Parameter, path: str | None
) -> tuple[TrustRecord, ...] | None:
    from app.notary.state import StateError, load_records  # lazy: only --trust-records needs it

    if path is None:
        return None
    try:
        return tuple(load_records(path))
    except StateError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def engine_options(command: CommandFn) -> CommandFn:
    """Everything `serve` decides with, for apply and explain (docs/policy-as-code.md, "The same
    verdict as the webhook"), passed to the command as `start_engine`, which starts the Engine."""

    def with_engine(
        *args: object,
        config: ServeConfig,
        trust_data: tuple[str, ...],
        at: datetime | None,
        trust_records: tuple[TrustRecord, ...] | None,
        **kwargs: object,
    ) -> object:
        def start_engine() -> Engine:
            from app.offline.engine import Engine, EngineError, offline_sources  # lazy: loads the runtime

            try:
                sources = offline_sources(trust_data, at, trust_records)
            except InputError as exc:  # a capture that cannot be used (TrustDataError, SignatureDataError)
                raise click.BadParameter(str(exc), param_hint="--trust-data") from None
            try:
                return Engine(config, sources)
            except EngineError as exc:
                input_error(str(exc))

        return command(*args, start_engine=start_engine, **kwargs)

    functools.update_wrapper(with_engine, command)
    decorated = decision_options(serve_config(decision_log="off", budget=30.0)(with_engine))
    for option in (
        click.option(
            "--trust-records",
            "trust_records",
            type=click.Path(exists=True),
            callback=_trust_records,
            help="The cluster's recorded roots of trust to start from: the output of `ostiary trust pins "
            "--json` (or a state directory of `ostiary serve`). Without it every repository is a first use.",
        ),
        at_option(),
        trust_data_option(
            "Captured trust data and signatures (`ostiary trust capture`, repeatable) instead of Notary "
            "servers and registries."
        ),
        system_namespace_option("Where ClusterImagePolicy signer and root Secrets live (as serve's)."),
        ca_file_option(),
        rego_dir_option(),
        policy_dir_option(),
    ):
        decorated = option(decorated)
    return decorated


@click.command()
@click.argument("review", type=click.File("r"))
@engine_options
def explain(review: IO[str], start_engine: Callable[[], Engine]) -> None:
    """Decide an AdmissionReview (JSON or YAML file, '-' for stdin) and print the response, with the
    same account of each image as `apply -o json` (matched entry, trust facts, signer, pin)."""
    from app.yamlio import DocumentError, load, read_stream  # lazy: start-up

    quiet_trust_log()
    try:
        body = load(read_stream(review, review.name), review.name)
    except DocumentError as exc:
        input_error(str(exc))
    if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
        input_error(f"bad AdmissionReview: {review.name} has no request object")
    with start_engine() as engine:
        result = engine.decide_review(body, source=review.name)
    if result.error and result.message.startswith("bad AdmissionReview"):
        input_error(result.message)
    click.echo(json.dumps({"response": result.response, **result.as_dict()}, indent=2))
    sys.exit(0 if result.allowed else 1)


@click.command(name="apply")
@click.argument("manifests", nargs=-1, required=True)
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
@report_format_option()
@engine_options
def apply_cmd(
    manifests: tuple[str, ...],
    namespace: str | None,
    username: str,
    groups: tuple[str, ...],
    operation: str,
    fmt: str,
    start_engine: Callable[[], Engine],
) -> None:
    """Decide MANIFEST... (files, directories, '-' for stdin) as the webhook would, without a cluster.

    Exit 0 when every object is allowed, 1 when one is denied, 2 when the input cannot be used.
    """
    from app.offline.manifests import ManifestError, load_manifests  # lazy: start-up
    from app.offline.report import render  # lazy: start-up

    quiet_trust_log()
    try:
        objects = load_manifests(manifests, stdin=sys.stdin)
    except ManifestError as exc:
        input_error(str(exc))
    if not objects:
        input_error("no Kubernetes objects in " + ", ".join(manifests))
    with start_engine() as engine:
        results = [
            engine.decide(
                m, namespace=namespace, username=username, groups=tuple(groups), operation=operation
            )
            for m in objects
        ]
    click.echo(render(results, fmt))
    sys.exit(0 if all(r.allowed for r in results) else 1)


def _check_regex(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    try:
        if value:
            re.compile(value)
    except re.error as exc:
        raise click.BadParameter(f"{value!r}: {exc}", ctx, param) from None
    return value


@click.command(name="test")
@click.argument("paths", nargs=-1)
@rego_dir_option("Custom rules and their *_test.rego.")
@click.option(
    "--run",
    "run_regex",
    callback=_check_regex,
    help="Run only tests whose name matches this regular expression.",
)
@click.option(
    "-v", "--verbose", is_flag=True, help="List every library test, and the print() output of passing tests."
)
@click.option(
    "--junit", "junit_file", type=click.Path(dir_okay=False), help="Also write the results as JUnit XML."
)
@click.option(
    "--explain",
    type=click.Choice(["fails", "full", "notes", "debug"]),
    help="Also print OPA's trace of your Rego tests (as opa test --explain); needs --rego-dir.",
)
@click.option(
    "--coverage",
    is_flag=True,
    help="Also print which lines of your rules your Rego tests cover; needs --rego-dir.",
)
@sigstore_root_option(
    "Keyless cosign: the Sigstore trusted_root.json, as serve's option (a test file's "
    "sigstoreTrustedRoot overrides it)."
)
def test_cmd(
    paths: tuple[str, ...],
    rego_dir: str | None,
    run_regex: str | None,
    verbose: bool,
    junit_file: str | None,
    explain: str | None,
    coverage: bool,
    sigstore_trusted_root: str | None,
) -> None:
    """Run the Rego unit tests (library, then your --rego-dir) and your declarative tests PATHS...

    PATHS are test files (kind: PolicyTest) or directories searched for *_test.yaml. Exit 1 when a
    test fails, 2 when a test file cannot be read.
    """
    from pathlib import Path

    from app.offline.report import test_run_junit, test_text  # lazy: start-up
    from app.offline.testfile import TestFileError, run_all  # lazy: start-up

    quiet_trust_log()
    try:
        run = run_all(paths, rego_dir, run_regex, sigstore_trusted_root)
    except TestFileError as exc:
        input_error(str(exc))
    if junit_file:
        Path(junit_file).write_text(test_run_junit(run))
    click.echo(test_text(run, verbose))
    if (explain or coverage) and not rego_dir:
        input_error("--explain and --coverage are about your Rego tests: give --rego-dir")
    if explain and rego_dir:
        from app.offline.regotests import trace  # lazy: only --explain needs it

        click.echo(f"== Trace of your Rego tests (opa test --explain {explain})")
        click.echo(trace(rego_dir, run_regex, explain))
    if coverage and rego_dir:
        from app.offline.regotests import coverage as rego_coverage  # lazy: only --coverage needs it

        files, error = rego_coverage(rego_dir, run_regex)
        click.echo(f"== Coverage of your rules by your Rego tests ({rego_dir})")
        if error:
            click.echo(f"  {error}")
        else:
            click.echo("\n".join(f.describe() for f in files) or "  no rule files")
    sys.exit(1 if run.failed else 0)
