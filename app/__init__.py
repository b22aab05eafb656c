"""Ostiary: a Kubernetes admission webhook that admits only images whose Notary v1 trust data verifies."""

from __future__ import annotations

__version__ = "0.1.0"


def create_app(config=None):
    """The Flask application factory (see app/server.py)."""
    from app.server import build_app

    return build_app(config)
