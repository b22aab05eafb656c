"""Decide manifests exactly as the webhook would: an AdmissionReview per object, through the Reviewer.

Why not a separate evaluator: the promise of `ostiary apply` is *the webhook's* verdict. So this module
only builds the AdmissionReview the API server would send (kind, resource, namespace, user) and hands
it to `ostiary serve`'s own runtime (app/runtime.py) in directory mode: the same policy load and
failure policy, OPA, library, custom Rego, root pins, trust-server allow-list, Secrets and verifiers.
Only the network, the clock and the state directory are replaced (OfflineSources). The decision
log's recorder (app/decisionlog.py) keeps the decision query's input and answer, which is where the
matched entries, the trust facts used and the messages are.

    with Engine(ServeConfig(policy_dir="policies"), offline_sources(["trust/"])) as engine:
        result = engine.decide(manifest, namespace="default")
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

from app.admission.extract import BadRequest
from app.admission.respond import API_VERSION
from app.decisionlog import DecisionLog
from app.errors import InputError
from app.notary.service import TrustService
from app.notary.state import TrustRecord
from app.offline.manifests import Manifest
from app.offline.replay import ReplayClient, load_trust_data
from app.opa.process import OpaNotFound, OpaStartFailed
from app.runtime import OfflineSources, Runtime, ServeConfig
from app.signatures.replay import Capture, ReplayReader, is_capture
from app.signatures.service import SignatureService
from app.workloads import WORKLOADS

DEFAULT_NAMESPACE = "default"
DEFAULT_USER = "ostiary-apply"

# kind -> (API group, resource) as the API server names them in an AdmissionReview (app/workloads.py)
KIND_RESOURCES: dict[str, tuple[str, str]] = {w.kind: (w.group, w.plural) for w in WORKLOADS}


def _group_version(obj: dict, kind: str) -> tuple[str, str]:
    api_version = obj.get("apiVersion")
    if isinstance(api_version, str) and api_version:
        group, _, version = api_version.rpartition("/")
        return group, version
    return KIND_RESOURCES.get(kind, ("", ""))[0], "v1"


def admission_review(
    obj: dict,
    *,
    uid: str,
    namespace: str | None = None,
    username: str = DEFAULT_USER,
    groups: tuple[str, ...] = (),
    operation: str = "CREATE",
) -> dict:
    """The AdmissionReview the API server would send for creating (or updating) `obj`.

    The namespace is the manifest's own, else `namespace`, else "default"; like the API server, the
    object sent carries that namespace in its metadata.
    """
    kind = str(obj.get("kind") or "")
    meta: dict = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    ns = meta.get("namespace") if isinstance(meta.get("namespace"), str) and meta.get("namespace") else None
    ns = ns or namespace or DEFAULT_NAMESPACE
    sent = {**obj, "metadata": {**meta, "namespace": ns}}
    group, version = _group_version(obj, kind)
    resource = KIND_RESOURCES.get(kind, (group, kind.lower() + "s"))[1]
    user: dict[str, Any] = {"username": username}
    if groups:
        user["groups"] = list(groups)
    request = {
        "uid": uid,
        "kind": {"group": group, "version": version, "kind": kind},
        "resource": {"group": group, "version": version, "resource": resource},
        "requestKind": {"group": group, "version": version, "kind": kind},
        "name": meta.get("name") if isinstance(meta.get("name"), str) else "",
        "namespace": ns,
        "operation": operation,
        "userInfo": user,
        "object": sent,
        "oldObject": sent if operation == "UPDATE" else None,
        "dryRun": False,
        "options": None,
    }
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request}


@dataclass
class ImageResult:
    image: str
    container: dict
    path: str
    allowed: bool
    policy: dict | None
    reasons: list[str]
    warnings: list[str]
    pin: str | None
    trust: dict | None  # the verified facts the decision used (input.images[i].trust), when trust applied

    @property
    def entry(self) -> str:
        """The matched entry for a person: `pattern` (Kind name, namespace N | cluster)."""
        if not self.policy:
            return "no entry"
        scope = (
            f"namespace {self.policy.get('namespace')}"
            if self.policy.get("kind") == "ImagePolicy"
            else "cluster"
        )
        return (
            f"{self.policy.get('repository')} ({self.policy.get('kind')} {self.policy.get('name')}, {scope})"
        )

    def as_dict(self) -> dict:
        return {
            "image": self.image,
            "container": self.container,
            "path": self.path,
            "verdict": "allowed" if self.allowed else "denied",
            "allowed": self.allowed,
            "entry": self.policy,
            "match": self.entry,
            "reasons": self.reasons,
            "warnings": self.warnings,
            "pin": self.pin,
            "trust": self.trust,
        }


@dataclass
class ObjectResult:
    source: str
    line: int
    kind: str
    namespace: str
    name: str
    allowed: bool
    checked: bool  # False for kinds and operations the webhook lets through unchecked
    message: str  # the denial message the API server would show ("" when allowed)
    denials: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    patch: list[dict] = field(default_factory=list)
    images: list[ImageResult] = field(default_factory=list)
    error: bool = False  # denied because evaluation failed (policy engine, internal error)
    response: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # where this run may differ from the webhook, and why

    @property
    def label(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"

    @property
    def origin(self) -> str:
        return f"{self.source}:{self.line}" if self.line else self.source

    @property
    def verdict(self) -> str:
        return "denied" if not self.allowed else ("allowed" if self.checked else "not checked")

    def as_dict(self) -> dict:
        return {
            "source": self.origin,
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "verdict": self.verdict,
            "allowed": self.allowed,
            "message": self.message,
            "denials": self.denials,
            "warnings": self.warnings,
            "patch": self.patch,
            "images": [i.as_dict() for i in self.images],
            "notes": self.notes,
        }


def _patch(response: dict) -> list[dict]:
    raw = response.get("patch")
    if not isinstance(raw, str):
        return []
    try:
        return json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        return [{"undecodable": raw}]


class EngineError(InputError):
    """The policies, custom Rego or options cannot be put in force as `serve` would: no verdict."""


def offline_sources(
    trust_data: Sequence[str] = (), at: datetime | None = None, records: Sequence[TrustRecord] | None = None
) -> OfflineSources:
    """Captured trust data and signatures among `trust_data` (none: the network), the time `at`, and
    the recorded roots to start from. TrustDataError / SignatureDataError when a capture is unusable."""
    if not trust_data:
        return OfflineSources(at=at, records=records)
    return OfflineSources(
        notary_client=ReplayClient(load_trust_data(trust_data)),
        signature_reader=ReplayReader([Capture.load(d) for d in trust_data if is_capture(d)]),
        at=at,
        records=records,
    )


class Engine:
    """`ostiary serve`'s own runtime (app/runtime.py), in directory mode, deciding one object at a
    time: the same policy load, OPA, library, custom Rego, pins, allow-list, Secrets and verifiers,
    with captured trust data, a fixed time and given records in place of the network and the state
    directory. The decision log's recorder keeps what OPA was asked and answered."""

    def __init__(self, config: ServeConfig, sources: OfflineSources | None = None):
        self.config = config
        self.sources = sources or OfflineSources()
        self._active = self.sources  # what the reviewer decides with now (use() changes it)
        try:
            self.runtime = Runtime(config, self.sources)
        except OpaNotFound as exc:  # LocalOpa: no opa binary to start
            raise EngineError(str(exc)) from None
        self.log: DecisionLog = self.runtime.decisions  # the runtime's recorder (config.decision_log "off")
        self._services: dict[int, tuple[OfflineSources, TrustService, SignatureService]] = {}
        try:
            try:
                self.runtime.start(watch=False)
            except OpaStartFailed as exc:  # LocalOpa.start: the opa binary did not start
                raise EngineError(f"cannot start the local OPA: {exc}") from None
            held = self.runtime.sync.held_back  # over the push budget: serve keeps an older set in force
            problem = (
                self.runtime.load_error
                or (f"the policy set is held back: {held}" if held else "")
                or "; ".join(f"{what}: {why}" for what, why in self.runtime.refused.items())
            )
            if problem:
                raise EngineError(f"{problem} (`ostiary serve` would not decide with these policies either)")
        except BaseException:
            self.runtime.stop()
            raise
        self.reviewer = self.runtime.reviewer
        self._uids = 0

    def use(self, sources: OfflineSources) -> None:
        """Decide from now on with other captures, time or records (a test case's own); the services
        are built once per `sources` object and kept until close()."""
        if id(sources) not in self._services:
            self._services[id(sources)] = (
                sources,
                self.runtime.trust_service(sources),
                self.runtime.signature_service(sources),
            )
        self._active, self.reviewer.trust, self.reviewer.signatures = self._services[id(sources)]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.runtime.stop()
        for _, trust, signatures in self._services.values():
            trust.close()
            signatures.close()

    def _uid(self) -> str:
        self._uids += 1
        return f"00000000-0000-4000-8000-{self._uids:012d}"

    def decide(
        self,
        manifest: Manifest,
        *,
        namespace: str | None = None,
        username: str = DEFAULT_USER,
        groups: tuple[str, ...] = (),
        operation: str = "CREATE",
    ) -> ObjectResult:
        """The webhook's verdict on `manifest` (an object, or an AdmissionReview taken as it is)."""
        obj = manifest.obj
        if obj.get("kind") == "AdmissionReview":
            review = obj
        else:
            review = admission_review(
                obj,
                uid=self._uid(),
                namespace=namespace,
                username=username,
                groups=groups,
                operation=operation,
            )
        if manifest.template:  # `helm template` output: named by the chart's template, as written
            return self.decide_review(review, source=manifest.origin)
        return self.decide_review(review, source=manifest.source, line=manifest.line)

    def decide_review(self, review: dict, *, source: str = "", line: int = 0) -> ObjectResult:
        request: dict = review["request"] if isinstance(review.get("request"), dict) else {}
        obj: dict = request["object"] if isinstance(request.get("object"), dict) else {}
        meta: dict = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
        kind = str((request.get("kind") or {}).get("kind") or obj.get("kind") or "")
        namespace = str(request.get("namespace") or meta.get("namespace") or "")
        name = str(request.get("name") or meta.get("name") or meta.get("generateName") or "")
        self.log.begin()
        try:
            answer, outcome = self.reviewer.review(review)
        except BadRequest as exc:
            message = f"bad AdmissionReview: {exc}"
            return ObjectResult(
                source, line, kind, namespace, name, False, True, message, [message], error=True
            )
        response = answer["response"]
        trace = self.log.trace
        decision = trace.decision if isinstance(trace.decision, dict) else None
        checked = decision is not None or not outcome.allowed
        message = "" if response.get("allowed") else str((response.get("status") or {}).get("message") or "")
        denials = [d for d in (decision or {}).get("denials") or [] if isinstance(d, str)]
        if not response.get("allowed") and not denials:
            denials = [message]
        return ObjectResult(
            source=source,
            line=line,
            kind=kind,
            namespace=namespace,
            name=name,
            allowed=bool(response.get("allowed")),
            checked=checked,
            message=message,
            denials=denials,
            warnings=[w for w in response.get("warnings") or [] if isinstance(w, str)],
            patch=_patch(response),
            images=(images := self._images(outcome.images, trace.decision_input)),
            error=outcome.error,
            response=response,
            notes=self._notes(images),
        )

    def _notes(self, images: list[ImageResult]) -> list[str]:
        """The differences from the webhook this run cannot rule out, said where they apply."""
        if self._active.records is not None:
            return []
        return [
            f"{image.image}: its root was trusted on first use here, as no --trust-records were given; "
            "the webhook trusts the root it recorded for this repository, if it has one "
            "(give the output of `ostiary trust pins --json` as --trust-records)"
            for image in images
            if isinstance(image.trust, dict) and image.trust.get("root_trust") == "first-use"
        ]

    def _images(self, decided: list[dict], decision_input: dict | None) -> list[ImageResult]:
        inputs = {i.get("id"): i for i in (decision_input or {}).get("images") or []}
        result = []
        for item in decided:
            seen = inputs.get(item.get("id")) or {}
            result.append(
                ImageResult(
                    image=str(item.get("image")),
                    container=seen.get("container") or {},
                    path=str(item.get("path")),
                    allowed=bool(item.get("allowed")),
                    policy=item.get("policy") if isinstance(item.get("policy"), dict) else None,
                    reasons=list(item.get("reasons") or []),
                    warnings=list(item.get("warnings") or []),
                    pin=item.get("pin"),
                    trust=seen.get("trust"),
                )
            )
        return result
