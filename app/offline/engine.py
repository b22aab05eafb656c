"""Decide manifests exactly as the webhook would: an AdmissionReview per object, through the Reviewer.

Why not a separate evaluator: the promise of `ostiary apply` is *the webhook's* verdict. So this module
only builds the AdmissionReview the API server would send (kind, resource, namespace, user) and hands
it to the same Reviewer, policy translator and library that `ostiary serve` runs, in a real OPA started
as `ostiary check` starts it. The OPA client is wrapped only to keep a copy of the decision query's
input and answer, which is where the matched entries, the trust facts used and the messages are.

    with Engine(policy_dir="policies", trust=TrustService()) as engine:
        result = engine.decide(manifest, namespace="default")
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Self

from app.admission.extract import BadRequest
from app.admission.respond import API_VERSION
from app.admission.review import Reviewer, decision_answered
from app.offline.manifests import Manifest
from app.policies.model import DEFAULT_SYSTEM_NAMESPACE
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


class _RecordingOpa:
    """The OPA client, unchanged, keeping the last decision query's input and answer."""

    def __init__(self, client: Any):
        self._client = client
        self.decision_input: dict | None = None
        self.decision: Any = None

    def reset(self) -> None:
        self.decision_input = None
        self.decision = None

    def query(self, path: str, input: dict, deadline: float) -> Any:
        result = self._client.query(path, input, deadline)
        decision = decision_answered(path, result)
        if decision is not None:
            self.decision_input, self.decision = input, decision
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


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
        }


def _patch(response: dict) -> list[dict]:
    raw = response.get("patch")
    if not isinstance(raw, str):
        return []
    try:
        return json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        return [{"undecodable": raw}]


def _start_opa(policy_dir: str, rego_dir: str | None, system_namespace: str) -> tuple[Any, Any, Any]:
    """Load and translate the policies, start a local OPA (with a token, as `serve` starts one), push
    the library, the custom Rego and the policies; the OPA is stopped again when anything is refused,
    since `ostiary test` goes on with the next file in the same process."""
    from app.opa.client import OpaClient
    from app.opa.process import LocalOpa
    from app.policies.directory import load_custom_rego, load_policy_set, translate_all
    from app.policies.sync import PolicySync, library_modules

    policy_set = load_policy_set(policy_dir, system_namespace)
    modules = translate_all(policy_set.policies)
    custom = load_custom_rego(rego_dir) if rego_dir else []
    opa = LocalOpa(authenticate=True).start()
    try:
        client = OpaClient(opa.url, token=opa.token)
        sync = PolicySync(client)
        sync.set_base(library_modules() + custom)
        sync.replace_all(modules)
    except BaseException:
        opa.stop()
        raise
    return opa, client, policy_set


class Engine:
    """A real OPA holding the library, the custom Rego and the translated policies, and a Reviewer."""

    def __init__(
        self,
        policy_dir: str,
        *,
        rego_dir: str | None = None,
        trust: Any = None,
        signatures: Any = None,
        system_namespace: str = DEFAULT_SYSTEM_NAMESPACE,
        budget: float = 30.0,
    ):
        from app.notary.service import TrustService
        from app.policies.directory import DirectoryStore
        from app.policies.translate import cluster_trust_servers

        self._opa, client, self.policy_set = _start_opa(policy_dir, rego_dir, system_namespace)
        if isinstance(trust, TrustService):
            trust.allow_only(cluster_trust_servers(self.policy_set.policies))
        self._recorder = _RecordingOpa(client)
        self.reviewer = Reviewer(
            self._recorder,
            DirectoryStore(self.policy_set),
            trust=trust,  # type: ignore[arg-type]
            system_namespace=system_namespace,
            budget=budget,
            signatures=signatures,
        )
        self._uids = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._opa.stop()

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
        return self.decide_review(review, source=manifest.source, line=manifest.line)

    def decide_review(self, review: dict, *, source: str = "", line: int = 0) -> ObjectResult:
        request: dict = review["request"] if isinstance(review.get("request"), dict) else {}
        obj: dict = request["object"] if isinstance(request.get("object"), dict) else {}
        meta: dict = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
        kind = str((request.get("kind") or {}).get("kind") or obj.get("kind") or "")
        namespace = str(request.get("namespace") or meta.get("namespace") or "")
        name = str(request.get("name") or meta.get("name") or meta.get("generateName") or "")
        self._recorder.reset()
        try:
            answer, outcome = self.reviewer.review(review)
        except BadRequest as exc:
            message = f"bad AdmissionReview: {exc}"
            return ObjectResult(
                source, line, kind, namespace, name, False, True, message, [message], error=True
            )
        response = answer["response"]
        decision = self._recorder.decision if isinstance(self._recorder.decision, dict) else None
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
            images=self._images(outcome.images),
            error=outcome.error,
            response=response,
        )

    def _images(self, decided: list[dict]) -> list[ImageResult]:
        inputs = {i.get("id"): i for i in (self._recorder.decision_input or {}).get("images") or []}
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
