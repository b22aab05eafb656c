"""The Flask application and the runtime behind it (OPA, policy source, trust service).

Handlers stay thin: /admit hands the AdmissionReview to app.admission.review.Reviewer and turns
the outcome into JSON; everything else is readiness, health and metrics.
"""

from __future__ import annotations

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
from app.admission.review import Outcome, Reviewer, parse_review, request_uid
from app.decisionlog import DecisionLog
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
MAX_BODY = 7 * 1024 * 1024  # an UPDATE carries object and oldObject, each up to the API server's 3 MiB request limit


@dataclass
class ServeConfig:
    policy_dir: str | None = None
    rego_dir: str | None = None
    opa_url: str | None = None
    ca_file: str | None = None
    system_namespace: str = DEFAULT_SYSTEM_NAMESPACE
    budget: float = 8.0
    trust_cache_ttl: float = 60.0
    kube: bool = False
    kubeconfig: str | None = None
    decision_log: str | None = "-"  # app/decisionlog.py: "-" stdout, a file path, or "off"
    watch_interval: float = 2.0
    state_dir: str | None = None  # durable trust-on-first-use records (app/notary/state.py); None: memory only
    root_pins: str | None = None  # YAML file: trust server URL -> pinned root material (serve --root-pins)
    extra: dict = field(default_factory=dict)


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
        else:
            self.local_opa = LocalOpa().start()
            opa_url = self.local_opa.url
        self.opa = OpaClient(opa_url)
        self.sync = PolicySync(self.opa, on_drift=self.metrics.record_drift)
        self.load_error: str | None = None
        self._signature: tuple = ()
        self._rego_signature: tuple = _dir_signature(config.rego_dir)
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

        records = None
        if self.config.state_dir:
            from app.notary.state import FileRecordStore

            records = FileRecordStore(self.config.state_dir).ensure()
        default_pins = None
        if self.config.root_pins:
            from app.notary.verify import load_default_root_pins

            default_pins = load_default_root_pins(self.config.root_pins)
        return TrustService(ca_file=self.config.ca_file, cache_ttl=self.config.trust_cache_ttl, records=records,
                            default_pins=default_pins)

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
        if not self.config.state_dir:
            # Records shared by every replica, in the cluster (app/kube/records.py).
            from app.kube.records import KubeRecordStore

            self.trust.records = KubeRecordStore(self.kube.request_api, self.config.system_namespace)
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

    def reload_custom_rego(self) -> None:
        """Cluster mode: the custom Rego folder (a mounted ConfigMap) changed; push the new set
        all or nothing. A bad file keeps the last good set in force and is reported until fixed."""
        signature = _dir_signature(self.config.rego_dir)
        try:
            self.sync.set_base(library_modules() + self._custom_modules())
        except (PolicyError, OpaError) as exc:
            self.load_error = f"custom Rego not loaded: {exc}"
            log.error("%s", self.load_error)
            if isinstance(exc, PolicyError):
                self._rego_signature = signature
            return
        self.load_error = None
        self._rego_signature = signature
        log.info("custom Rego reloaded from %s", self.config.rego_dir)

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
                if self.config.kube and _dir_signature(self.config.rego_dir) != self._rego_signature:
                    self.reload_custom_rego()
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
        if not self.opa.healthy():
            return False, f"OPA at {self.opa.url} does not answer"
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
    decisions = DecisionLog.open(config.decision_log)
    rt.reviewer.opa = decisions.wrap(rt.reviewer.opa)

    @app.errorhandler(413)
    def too_large(_exc):
        return jsonify({"error": f"bad AdmissionReview: the body is larger than {MAX_BODY} bytes"}), 413

    @app.post("/admit")
    def admit():
        started = time.monotonic()
        if not request.is_json:
            return jsonify({"error": "expected a JSON AdmissionReview (Content-Type: application/json)"}), 400
        try:  # strict: duplicated keys, NaN, over-deep nesting are refused (app/admission/review.py)
            body = parse_review(request.get_data(cache=False))
        except BadRequest as exc:
            return jsonify({"error": f"bad AdmissionReview: {exc}"}), 400
        if not rt.sync.synced:
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
        return jsonify(answer)

    @app.post("/validate")
    def validate():
        """The validating webhook for ImagePolicy/ClusterImagePolicy (app/kube/validate.py)."""
        from app.kube.validate import BadValidationRequest, validate_review
        from app.policies.schema import parse_policy_document
        from app.policies.translate import translate

        try:  # the same strict decoding as /admit; validate_review answers a non-JSON body (None)
            body = parse_review(request.get_data(cache=False)) if request.is_json else None
        except BadRequest as exc:
            return jsonify({"error": f"bad AdmissionReview: {exc}"}), 400
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
