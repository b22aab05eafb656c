"""Ostiary: a Kubernetes admission webhook that admits only images whose Notary v1 trust data verifies."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask

    from app.runtime import ServeConfig

__version__ = "0.2.0"


def create_app(config: ServeConfig | None = None) -> Flask:
    """The Flask application over a started runtime (app/wsgi.py started_app; app/server.py)."""
    from app.runtime import ServeConfig  # lazy: `import app` (every module's parent) stays light
    from app.wsgi import started_app  # lazy: as above, and gunicorn is only loaded to serve

    return started_app(config or ServeConfig())
