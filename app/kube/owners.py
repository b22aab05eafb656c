"""Recognising objects that a workload controller created from a template Ostiary already admitted.

A ReplicaSet made by a Deployment, or a Pod made by a ReplicaSet, carries the images of its owner's
pod template; the owner itself went through admission (and pinning) when it was created or changed.
Fetching the child's trust data again costs a Notary round trip per image for nothing, so such a
child's images may be answered from the verified trust cache past its freshness time (up to 15
minutes after the last fetch, never past the signed expiry; TrustRequest.owner_proved) — when, and only when, all of this holds:

- it has a controller ``ownerReference`` of a kind listed in ``OWNER_KINDS`` (same API group);
- that owner exists in the child's namespace **now**, read from the API, with the same ``uid`` (a
  reference to a deleted, recreated or made-up owner does not count);
- every container of the child (by kind — ``containers``, ``initContainers`` — and by name) is in the
  owner's pod template with the same image, compared on the normalized reference, so a digest the
  owner was pinned to must be in the child too. Ephemeral containers are never in a template, so a
  child carrying any never qualifies.

It never spares the decision: the plan, the decision and the custom modules run on the child itself
(app/admission/review.py). The ownerReference is written by whoever creates the object, so it is a
claim to check, not a fact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from app.admission.extract import BadRequest, image_sites
from app.images import parse_image
from app.kube.client import KubeApi, KubeError, object_path
from app.lru import TTLCache, json_size
from app.workloads import WORKLOADS, WorkloadKind

log = logging.getLogger(__name__)


# (API group, kind) -> the workload kinds that have a pod template, so can own an object (app/workloads.py)
OWNER_KINDS: dict[tuple[str, str], WorkloadKind] = {
    (w.group, w.kind): w for w in WORKLOADS if w.template_path is not None
}

# What a pod template may carry that names an image; ephemeral containers are not allowed in templates.
TEMPLATE_CONTAINER_KINDS = ("containers", "initContainers", "volumes")

ImageTriple = tuple[str, str, str]  # (container kind, container name, image as written)


def api_group(api_version: str) -> str:
    return api_version.rsplit("/", 1)[0] if "/" in api_version else ""


def controller_reference(obj: dict) -> dict | None:
    """The ownerReference with ``controller: true`` (the API allows at most one), or None."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            return ref
    return None


def pod_template(owner: dict, kind: WorkloadKind) -> dict | None:
    node: object = owner
    for key in kind.template_path or ():
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, dict) else None


def template_images(template: dict) -> dict[tuple[str, str], str]:
    """``{(container kind, name): image}`` of a pod template (containers, init containers and
    image volumes), read by the admission extractor itself; a malformed template names none."""
    try:
        sites = image_sites({"spec": template.get("spec")}, "Pod")
    except BadRequest:
        return {}
    return {
        (s.container_kind, s.container): s.image
        for s in sites
        if s.container_kind in TEMPLATE_CONTAINER_KINDS and s.container
    }


def default_normalize(image: str) -> str | None:
    """The normalized reference (``docker.io/library/nginx:1.25@sha256:…``), None when invalid."""
    try:
        return parse_image(image).normalized
    except ValueError:  # InvalidImageReference
        return None


def image_mismatch(
    images: Sequence[ImageTriple],
    owner_images: dict[tuple[str, str], str],
    normalize: Callable[[str], str | None] = default_normalize,
) -> str | None:
    """Why the child's images are not the owner template's (a message), or None when they all are."""
    if not images:
        return "the object has no images"
    for container_kind, name, image in images:
        if container_kind not in TEMPLATE_CONTAINER_KINDS:
            return f"{container_kind} {name!r} cannot come from a pod template"
        if (container_kind, name) not in owner_images:
            return f"{container_kind} {name!r} is not in the owner's pod template"
        mine, theirs = normalize(image), normalize(owner_images[(container_kind, name)])
        if mine is None or theirs is None or mine != theirs:
            return f"{container_kind} {name!r} image {image!r} differs from the owner's template"
    return None


class OwnerVerifier:
    """``approved_by_owner(obj, namespace, images) -> reason | None`` against the live API.

    Owners are cached for ``ttl`` seconds (a ReplicaSet scaling to 50 pods is read once); when a
    cached owner does not approve, it is read again before giving up, so the cache can only save a
    read, never turn a fresh "yes" into a "no". A cached "yes" can be at most ``ttl`` old.
    """

    def __init__(
        self,
        api: KubeApi,
        ttl: float = 2.0,
        normalize: Callable[[str], str | None] = default_normalize,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._api = api
        # a request names the owner read: bounded in bytes (as JSON), not only in entries
        self._cache: TTLCache[tuple[str, str, str], dict | None] = TTLCache(
            ttl, 256, clock, max_bytes=16 * 1024 * 1024, size=json_size
        )
        self._normalize = normalize

    def approved_by_owner(self, obj: dict, namespace: str, images: list[ImageTriple]) -> str | None:
        ref = controller_reference(obj)
        if ref is None or not namespace:
            return None
        kind_name = ref.get("kind") or ""
        owner_kind = OWNER_KINDS.get((api_group(ref.get("apiVersion") or ""), kind_name))
        name, uid = ref.get("name") or "", ref.get("uid") or ""
        if owner_kind is None or not name or not uid:
            return None
        key = (owner_kind.plural, namespace, name)
        hit, cached = self._cache.get(key)
        if hit and cached is not None:
            reason = self._check(cached, kind_name, owner_kind, namespace, name, uid, images)
            if reason:
                return reason
        try:
            owner = self._api.get(object_path(owner_kind.api_version, owner_kind.plural, namespace, name))
        except KubeError as exc:
            log.warning("owner check: reading %s %s/%s failed: %s", kind_name, namespace, name, exc)
            return None
        self._cache.put(key, owner)
        if owner is None:
            log.info("owner check: %s %s/%s does not exist; verifying in full", kind_name, namespace, name)
            return None
        return self._check(owner, kind_name, owner_kind, namespace, name, uid, images)

    def _check(
        self,
        owner: dict,
        kind_name: str,
        owner_kind: WorkloadKind,
        namespace: str,
        name: str,
        uid: str,
        images: list[ImageTriple],
    ) -> str | None:
        meta = owner.get("metadata") or {}
        if meta.get("uid") != uid:
            log.info(
                "owner check: %s %s/%s has uid %s, the reference says %s; verifying in full",
                kind_name,
                namespace,
                name,
                meta.get("uid"),
                uid,
            )
            return None
        template = pod_template(owner, owner_kind)
        if template is None:
            return None
        mismatch = image_mismatch(images, template_images(template), self._normalize)
        if mismatch:
            log.info("owner check: %s %s/%s: %s; verifying in full", kind_name, namespace, name, mismatch)
            return None
        return (
            f"created by {kind_name} {namespace}/{name} (uid {uid}), whose pod template has the same images"
        )
