"""The Flask application and the runtime behind it (OPA, policy source, trust service).

Handlers stay thin: /admit hands the AdmissionReview to app.admission.review.Reviewer and turns
the outcome into JSON; everything else is readiness, health and metrics.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.admission import respond
from app.admission.extract import BadRequest
from app.admission.review import Reviewer
from app.metrics import Metrics
from app.opa.client import OpaClient, OpaError
from app.opa.process import LocalOpa
from app.policies.directory import (
    DirectoryStore,
    load_custom_rego,
    load_policy_set,
    translate_all,
)
from app.policies.model import DEFAULT_SYSTEM_NAMESPACE, PolicyError, PolicySet
from app.policies.sync import PolicySync, library_modules

log = logging.getLogger("ostiary")
MAX_BODY = 3 * 1024 * 1024  # the API server sends at most ~3 MiB objects


@dataclass
class ServeConfig:
    policy_dir: str | None = None
    rego_dir: str | None = None
    opa_url: str | None = None
    opa_token_file: str | None = None  # the bearer token of an external OPA (the chart's sidecar)
    ca_file: str | None = None
    system_namespace: str = DEFAULT_SYSTEM_NAMESPACE
    budget: float = 8.0
    trust_cache_ttl: float = 60.0
    kube: bool = False
    kubeconfig: str | None = None
    watch_interval: float = 2.0
    extra: dict = field(default_factory=dict)


def read_token(path: str) -> str:
    """The bearer token in `path` (surrounding whitespace dropped; a Secret's trailing newline)."""
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the OPA token file {path}: {exc}") from None
    if not token or any(c.isspace() for c in token):
        raise ValueError(f"the OPA token file {path} must hold one token (no spaces), not {'nothing' if not token else 'several words'}")
    return token


def _dir_signature(*dirs: str | None) -> tuple:
    sig = []
    for d in dirs:
        if not d or not Path(d).is_dir():
            continue
        for p in sorted(Path(d).rglob("*")):
            if p.is_file():
                st = p.stat()
                sig.append((str(p), st.st_mtime_ns, st.st_size))
    return tuple(sig)


class Runtime:
    """Owns OPA (local or remote), the policy sync, the object store and the reviewer."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.metrics = Metrics()
        self.local_opa: LocalOpa | None = None
        if config.opa_url:
            opa_url = config.opa_url
            token = read_token(config.opa_token_file) if config.opa_token_file else None
        else:
            self.local_opa = LocalOpa(authenticate=True).start()
            opa_url, token = self.local_opa.url, self.local_opa.token
        self.opa = OpaClient(opa_url, token=token)
        self.sync = PolicySync(self.opa, on_drift=self.metrics.record_drift)
        self.load_error: str | None = None
        self._signature: tuple = ()
        self._stop = threading.Event()
        self.kube: Any = None
        self.store: object = DirectoryStore(PolicySet())
        self.trust = self._trust_service()
        self.metrics.watch_trust(self.trust.stats)
        try:
            self.sync.set_base(library_modules() + self._custom_modules())
        except (PolicyError, OpaError) as exc:
            self.load_error = str(exc)
            log.error("custom Rego not loaded: %s", exc)
        if config.kube:
            self._start_kube()
        elif config.policy_dir:
            self.reload_directory(initial=True)
        else:
            self.load_error = "no policy source: give --policy-dir or --kube"
        self.reviewer = Reviewer(
            self.opa,
            self.store,  # type: ignore[arg-type]
            trust=self.trust,
            owners=getattr(self.kube, "owners", None),
            system_namespace=config.system_namespace,
            budget=config.budget,
        )
        self._watchdog = threading.Thread(target=self._watch, name="ostiary-watchdog", daemon=True)
        self._watchdog.start()

    def _trust_service(self):
        from app.notary.service import TrustService

        return TrustService(ca_file=self.config.ca_file, cache_ttl=self.config.trust_cache_ttl)

    def _custom_modules(self):
        return load_custom_rego(self.config.rego_dir) if self.config.rego_dir else []

    def _start_kube(self) -> None:
        from app.kube.runtime import KubeRuntime
        from app.policies.translate import translate

        self.kube = KubeRuntime(
            kubeconfig=self.config.kubeconfig,
            system_namespace=self.config.system_namespace,
            sync=self.sync,
            translate=translate,
        )
        self.store = self.kube.store
        self.kube.start()

    def reload_directory(self, initial: bool = False) -> None:
        """Load the policy directory all or nothing; on failure keep what OPA already has."""
        signature = _dir_signature(self.config.policy_dir, self.config.rego_dir)
        try:
            policy_set = load_policy_set(self.config.policy_dir or "", self.config.system_namespace)
            modules = translate_all(policy_set.policies)
            if not initial:
                self.sync.set_base(library_modules() + self._custom_modules())
            self.sync.replace_all(modules)
        except (PolicyError, OpaError) as exc:
            self.load_error = str(exc)
            log.error("policies not loaded: %s", exc)
            # A bad file waits for the next change; OPA failing (killed mid-push) is retried next round.
            if isinstance(exc, PolicyError):
                self._signature = signature
            return
        self.store = DirectoryStore(policy_set)
        if hasattr(self, "reviewer"):
            self.reviewer.store = self.store
        self.metrics.policies.set(len(policy_set.policies))
        self.load_error = None
        self._signature = signature
        log.info("loaded %d policies from %s", len(policy_set.policies), self.config.policy_dir)

    def _watch(self) -> None:
        """Restart a dead local OPA; in directory mode push everything again when OPA lost its
        modules, and reload the files when they change."""
        while not self._stop.wait(self.config.watch_interval):
            try:
                if self.local_opa is not None and not self.local_opa.alive():
                    log.error("local OPA died; restarting it: %s", self.local_opa.log_tail(500))
                    self.local_opa.start()
                    self.opa.url = self.local_opa.url
                # OPA must hold exactly Ostiary's modules: any difference (OPA restarted, a module
                # planted, deleted or replaced by someone else) is repaired, logged and counted.
                # In a cluster the policy source does this itself (and lists the API again).
                if self.kube is None and self.sync.synced:
                    try:
                        self.sync.repair()
                    except OpaError as exc:
                        log.warning("could not compare OPA's modules with Ostiary's: %s", exc)
                if (
                    self.config.policy_dir
                    and not self.config.kube
                    and _dir_signature(self.config.policy_dir, self.config.rego_dir) != self._signature
                ):
                    self.reload_directory()
            except Exception:  # keep watching; the next round tries again
                log.exception("watchdog round failed")

    def ready(self) -> tuple[bool, str]:
        if self.load_error and not self.sync.synced:
            return False, f"policies not loaded: {self.load_error}"
        if not self.sync.synced:
            return False, "policies not synced yet"
        if self.kube is not None and not self.kube.ready:
            return False, "cluster policy source has not finished its first sync"
        problem = self.opa.problem()
        if problem:
            return False, problem
        if not self.sync.in_place():
            return False, "OPA does not hold exactly Ostiary's modules (repair pending)"
        return True, "ready" + (f" (last reload failed: {self.load_error})" if self.load_error else "")

    def close(self) -> None:
        self._stop.set()
        if self.kube is not None:
            self.kube.stop()
        if self.local_opa is not None:
            self.local_opa.stop()
        close = getattr(self.trust, "close", None)
        if close:
            close()


def build_app(config: ServeConfig | None = None, runtime: Runtime | None = None) -> Flask:
    config = config or ServeConfig()
    app = Flask("ostiary")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    rt = runtime or Runtime(config)
    app.extensions["ostiary"] = rt
    decisions = logging.getLogger("ostiary.decisions")

    @app.post("/admit")
    def admit():
        started = time.monotonic()
        body = request.get_json(silent=True)
        if body is None:
            return jsonify({"error": "expected a JSON AdmissionReview (Content-Type: application/json)"}), 400
        if not rt.sync.synced:
            uid = ((body.get("request") or {}) if isinstance(body, dict) else {}).get("uid")
            if isinstance(uid, str) and uid:
                _, why = rt.ready()
                rt.metrics.record(False, True, [], time.monotonic() - started)
                return jsonify(respond.deny(uid, f"Ostiary is not ready, so it denies: {why}"))
        try:
            answer, outcome = rt.reviewer.review(body)
        except BadRequest as exc:
            return jsonify({"error": f"bad AdmissionReview: {exc}"}), 400
        elapsed = time.monotonic() - started
        rt.metrics.record(outcome.allowed, outcome.error, outcome.images, elapsed)
        decisions.info(
            json.dumps(
                {
                    "uid": answer["response"]["uid"],
                    "allowed": outcome.allowed,
                    "reason": outcome.reason[:2000],
                    "images": [
                        {k: i.get(k) for k in ("image", "allowed", "reasons", "pin")} for i in outcome.images
                    ],
                    "seconds": round(elapsed, 4),
                }
            )
        )
        return jsonify(answer)

    @app.post("/validate")
    def validate():
        """The validating webhook for ImagePolicy/ClusterImagePolicy (app/kube/validate.py)."""
        from app.kube.validate import BadValidationRequest, validate_review
        from app.policies.schema import parse_policy_document
        from app.policies.translate import translate

        body = request.get_json(silent=True)
        try:
            answer = validate_review(body, parse=parse_policy_document, translate=translate,
                                     compiles=rt.sync.compiles)
        except BadValidationRequest as exc:
            return jsonify({"error": f"bad AdmissionReview: {exc}"}), 400
        return jsonify(answer)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        ok, why = rt.ready()
        return jsonify({"ready": ok, "reason": why}), (200 if ok else 503)

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(rt.metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    return app
