"""Ostiary: a Kubernetes admission webhook that admits only images whose Notary v1 trust data verifies."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from app.runtime import ServeConfig

__version__ = "0.2.0"


def create_app(config: ServeConfig | None = None) -> Flask:
    """The Flask application factory (see app/server.py)."""
    from app.server import build_app

    return build_app(config)
