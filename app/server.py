"""The Flask application: thin HTTP handlers bound to a started app.runtime.Runtime.

The runtime builds everything (the reviewer, its decision-log-wrapped OPA client, the services);
this module only binds it to routes. /admit takes the runtime's Reviewer once per request and
hands it the AdmissionReview; /validate judges policy resources; everything else is readiness,
health and metrics.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import defaults, jsonio
from app.admission import respond
from app.admission.decode import BadRequest, parse_review, request_uid
from app.admission.review import Outcome
from app.kube.validate import BadValidationRequest, validate_review
from app.policies.schema import parse_policy_document
from app.runtime import Runtime

log = logging.getLogger("ostiary")
MAX_BODY = defaults.MAX_BODY


def _bad(exc: Exception) -> ResponseReturnValue:
    return jsonify({"error": f"bad AdmissionReview: {exc}"}), 400


class _Routes:
    """The handlers, over one started runtime."""

    def __init__(self, rt: Runtime):
        self.rt = rt

    def too_large(self, _exc: Exception) -> ResponseReturnValue:
        return jsonify({"error": f"bad AdmissionReview: the body is larger than {MAX_BODY} bytes"}), 413

    def admit(self) -> ResponseReturnValue:
        rt, started = self.rt, time.monotonic()
        if not request.is_json:
            return jsonify({"error": "expected a JSON AdmissionReview (Content-Type: application/json)"}), 400
        try:  # strict: duplicated keys, NaN, over-deep nesting are refused (app/admission/decode.py)
            body = parse_review(request.get_data(cache=False))
        except BadRequest as exc:
            return _bad(exc)
        decisions = rt.decisions
        # Not serving, or OPA found not answering by the last probe (Supervisor.probe): deny at once
        # with the reason rather than hold a request thread until the deadline.
        if not rt.serving() or rt.opa_problem is not None:
            uid = request_uid(body)
            if uid:
                _, why = rt.ready()
                rt.metrics.record(False, True, [], time.monotonic() - started)
                answer = respond.deny(uid, f"Ostiary is not ready, so it denies: {why}")
                decisions.begin()
                decisions.write(body, answer, Outcome(False, why, error=True), time.monotonic() - started)
                return jsonify(answer)
        reviewer = rt.reviewer  # once: this request decides with this Reviewer, whatever a reload does
        decisions.begin()
        try:
            answer, outcome = reviewer.review(body)
        except BadRequest as exc:
            return _bad(exc)
        elapsed = time.monotonic() - started
        rt.metrics.record(outcome.allowed, outcome.error, outcome.images, elapsed)
        decisions.write(body, answer, outcome, elapsed)
        return Response(jsonio.dumps(answer), mimetype="application/json")

    def validate(self) -> ResponseReturnValue:
        """The validating webhook for ImagePolicy/ClusterImagePolicy (app/kube/validate.py)."""
        rt = self.rt
        try:  # the same strict decoding as /admit; validate_review answers a non-JSON body (None)
            body = parse_review(request.get_data(cache=False)) if request.is_json else None
        except BadRequest as exc:
            return _bad(exc)
        allow = rt.trust.allow
        try:
            answer = validate_review(
                body,
                parse=parse_policy_document,
                translate=rt.translate,  # with the bounds (app/policies/bounds.py)
                compiles=rt.sync.compiles,
                trust_server_allowed=allow.permits if allow is not None else None,
            )
        except BadValidationRequest as exc:
            return _bad(exc)
        return jsonify(answer)

    def healthz(self) -> ResponseReturnValue:
        return jsonify({"status": "ok"})

    def readyz(self) -> ResponseReturnValue:
        ok, why = self.rt.ready()
        return jsonify({"ready": ok, "reason": why}), (200 if ok else 503)

    def metrics(self) -> ResponseReturnValue:
        return Response(generate_latest(self.rt.metrics.registry), mimetype=CONTENT_TYPE_LATEST)


def build_app(rt: Runtime) -> Flask:
    """The Flask application over `rt`, a started Runtime (app/wsgi.py starts it)."""
    app = Flask("ostiary")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.extensions["ostiary"] = rt
    routes = _Routes(rt)
    app.register_error_handler(413, routes.too_large)
    app.add_url_rule("/admit", "admit", routes.admit, methods=["POST"])
    app.add_url_rule("/validate", "validate", routes.validate, methods=["POST"])
    app.add_url_rule("/healthz", "healthz", routes.healthz, methods=["GET"])
    app.add_url_rule("/readyz", "readyz", routes.readyz, methods=["GET"])
    app.add_url_rule("/metrics", "metrics", routes.metrics, methods=["GET"])
    return app
