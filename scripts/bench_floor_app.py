#!/usr/bin/env python3
"""The Flask floor of scripts/bench_admit.py: the cheapest webhook gunicorn + Flask can be.

It runs under gunicorn with exactly the settings `ostiary serve` applies (app/gunicorn_conf.py, the
same thread count), parses the AdmissionReview body as Ostiary does (Flask's request JSON), and answers
a fixed "allowed" AdmissionReview for the request's uid. Whatever Ostiary costs above this is Ostiary's
own work: policy, trust, OPA round trips, logging beyond gunicorn's access log.

    .venv/bin/python scripts/bench_floor_app.py --listen 127.0.0.1:9000 [--threads 8]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flask import Flask, jsonify, request
from gunicorn.app.base import BaseApplication

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_app() -> Flask:
    app = Flask("ostiary-floor")

    @app.post("/admit")
    def admit():
        review = request.get_json(force=True, silent=True)
        if not isinstance(review, dict) or not isinstance(review.get("request"), dict):
            return jsonify({"error": "not an AdmissionReview"}), 400
        uid = review["request"].get("uid", "")
        return jsonify(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {"uid": uid, "allowed": True},
            }
        )

    @app.get("/readyz")
    def readyz():
        return "ok\n"

    return app


class FloorApplication(BaseApplication):
    """gunicorn configured from app/gunicorn_conf.py, as app/wsgi.py's OstiaryApplication is."""

    def __init__(self, options: dict):
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        from app import gunicorn_conf

        for key in dir(gunicorn_conf):
            if key in self.cfg.settings:
                self.cfg.set(key, getattr(gunicorn_conf, key))
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self):
        return build_app()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="HOST:PORT")
    ap.add_argument("--threads", type=int, default=8, help="the same as `ostiary serve --threads`")
    args = ap.parse_args()
    FloorApplication({"bind": [args.listen], "threads": args.threads}).run()


if __name__ == "__main__":
    main()
