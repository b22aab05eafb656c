"""The `ostiary` command, one module per command group (docs/internals.md):

    serve.py    serve
    audit.py    audit
    policy.py   translate, check, explain, apply, test
    trust.py    trust inspect, capture, pins, pin, unpin
    options.py  the options they share (--at, --trust-data, bounds, ...) and the ServeConfig they
                assemble (config_from_options), defined once

The commands import their parts lazily (each such import says `# lazy:`), so `ostiary --help`
stays fast.

Errors (app/errors.py): a command catches the errors it means and says what to fix (exit 2 for an
input or option that cannot be used). An Ostiary error no command caught is still Ostiary's own
account of a failure: its message, exit 2. Anything else is a bug: its traceback, and exit 3, so
that no script mistakes it for a denial (1) or for its own mistake (2).
"""

from __future__ import annotations

import logging
import sys
import traceback

import click

from app.cli.audit import audit
from app.cli.options import EXIT_BUG, EXIT_INPUT
from app.cli.policy import apply_cmd, check, explain, test_cmd, translate
from app.cli.serve import serve
from app.cli.trust import trust
from app.errors import OstiaryError
from app.logsafe import configure


class OstiaryGroup(click.Group):
    """The command group, answering what the commands let through: Ostiary's errors with their
    message (exit 2), anything else as the bug it is (traceback, exit 3)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Abort, click.exceptions.Exit):
            raise  # usage errors, ^C, and exits: click answers them
        except OstiaryError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_INPUT)
        except Exception:
            traceback.print_exc()
            click.echo(
                "ostiary: internal error: this is an Ostiary bug, not a problem with the input; "
                "please report it with the traceback above",
                err=True,
            )
            sys.exit(EXIT_BUG)


@click.group(cls=OstiaryGroup)
@click.option("--log-level", default="INFO", show_default=True, help="Python log level.")
def main(log_level: str) -> None:
    """Ostiary: admit only container images whose signatures verify (Notary v1, cosign, keyless,
    simple signing, Notation) and whose policies allow them."""
    configure(getattr(logging, log_level.upper(), logging.INFO))


for command in (serve, audit, translate, check, explain, apply_cmd, test_cmd, trust):
    main.add_command(command)

__all__ = ["main"]
