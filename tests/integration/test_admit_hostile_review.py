"""Hostile AdmissionReviews through the real `ostiary serve` (its own OPA): each gets a clear 4xx or
an AdmissionResponse denial naming the field, never a 500 or a traceback, and the server keeps
answering afterwards."""

from __future__ import annotations

import copy
import json

import pytest
import requests

from .test_server import EXAMPLES, example, served  # noqa: F401 (fixture)

HEADERS = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def server():
    from .test_server import Served

    s = Served("--policy-dir", str(EXAMPLES / "policies"))
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def post(server, raw: bytes) -> requests.Response:
    return requests.post(server.base + "/admit", data=raw, headers=HEADERS, timeout=30)


def mirror() -> dict:
    return copy.deepcopy(example("deployment-mirror.json"))


def pod_spec(review: dict) -> dict:
    return review["request"]["object"]["spec"]["template"]["spec"]


def assert_healthy(server):
    r = server.admit(example("deployment-mirror.json"))
    assert r.status_code == 200 and r.json()["response"]["allowed"] is True


def test_duplicated_key_hiding_an_image_is_refused(server):
    text = json.dumps(mirror())
    image = pod_spec(mirror())["containers"][0]["image"]
    # the last "image" wins for Python's json, the first for some other parsers: refuse both readings
    raw = text.replace(f'"image": "{image}"', f'"image": "{image}", "image": "evil.io/x:1"', 1).encode()
    assert raw != text.encode()
    r = post(server, raw)
    assert r.status_code == 400, r.text
    assert "'image' appears more than once" in r.json()["error"]
    assert "/request/object/spec/template/spec/containers/0" in r.json()["error"]
    assert_healthy(server)


@pytest.mark.parametrize(
    "raw, status, words",
    [
        (b"[" * 200_000 + b"]" * 200_000, 400, "nested deeper"),
        (
            b'{"request": {"uid": "u", "object": ' + b'{"a":' * 150 + b"1" + b"}" * 150 + b"}}",
            400,
            "nested deeper",
        ),
        (
            b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": NaN}}',
            400,
            "NaN",
        ),
        (b'{"request": {"uid": ' + b"1" * 10_000 + b"}}", 400, "not JSON Ostiary can read"),
        (b'{"request": "\xff\xfe"}', 400, "not UTF-8"),
        (b'{"request": "x"}', 400, "AdmissionReview"),
        (b"{" + b" " * (8 * 1024 * 1024) + b"}", 413, "larger than"),
    ],
)
def test_malformed_bodies_get_a_clear_4xx(server, raw, status, words):
    r = post(server, raw)
    assert r.status_code == status, r.text[:300]
    assert words in r.json()["error"], r.json()
    assert "Traceback" not in r.text
    assert_healthy(server)


def _containers_as_dict(review):
    pod_spec(review)["containers"] = {"app": {"name": "app", "image": "evil.io/x:1"}}
    return "/spec/template/spec/containers is not a list"


def _image_as_number(review):
    pod_spec(review)["containers"][0]["image"] = 42
    return "/spec/template/spec/containers/0/image is not a string"


def _null_spec(review):
    review["request"]["object"]["spec"] = None
    return "/spec is missing"


def _volume_image_as_string(review):
    pod_spec(review)["volumes"] = [{"name": "m", "image": "evil.io/x:1"}]
    return "/spec/template/spec/volumes/0/image is not an object"


def _operation_as_list(review):
    review["request"]["operation"] = ["CREATE"]
    return "request.operation"


def _object_kind_mismatch(review):
    review["request"]["object"]["kind"] = "ConfigMap"
    return "request.object.kind"


@pytest.mark.parametrize(
    "confuse",
    [
        _containers_as_dict,
        _image_as_number,
        _null_spec,
        _volume_image_as_string,
        _operation_as_list,
        _object_kind_mismatch,
    ],
)
def test_type_confusion_is_denied_naming_the_field(server, confuse):
    review = mirror()
    field = confuse(review)
    r = server.admit(review)
    assert r.status_code == 200, r.text[:300]
    response = r.json()["response"]
    assert response["uid"] == review["request"]["uid"]
    assert response["allowed"] is False
    assert field in response["status"]["message"] and "internal error" not in response["status"]["message"]


@pytest.mark.parametrize(
    "raw, words",
    [
        (b"[" * 200_000 + b"]" * 200_000, "nested deeper"),
        (b'{"request": {"uid": "a", "uid": "b"}}', "more than once"),
    ],
)
def test_the_policy_validating_webhook_decodes_as_strictly(server, raw, words):
    r = requests.post(server.base + "/validate", data=raw, headers=HEADERS, timeout=30)
    assert r.status_code == 400 and words in r.json()["error"], r.text[:300]
