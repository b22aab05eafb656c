"""The `ostiary` command, one module per command group (docs/internals.md):

    serve.py    serve
    audit.py    audit
    policy.py   translate, check, explain, apply, test
    trust.py    trust inspect, capture, pins, pin, unpin
    options.py  the options they share (--at, --trust-data, bounds, ...), defined once

The commands import their parts lazily, so `ostiary --help` stays fast.
"""

from __future__ import annotations

import logging

import click

from app.cli.audit import audit
from app.cli.policy import apply_cmd, check, explain, test_cmd, translate
from app.cli.serve import serve
from app.cli.trust import trust


@click.group()
@click.option("--log-level", default="INFO", show_default=True, help="Python log level.")
def main(log_level: str) -> None:
    """Ostiary: admit only container images whose signatures verify (Notary v1, cosign, keyless,
    simple signing, Notation) and whose policies allow them."""
    from app.logsafe import configure

    configure(getattr(logging, log_level.upper(), logging.INFO))


for command in (serve, audit, translate, check, explain, apply_cmd, test_cmd, trust):
    main.add_command(command)

__all__ = ["main"]
