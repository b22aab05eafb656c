"""The Flask application: thin HTTP handlers over a started app.runtime.Runtime.

/admit hands the AdmissionReview to app.admission.review.Reviewer and turns the outcome into JSON;
/validate judges policy resources; everything else is readiness, health and metrics.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import defaults, jsonio
from app.admission import respond
from app.admission.extract import BadRequest
from app.admission.review import Outcome, parse_review, request_uid
from app.decisionlog import DecisionLog
from app.runtime import Runtime, ServeConfig

log = logging.getLogger("ostiary")
MAX_BODY = defaults.MAX_BODY


def build_app(config: ServeConfig | None = None, runtime: Runtime | None = None) -> Flask:
    config = config or ServeConfig()
    app = Flask("ostiary")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    rt = runtime if runtime is not None else Runtime(config).start()
    app.extensions["ostiary"] = rt
    decisions = DecisionLog.open(config.decision_log)
    rt.reviewer.opa = decisions.wrap(rt.reviewer.opa)

    @app.errorhandler(413)
    def too_large(_exc: Exception) -> ResponseReturnValue:
        return jsonify({"error": f"bad AdmissionReview: the body is larger than {MAX_BODY} bytes"}), 413

    @app.post("/admit")
    def admit() -> ResponseReturnValue:
        started = time.monotonic()
        if not request.is_json:
            return jsonify({"error": "expected a JSON AdmissionReview (Content-Type: application/json)"}), 400
        try:  # strict: duplicated keys, NaN, over-deep nesting are refused (app/admission/review.py)
            body = parse_review(request.get_data(cache=False))
        except BadRequest as exc:
            return jsonify({"error": f"bad AdmissionReview: {exc}"}), 400
        # Not serving, or OPA found not answering by the last probe (rt.probe): deny at once with
        # the reason rather than hold a request thread until the deadline.
        if not rt.serving() or rt.opa_problem is not None:
            uid = request_uid(body)
            if uid:
                _, why = rt.ready()
                rt.metrics.record(False, True, [], time.monotonic() - started)
                answer = respond.deny(uid, f"Ostiary is not ready, so it denies: {why}")
                decisions.begin()
                decisions.write(body, answer, Outcome(False, why, error=True), time.monotonic() - started)
                return jsonify(answer)
        decisions.begin()
        try:
            answer, outcome = rt.reviewer.review(body)
        except BadRequest as exc:
            return jsonify({"error": f"bad AdmissionReview: {exc}"}), 400
        elapsed = time.monotonic() - started
        rt.metrics.record(outcome.allowed, outcome.error, outcome.images, elapsed)
        decisions.write(body, answer, outcome, elapsed)
        return Response(jsonio.dumps(answer), mimetype="application/json")

    @app.post("/validate")
    def validate() -> ResponseReturnValue:
        """The validating webhook for ImagePolicy/ClusterImagePolicy (app/kube/validate.py)."""
        from app.kube.validate import BadValidationRequest, validate_review
        from app.policies.schema import parse_policy_document

        try:  # the same strict decoding as /admit; validate_review answers a non-JSON body (None)
            body = parse_review(request.get_data(cache=False)) if request.is_json else None
        except BadRequest as exc:
            return jsonify({"error": f"bad AdmissionReview: {exc}"}), 400
        try:
            allow = rt.trust.allow
            answer = validate_review(
                body,
                parse=parse_policy_document,
                translate=rt.translate,  # with the bounds (app/policies/bounds.py)
                compiles=rt.sync.compiles,
                trust_server_allowed=allow.permits if allow is not None else None,
            )
        except BadValidationRequest as exc:
            return jsonify({"error": f"bad AdmissionReview: {exc}"}), 400
        return jsonify(answer)

    @app.get("/healthz")
    def healthz() -> ResponseReturnValue:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> ResponseReturnValue:
        ok, why = rt.ready()
        return jsonify({"ready": ok, "reason": why}), (200 if ok else 503)

    @app.get("/metrics")
    def metrics() -> ResponseReturnValue:
        return Response(generate_latest(rt.metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    return app
