"""Turn a decision into an AdmissionResponse with its JSONPatch (pure functions over dicts)."""

from __future__ import annotations

import base64
import json

from app.images import InvalidImageReference, is_sha256_digest, parse_image

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
        response["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
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


def pin_patch(decision_images: list[dict]) -> list[dict]:
    """JSONPatch replacing each admitted image by registry/repo:tag@<pin>.

    No operation for images already pinned to that digest, so the webhook is idempotent under
    reinvocation. A pin that is not a sha256 digest is an error (raised), never silently skipped.
    """
    ops = []
    for item in decision_images:
        pin = item.get("pin")
        if not item.get("allowed") or not item.get("mutate") or pin is None:
            continue
        if not is_sha256_digest(pin):
            raise ValueError(f"decision pins {item.get('image')!r} to {pin!r}, which is not a sha256 digest")
        try:
            ref = parse_image(item["image"])
        except InvalidImageReference as exc:
            raise ValueError(f"decision admits an invalid image: {exc}") from None
        if ref.digest == pin:
            continue
        ops.append({"op": "replace", "path": item["path"], "value": ref.pinned(pin)})
    return ops
