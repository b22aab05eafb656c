"""Run the Flask app under gunicorn: one worker process (it owns OPA and the watches), many threads.

TLS: the certificate and key are read again when their files change (a cert-manager rotation),
without a restart: the SNI callback swaps in a fresh SSLContext for new connections.
"""

from __future__ import annotations

import atexit
import logging
import os
import ssl
import threading

from flask import Flask
from gunicorn.app.base import BaseApplication

from app import gunicorn_conf
from app import serving as _serving  # noqa: F401 - registers the worker's settings before gunicorn builds its config
from app.runtime import Runtime, ServeConfig
from app.server import build_app

log = logging.getLogger("ostiary")


class ReloadingContext:
    """Builds SSLContexts from files and hands out a new one when the files changed."""

    def __init__(self, cert: str, key: str):
        self.cert, self.key = cert, key
        self._lock = threading.Lock()
        self._stamp: tuple = ()
        self._context: ssl.SSLContext | None = None

    def _files_stamp(self) -> tuple:
        return tuple((os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in (self.cert, self.key))

    def _build(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        ctx.sni_callback = self._sni
        return ctx

    def current(self) -> ssl.SSLContext:
        with self._lock:
            try:
                stamp = self._files_stamp()
            except OSError:
                stamp = self._stamp
            if self._context is None or stamp != self._stamp:
                try:
                    self._context = self._build()
                    self._stamp = stamp
                except (OSError, ssl.SSLError) as exc:
                    if self._context is None:
                        raise
                    log.error("TLS files changed but could not be loaded, keeping the old ones: %s", exc)
            return self._context

    def _sni(self, sslobj: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        fresh = self.current()
        if sslobj.context is not fresh:
            sslobj.context = fresh


class OstiaryApplication(BaseApplication):
    def __init__(self, config: ServeConfig, options: dict):
        self.config = config
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key in dir(gunicorn_conf):
            if key in self.cfg.settings:
                self.cfg.set(key, getattr(gunicorn_conf, key))
        # gunicorn's convention: GUNICORN_CMD_ARGS overrides the config file (not `ostiary serve`'s flags)
        env_args = self.cfg.get_cmd_args_from_env()
        if env_args:
            parsed = self.cfg.parser().parse_args(env_args)
            for key, value in vars(parsed).items():
                if value is not None and key != "args":
                    self.cfg.set(key.lower(), value)
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return started_app(self.config)


def started_app(config: ServeConfig) -> Flask:
    """Build and start the runtime (stopped at exit), and bind the Flask application to it: what
    the gunicorn worker runs, and app.create_app."""
    runtime = Runtime(config).start()
    atexit.register(runtime.stop)
    return build_app(runtime)


def run_gunicorn(
    config: ServeConfig, host: str, port: int, tls_cert: str | None, tls_key: str | None, threads: int
) -> None:
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    options: dict = {"bind": [bind], "threads": threads}
    if tls_cert and tls_key:
        reloading = ReloadingContext(tls_cert, tls_key)
        reloading.current()  # fail at start, not at the first handshake, when the files are bad
        options.update(
            certfile=tls_cert,
            keyfile=tls_key,
            ssl_context=lambda _conf, _default: reloading.current(),
        )
    OstiaryApplication(config, options).run()
