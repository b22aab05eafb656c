"""Options and answers every `ostiary` command group shares, defined once.

Only option parsing lives here: each helper turns text into the value a command passes on, or stops
with a usage error (exit 2) that names the option.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

import click
from click.decorators import FC

from app.policies.model import DEFAULT_SYSTEM_NAMESPACE

if TYPE_CHECKING:
    from app.runtime import ServeConfig

# A command function as the decorators below take it and give it back (their wrapper takes the
# options they declare in place of what they pass on); click reads the options off it.
CommandFn = Callable[..., object]

# Exit statuses of every command: 0 fine, 1 denied (or a failed test or check), 2 the input or an
# option cannot be used (or something Ostiary needs could not run), 3 an Ostiary bug (a traceback).
EXIT_DENIED, EXIT_INPUT, EXIT_BUG = 1, 2, 3

TRUST_ALLOW_HELP = (
    "A trust server namespace ImagePolicies may name (repeatable; `*` allows any). Always allowed: "
    "the built-in defaults and the servers the ClusterImagePolicies name; any other is denied "
    "without a connection."
)
STATE_DIR_HELP = (
    "State directory of `ostiary serve` (default: $XDG_STATE_HOME/ostiary or ~/.local/state/ostiary)."
)


def input_error(message: str) -> NoReturn:
    """Exit 2: the input (files, options, policies) could not be used; 1 is kept for "denied"."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_INPUT)


def config_from_options(options: dict[str, object], **fixed: object) -> ServeConfig:
    """The ServeConfig a command decides with, assembled in this one place: every parsed option
    named like a ServeConfig field (taken out of `options`, which keeps the command's own), then
    `fixed`, what the command itself sets (e.g. kube=True for `audit`)."""
    from app.runtime import ServeConfig  # lazy: the runtime loads every part; `ostiary --help` stays fast

    fields = {field.name for field in dataclasses.fields(ServeConfig)}
    taken = {name: options.pop(name) for name in list(options) if name in fields}
    # click checked each option's type; ServeConfig's fields are what the options were declared as
    values: dict[str, Any] = {**taken, **fixed}
    return ServeConfig(**values)


def serve_config(**fixed: object) -> Callable[[CommandFn], CommandFn]:
    """The command is called with `config` (config_from_options) in place of the options named like
    ServeConfig fields; put it right above the command's `def`, under the option decorators."""

    def decorate(command: CommandFn) -> CommandFn:
        def with_config(*args: object, **kwargs: object) -> object:
            config = config_from_options(kwargs, **fixed)
            return command(*args, config=config, **kwargs)

        functools.update_wrapper(with_config, command)
        return with_config

    return decorate


def quiet_trust_log() -> None:
    """Offline runs report trust failures in their results; at the default level, skip the log lines."""
    if logging.getLogger().level >= logging.INFO:
        logging.getLogger("app.notary").setLevel(logging.WARNING)
        logging.getLogger("ostiary").setLevel(logging.WARNING)  # the runtime's "loaded N policies"


class AtTime(click.ParamType):
    """`--at`: an ISO 8601 / RFC 3339 time (or a date); a naive one is UTC (app/notary/inspect.py)."""

    name = "TIME"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        from app.notary.inspect import parse_at_option  # lazy: only --at needs it (start-up)

        if isinstance(value, datetime):
            return value
        try:
            return parse_at_option(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def at_option(
    help: str = "Verify trust data as of this time (RFC 3339), e.g. when it was captured.",
) -> Callable[[FC], FC]:
    return click.option("--at", "at", type=AtTime(), help=help)


def report_format_option() -> Callable[[FC], FC]:
    """-o/--output of the commands that report verdicts (apply, audit), passed as `fmt`."""
    return click.option(
        "-o",
        "--output",
        "fmt",
        type=click.Choice(["table", "json", "yaml", "junit"]),
        default="table",
        show_default=True,
    )


def sigstore_root_option(
    help: str = "Keyless cosign: the Sigstore trusted_root.json (Fulcio CAs, Rekor keys) of a private "
    "Sigstore; default: the public-good root Ostiary ships (docs/signatures.md).",
) -> Callable[[FC], FC]:
    return click.option(
        "--sigstore-trusted-root",
        "sigstore_trusted_root",
        type=click.Path(exists=True, dir_okay=False),
        callback=_check_trusted_root,
        help=help,
    )


def ca_file_option(
    help: str = "Extra CA bundle for Notary servers, registries and signature stores.",
) -> Callable[[FC], FC]:
    return click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), help=help)


def system_namespace_option(help: str | None = None) -> Callable[[FC], FC]:
    return click.option("--system-namespace", default=DEFAULT_SYSTEM_NAMESPACE, show_default=True, help=help)


def rego_dir_option(help: str = "Custom Rego rules (package ostiary.custom.<name>).") -> Callable[[FC], FC]:
    return click.option("--rego-dir", type=click.Path(exists=True, file_okay=False), help=help)


def policy_dir_option(required: bool = True) -> Callable[[FC], FC]:
    return click.option(
        "--policy-dir",
        required=required,
        type=click.Path(exists=True, file_okay=False) if required else click.Path(file_okay=False),
        help="Directory of policy YAML files.",
    )


def trust_data_option(help: str) -> Callable[[FC], FC]:
    return click.option(
        "--trust-data", "trust_data", multiple=True, type=click.Path(exists=True, file_okay=False), help=help
    )


def _check_trust_servers(
    ctx: click.Context, param: click.Parameter, servers: tuple[str, ...]
) -> tuple[str, ...]:
    from app.notary.servers import ANY_SERVER, normalize_trust_server  # lazy: start-up

    for server in servers:
        if server != ANY_SERVER and normalize_trust_server(server)[1] is not None:
            raise click.BadParameter(f"{server!r} is not an https URL", ctx, param)
    return servers


def trust_server_allow_option() -> Callable[[FC], FC]:
    """--trust-server-allow URL..., each an https URL (or `*`), checked now."""
    return click.option(
        "--trust-server-allow",
        "trust_server_allow",
        multiple=True,
        metavar="URL",
        help=TRUST_ALLOW_HELP,
        callback=_check_trust_servers,
    )


def _parse_endpoints(ctx: click.Context, param: click.Parameter, items: tuple[str, ...]) -> dict[str, str]:
    from app.signatures.registry import parse_endpoints  # lazy: the registry reader is slow to load

    try:
        return parse_endpoints(items)
    except ValueError as exc:
        raise click.UsageError(f"--registry-endpoint: {exc}", ctx) from None


def registry_endpoint_option(help: str) -> Callable[[FC], FC]:
    """--registry-endpoint HOST=URL..., passed to the command as a dict `registry_endpoints`."""
    return click.option(
        "--registry-endpoint",
        "registry_endpoints",
        multiple=True,
        metavar="HOST=URL",
        help=help,
        callback=_parse_endpoints,
    )


def bounds_options(command: CommandFn) -> CommandFn:
    """--max-policy-entries, --max-namespace-policy-bytes, --max-policy-bytes, --opa-push-budget and
    --opa-memory-limit they derive from (app/policies/bounds.py), passed to the command as `bounds`."""
    from app.policies.bounds import DEFAULT_BOUNDS, MAX_ENTRIES  # lazy: start-up

    def with_bounds(
        *args: object,
        max_policy_entries: int,
        max_namespace_policy_bytes: int | None,
        max_policy_bytes: int | None,
        opa_push_budget: int | None,
        opa_memory_limit: str,
        **kwargs: object,
    ) -> object:
        from app.policies.bounds import Bounds, parse_quantity  # lazy: start-up

        try:
            bounds = Bounds.for_opa_memory(
                parse_quantity(opa_memory_limit),
                max_entries=max_policy_entries,
                max_scope_bytes=max_namespace_policy_bytes,
                max_total_bytes=max_policy_bytes,
                max_push_bytes=opa_push_budget,
            )
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
            type=click.IntRange(min=1),
            help="Most bytes of policy data one namespace's ImagePolicies (or all ClusterImagePolicies) compile to "
            f"[default: half of --max-policy-bytes; {DEFAULT_BOUNDS.max_scope_bytes} for 256Mi].",
        ),
        click.option(
            "--max-policy-bytes",
            type=click.IntRange(min=1),
            help="Most bytes of policy data all policies in force compile to [default: from --opa-memory-limit; "
            f"{DEFAULT_BOUNDS.max_total_bytes} for 256Mi] (docs/security.md).",
        ),
        click.option(
            "--opa-push-budget",
            type=click.IntRange(min=1),
            help="Most bytes (policy data and Rego) pushed to OPA at once (library, custom rules, policies); a larger set "
            f"is not pushed [default: from --opa-memory-limit; {DEFAULT_BOUNDS.max_push_bytes} for 256Mi].",
        ),
        click.option(
            "--opa-memory-limit",
            default="256Mi",
            show_default=True,
            help="OPA's memory limit (the chart's opa.resources.limits.memory), which the byte bounds derive from.",
        ),
    ]
    for option in reversed(options):
        with_bounds = option(with_bounds)
    return with_bounds


def kube_records_options(command: CommandFn) -> CommandFn:
    """--kube/--kubeconfig/--system-namespace: the records of `ostiary serve --kube` (TrustRecords)."""
    command = system_namespace_option("With --kube: where the TrustRecords live.")(command)
    command = click.option(
        "--kubeconfig",
        type=click.Path(exists=True, dir_okay=False),
        help="With --kube: kubeconfig (default: in-cluster, then ~/.kube/config).",
    )(command)
    return click.option(
        "--kube", is_flag=True, help="Use the cluster's TrustRecords instead of a state directory."
    )(command)


def checked_root_pins(path: str | None) -> str | None:
    """A --root-pins file, read now, so a bad one stops the command instead of denying later."""
    from app.notary.pins import load_default_root_pins  # lazy: only --root-pins needs it (start-up)

    if path is not None:
        try:
            load_default_root_pins(path)
        except ValueError as exc:
            raise click.UsageError(f"--root-pins: {exc}") from None
    return path


def checked_trusted_root(path: str | None) -> str | None:
    """--sigstore-trusted-root, read now: a root Ostiary cannot use stops the command with the reason."""
    from app.signatures.keyless import KeylessError, load_trusted_root  # lazy: slow to load

    if path is not None:
        try:
            load_trusted_root(path)
        except KeylessError as exc:
            raise click.BadParameter(str(exc), param_hint="--sigstore-trusted-root") from None
    return path


def _check_root_pins(ctx: click.Context, param: click.Parameter, path: str | None) -> str | None:
    return checked_root_pins(path)


def _check_trusted_root(ctx: click.Context, param: click.Parameter, path: str | None) -> str | None:
    return checked_trusted_root(path)


def decision_options(command: CommandFn) -> CommandFn:
    """What `serve` decides with besides the policies, and the offline commands must be given to
    decide as it does: --root-pins, --trust-server-allow, --registry-endpoint,
    --sigstore-trusted-root and the policy bounds (`bounds`), each checked now."""
    command = bounds_options(command)
    command = trust_server_allow_option()(command)
    command = sigstore_root_option()(command)
    command = registry_endpoint_option(
        "Read the manifests of images from registry HOST at URL (a mirror, or a local registry); "
        "for the signature verifiers (docs/signatures.md). Repeatable."
    )(command)
    return click.option(
        "--root-pins",
        type=click.Path(exists=True, dir_okay=False),
        callback=_check_root_pins,
        help="YAML file mapping trust server URLs to pinned root material (publicKeys / caCertificates) "
        "for entries without their own rootSecrets.",
    )(command)
