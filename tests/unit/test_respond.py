import base64
import json

import pytest

from app.admission.respond import allow, deny, pin_patch

D1 = "sha256:" + "1" * 64


def test_allow_with_patch_is_base64_jsonpatch():
    out = allow("u1", ["w"], [{"op": "replace", "path": "/spec/containers/0/image", "value": "x"}])
    r = out["response"]
    assert out["apiVersion"] == "admission.k8s.io/v1" and out["kind"] == "AdmissionReview"
    assert r["uid"] == "u1" and r["allowed"] is True and r["warnings"] == ["w"]
    assert r["patchType"] == "JSONPatch"
    assert json.loads(base64.b64decode(r["patch"]))[0]["value"] == "x"


def test_deny_carries_a_message_and_code():
    r = deny("u2", "no")["response"]
    assert r["allowed"] is False and r["status"]["message"] == "no" and r["status"]["code"] == 403
    assert "patch" not in r


def item(image, pin=D1, allowed=True, mutate=True, path="/spec/containers/0/image"):
    return {"image": image, "pin": pin, "allowed": allowed, "mutate": mutate, "path": path}


def test_pin_keeps_tag_and_skips_already_pinned_images():
    ops = pin_patch([item("nginx:1.25"), item("quay.io/a/b:1@" + D1, path="/spec/containers/1/image")])
    assert ops == [{"op": "replace", "path": "/spec/containers/0/image", "value": "docker.io/library/nginx:1.25@" + D1}]


def test_no_patch_when_mutate_is_off_or_no_pin():
    assert pin_patch([item("nginx", mutate=False), item("nginx", pin=None)]) == []


def test_a_pin_that_is_not_sha256_is_an_error():
    with pytest.raises(ValueError):
        pin_patch([item("nginx", pin="sha256:abc")])


def test_image_volume_is_pinned_at_its_reference_path():
    path = "/spec/template/spec/volumes/2/image/reference"
    ops = pin_patch([item("quay.io/org/model:v1", path=path)])
    assert ops == [{"op": "replace", "path": path, "value": "quay.io/org/model:v1@" + D1}]
