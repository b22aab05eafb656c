"""Image volumes through `ostiary serve` (real subprocess, its own OPA) against the world's real
notary-server and registry: an unlisted or unsigned volume image is denied, a signed one is pinned
at its own JSON pointer (`.../volumes/N/image/reference`) exactly like a container."""

from __future__ import annotations

import json

import pytest

from tests.support.serve import deployment_review, message, patch_of
from tests.world.test_admit_world import ostiary  # noqa: F401 (fixture)

pytestmark = pytest.mark.world


def with_volume(container_image: str, volume_image: str) -> dict:
    body = deployment_review(container_image)
    spec = body["request"]["object"]["spec"]["template"]["spec"]
    spec["volumes"] = [
        {"name": "scratch", "emptyDir": {}},
        {"name": "model", "image": {"reference": volume_image, "pullPolicy": "IfNotPresent"}},
    ]
    return body


def answer(ostiary, body: dict) -> dict:  # noqa: F811
    response = ostiary.admit(body)["response"]
    assert response["uid"] == body["request"]["uid"]
    return response


def test_unlisted_volume_image_is_denied(ostiary, world):  # noqa: F811
    response = answer(ostiary, with_volume(world["signed"].reference, "evil.io/model:1"))
    assert response["allowed"] is False
    assert "evil.io/model:1" in message(response) and "volumes/1/image/reference" in message(response)
    assert "patch" not in response


def test_unsigned_volume_image_is_denied(ostiary, world):  # noqa: F811
    response = answer(ostiary, with_volume(world["signed"].reference, world["unsigned"].reference))
    assert response["allowed"] is False
    assert world["unsigned"].reference in message(response), message(response)


def test_signed_volume_image_is_pinned_in_place(ostiary, world):  # noqa: F811
    signed, other = world["signed"], world["signer-pem"]
    response = answer(ostiary, with_volume(signed.reference, other.reference))
    assert response["allowed"] is True, message(response)
    ops = {
        op["path"]: op["value"] for op in patch_of(response) if op["path"].endswith(("/image", "/reference"))
    }
    assert ops == {
        "/spec/template/spec/containers/0/image": signed.pinned,
        "/spec/template/spec/volumes/1/image/reference": other.pinned,
    }
    (record,) = [op for op in patch_of(response) if op["path"].startswith("/metadata")]
    assert json.loads(record["value"]["ostiary.dev/original-images"]) == {
        "containers/c0": signed.reference,
        "volumes/model": other.reference,
    }
