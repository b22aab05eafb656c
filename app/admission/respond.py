"""Turn a decision into an AdmissionResponse with its JSONPatch (pure functions over dicts)."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

from app import jsonio
from app.admission.extract import ImageSite
from app.images import is_sha256_digest

API_VERSION = "admission.k8s.io/v1"
MAX_MESSAGE = 8000


def review_response(uid: str, response: dict) -> dict:
    return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": {"uid": uid, **response}}


def allow(uid: str, warnings: list[str] | None = None, patch: list[dict] | None = None) -> dict:
    response: dict = {"allowed": True}
    if warnings:
        response["warnings"] = warnings
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(jsonio.dumps(patch)).decode()
    return review_response(uid, response)


def deny(uid: str, message: str, warnings: list[str] | None = None, code: int = 403) -> dict:
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 20] + " … (truncated)"
    response: dict = {
        "allowed": False,
        "status": {"status": "Failure", "code": code, "reason": "Forbidden", "message": message},
    }
    if warnings:
        response["warnings"] = warnings
    return review_response(uid, response)


def pin_patch(decision_images: list[dict], sites: Sequence[ImageSite]) -> list[dict]:
    """JSONPatch replacing each admitted image by registry/repo:tag@<pin>.

    Each decided image is the request's own site of the same id (its path and text must agree:
    a decision about another image is an error); the reference pinned is the one parsed at
    extraction. No operation for images already pinned to that digest, so the webhook is
    idempotent under reinvocation. A pin that is not a sha256 digest is an error (raised), never
    silently skipped.
    """
    by_id = {site.id: site for site in sites}
    ops = []
    for item in decision_images:
        pin = item.get("pin")
        if not item.get("allowed") or not item.get("mutate") or pin is None:
            continue
        if not is_sha256_digest(pin):
            raise ValueError(f"decision pins {item.get('image')!r} to {pin!r}, which is not a sha256 digest")
        image_id = item.get("id")
        site = by_id.get(image_id) if type(image_id) is int else None
        if site is None or site.path != item.get("path") or site.image != item.get("image"):
            raise ValueError(
                f"decision pins {item.get('image')!r} at {item.get('path')!r}, which is not an image of the request"
            )
        if site.ref is None:
            raise ValueError(f"decision admits an invalid image: {site.ref_error}")
        if site.ref.digest == pin:
            continue
        ops.append({"op": "replace", "path": site.path, "value": site.ref.pinned(pin)})
    return ops


ORIGINAL_IMAGES_ANNOTATION = "ostiary.dev/original-images"
MAX_ORIGINALS = 64 * 1024  # the API server allows 256 KiB of annotations in all; leave room


def _site_keys(sites: Sequence[ImageSite]) -> dict[str, str]:
    """JSON pointer of each image -> its key in the annotation: `containers/app`, `volumes/model`
    (names are unique per pod spec), or the pointer itself when a name is blank or repeated."""
    keys = {s.path: f"{s.container_kind}/{s.container}" for s in sites}
    counts: dict[str, int] = {}
    for key in keys.values():
        counts[key] = counts.get(key, 0) + 1
    return {p: (k if counts[k] == 1 and not k.endswith("/") else p) for p, k in keys.items()}


def _existing_originals(obj: dict) -> dict[str, str]:
    annotations = (obj.get("metadata") or {}).get("annotations")
    raw = annotations.get(ORIGINAL_IMAGES_ANNOTATION) if isinstance(annotations, dict) else None
    try:
        data = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def original_images_patch(
    obj: dict, sites: Sequence[ImageSite], pin_ops: list[dict]
) -> tuple[list[dict], str | None]:
    """The JSONPatch op recording, on the object's own metadata (a Deployment's, not its pod
    template's), the reference as written of every image this admission pins, so users and
    deploy tools can see what was asked for. Entries an earlier admission wrote are kept while
    their container or volume still exists. Returns (ops, warning); no pins, no op."""
    if not pin_ops:
        return [], None
    keys = _site_keys(sites)
    written = {s.path: s.image for s in sites}
    current = set(keys.values())
    originals = {k: v for k, v in _existing_originals(obj).items() if k in current}
    for op in pin_ops:
        originals[keys.get(op["path"], op["path"])] = written.get(op["path"], "")
    value = jsonio.dumps(originals, sort_keys=True).decode()
    if not value.isascii():  # as json.dumps writes it: non-ASCII escaped
        value = json.dumps(originals, sort_keys=True, separators=(",", ":"))
    if len(value) > MAX_ORIGINALS:
        return [], (
            f"Ostiary did not record the original images in {ORIGINAL_IMAGES_ANNOTATION}: "
            f"{len(value)} bytes is more than {MAX_ORIGINALS}"
        )
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return [
            {"op": "add", "path": "/metadata", "value": {"annotations": {ORIGINAL_IMAGES_ANNOTATION: value}}}
        ], None
    if not isinstance(metadata.get("annotations"), dict):
        return [
            {"op": "add", "path": "/metadata/annotations", "value": {ORIGINAL_IMAGES_ANNOTATION: value}}
        ], None
    key = ORIGINAL_IMAGES_ANNOTATION.replace("~", "~0").replace("/", "~1")
    return [{"op": "add", "path": f"/metadata/annotations/{key}", "value": value}], None
