"""Deciding one stored object as admission would decide its creation, without changing anything.

The stored object becomes a CREATE AdmissionReview (dry run: the trust service writes no
first-use record) and goes through the serving Reviewer itself: the same plan and decision
queries, the same trust and signature gathering, the same owner approval. The response is only
read: its JSONPatch is never applied. Each image of the object gets one result:

- ``pass``: admission would allow the image (no warning);
- ``warn``: it would allow it, with warnings;
- ``fail``: it would deny it; the message is the policy's reason;
- ``error``: it could not be decided — OPA failed, the trust server could not be reached or
  answered out of turn, the trust service failed, an API read failed. Never a pass.

An object denied as a whole while each image is allowed (a custom rule, a refused namespace
policy) gets one more ``fail`` result for the object (rule ``object``).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from app.admission import respond
from app.admission.extract import BadRequest, ImageSite, image_sites
from app.admission.review import Outcome, Reviewer
from app.audit.config import ERROR, FAIL, PASS, RESULTS, WARN
from app.audit.ratelimit import TokenBucket
from app.audit.scan import DEFAULT_PAGE_SIZE, AuditStopped, Listed, ListFailed, PagedApi, list_kind
from app.images import ImageRef
from app.notary.requests import TrustRequest
from app.signatures.port import SignatureRequest
from app.workloads import WORKLOADS

log = logging.getLogger("ostiary.audit")

SOURCE = "ostiary"
AUDIT_USER = {"username": "ostiary:audit", "groups": ["ostiary:audit"]}


@dataclass(frozen=True)
class Result:
    """One line of the audit: an image of an object (or the object itself, rule ``object``)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    container: str  # "containers/web", "initContainers/setup", "" for the object itself
    image: str  # as stored, "" for the object itself
    policy: str  # "ImagePolicy/ns/name", "ClusterImagePolicy/name" or "ostiary" (no entry applied)
    rule: str  # the policy entry (its repository pattern), "image" or "object"
    result: str  # pass | fail | warn | error
    message: str
    timestamp: float  # seconds since the epoch

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AuditRun:
    """What one audit found: a result per image of each object, and what could not be listed."""

    results: list[Result] = field(default_factory=list)
    list_errors: list[str] = field(
        default_factory=list
    )  # kinds whose listing failed (their results are missing)
    failed_kinds: list[str] = field(default_factory=list)  # "apps/v1 Deployment" of each failed listing
    objects: int = 0
    started: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    namespace: str | None = None  # None: all namespaces

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(RESULTS, 0)
        for r in self.results:
            out[r.result] += 1
        return out


class _ImageRequest(Protocol):
    """A request about one image (app.notary.requests.TrustRequest, app.signatures.port.SignatureRequest)."""

    @property
    def image(self) -> ImageRef: ...


R = TypeVar("R", bound=_ImageRequest)
R_contra = TypeVar("R_contra", bound=_ImageRequest, contravariant=True)


class _Gatherer(Protocol[R_contra]):
    """app.ports.TrustGatherer or app.ports.SignatureGatherer: facts, one per request, in order."""

    def gather(self, requests: Sequence[R_contra], deadline: float) -> list[dict]: ...


class _Capturing(Generic[R]):
    """A serving gatherer (trust or signatures), seen through: remembers, for each image (by the
    reference as written), facts that say the service or the server could not answer (their
    `unavailable` flag), so a failure to check can be told from a verdict."""

    def __init__(self, inner: _Gatherer[R]):
        self.inner = inner
        self.local = threading.local()

    def gather(self, requests: Sequence[R], deadline: float) -> list[dict]:
        facts = self.inner.gather(requests, deadline)
        seen = getattr(self.local, "seen", None)
        if seen is not None and isinstance(facts, list):
            for request, item in zip(requests, facts, strict=False):
                if getattr(item, "unavailable", False):
                    seen[request.image.original] = str(item.get("error") or "trust data unavailable")
        return facts


def policy_name(policy: object) -> tuple[str, str]:
    """(policy, rule) of a decision image's `policy` ({kind, name, namespace, repository, …} | null)."""
    if not isinstance(policy, dict) or not policy.get("name"):
        return SOURCE, "image"
    kind, name, ns = str(policy.get("kind") or "ImagePolicy"), str(policy["name"]), policy.get("namespace")
    rule = str(policy.get("repository") or "image")
    return (f"{kind}/{ns}/{name}" if ns else f"{kind}/{name}"), rule


def review_of(listed: Listed, uid: str) -> dict:
    """The CREATE AdmissionReview of a stored object (dry run, by the audit's user)."""
    kind, obj = listed.kind, listed.obj
    meta = obj.get("metadata") or {}
    gvk = {"group": kind.group, "version": kind.version, "kind": kind.kind}
    return {
        "apiVersion": respond.API_VERSION,
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": {"group": kind.group, "version": kind.version, "resource": kind.plural},
            "requestKind": gvk,
            "requestResource": {"group": kind.group, "version": kind.version, "resource": kind.plural},
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "operation": "CREATE",
            "userInfo": AUDIT_USER,
            "object": obj,
            "oldObject": None,
            "dryRun": True,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


class Auditor:
    """Decides stored objects through a copy of the serving Reviewer (the same OPA, store, trust
    and signature services, owner verifier and plan cache; only the trust service is watched)."""

    def __init__(self, reviewer: Reviewer, clock: Callable[[], float] = time.time):
        self.reviewer = copy.copy(reviewer)
        self.captures: list[_Capturing[TrustRequest] | _Capturing[SignatureRequest]] = []
        if reviewer.trust is not None:
            trust = _Capturing[TrustRequest](reviewer.trust)
            self.captures.append(trust)
            self.reviewer.trust = trust
        if reviewer.signatures is not None:
            signatures = _Capturing[SignatureRequest](reviewer.signatures)
            self.captures.append(signatures)
            self.reviewer.signatures = signatures
        self.clock = clock

    def decide(self, listed: Listed) -> list[Result]:
        obj = listed.obj
        meta = obj.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        now = self.clock()

        def result(site: ImageSite | None, policy: str, rule: str, verdict: str, message: str) -> Result:
            return Result(
                api_version=listed.kind.api_version,
                kind=listed.kind.kind,
                namespace=str(meta.get("namespace") or ""),
                name=str(meta.get("name") or ""),
                uid=uid,
                container=f"{site.container_kind}/{site.container}" if site is not None else "",
                image=site.image if site is not None else "",
                policy=policy,
                rule=rule,
                result=verdict,
                message=message,
                timestamp=now,
            )

        try:
            sites = image_sites(obj, listed.kind.kind)
        except BadRequest as exc:
            return [result(None, SOURCE, "object", ERROR, f"Ostiary could not read the object: {exc}")]
        outcome, message, unavailable = self._review(listed, uid)
        if outcome is None or outcome.error:
            message = outcome.reason if outcome is not None else message
            if not sites:
                return [result(None, SOURCE, "object", ERROR, message)]
            return [result(site, SOURCE, "image", ERROR, message) for site in sites]
        decided = outcome.images if len(outcome.images) == len(sites) else []
        out = [
            result(
                site, *policy_name(image.get("policy")), *image_verdict(image, unavailable.get(site.image))
            )
            for site, image in zip(sites, decided, strict=False)
        ]
        if not outcome.allowed and all(r.result in (PASS, WARN) for r in out):
            # denied as a whole (a custom rule, a refused namespace policy, an unreadable object)
            out.append(result(None, SOURCE, "object", FAIL, outcome.reason))
        return out

    def _review(self, listed: Listed, uid: str) -> tuple[Outcome | None, str, dict[str, str]]:
        """The serving Reviewer's outcome for the stored object (None when it failed: the message
        says why), and the images whose trust or signatures could not be checked (reference -> why)."""
        unavailable: dict[str, str] = {}
        for capture in self.captures:
            capture.local.seen = unavailable
        try:
            _response, outcome = self.reviewer.review(review_of(listed, f"audit-{uid or id(listed.obj)}"))
            return outcome, "", unavailable
        except Exception as exc:  # noqa: BLE001 - review() answers everything; this is a last guard
            meta = listed.obj.get("metadata") or {}
            log.exception(
                "audit of %s %s/%s failed", listed.kind.kind, meta.get("namespace"), meta.get("name")
            )
            return None, f"internal error: {exc.__class__.__name__}: {exc}", unavailable
        finally:
            for capture in self.captures:
                capture.local.seen = None


def image_verdict(image: dict, unavailable: str | None) -> tuple[str, str]:
    """(result, message) of one image of the decision: allowed (pass, or warn with its warnings),
    not checkable (error: why the trust or signatures could not be read), else fail (the reasons)."""
    if image.get("allowed") is True:
        warnings = [str(w) for w in image.get("warnings") or []]
        return (WARN, "; ".join(warnings)) if warnings else (PASS, "allowed")
    if unavailable is not None:
        return ERROR, "could not be checked: " + unavailable
    reasons = [str(r) for r in image.get("reasons") or []]
    return FAIL, "; ".join(reasons) or "denied by policy"


def run_audit(
    api: PagedApi,  # the runtime's KubeApi through app.audit.scan.paged
    auditor: Auditor,
    *,
    namespace: str | None = None,
    list_bucket: TokenBucket | None = None,
    object_bucket: TokenBucket | None = None,
    page_size: int = DEFAULT_PAGE_SIZE,
    on_object: Callable[[], None] | None = None,
) -> AuditRun:
    """List every workload (paged, `list_bucket` paces the pages) and decide each object
    (`object_bucket` paces the decisions). A listing that fails is recorded in ``list_errors``:
    its kind's objects are missing from the results, and the reports say so (reports.py)."""
    run = AuditRun(started=auditor.clock(), namespace=namespace)
    cpu, wall = time.process_time(), time.monotonic()
    for kind in WORKLOADS:
        try:
            for obj in list_kind(api, kind, namespace, list_bucket, page_size):
                if object_bucket is not None and not object_bucket.take():
                    raise AuditStopped("the audit was stopped")
                run.results.extend(auditor.decide(Listed(kind, obj)))
                run.objects += 1
                if on_object is not None:
                    on_object()
        except ListFailed as exc:
            log.error("audit: %s", exc)
            run.list_errors.append(str(exc))
            run.failed_kinds.append(f"{kind.api_version} {kind.kind}")
    run.seconds = time.monotonic() - wall
    run.cpu_seconds = time.process_time() - cpu
    return run
