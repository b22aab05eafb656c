"""Hostile AdmissionReviews: strict body decoding, type confusion, and property tests showing the
reviewer never crashes and never allows an image it did not see (with a recording stand-in for OPA,
so every image that reached the policy is known)."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.admission.decode import MAX_DEPTH, parse_review, request_uid
from app.admission.extract import BadRequest, image_sites
from app.admission.review import Reviewer
from app.images import InvalidImageReference, parse_image

KINDS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


# ---- strict decoding -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, words",
    [
        (b'{"request": {"uid": "u", "uid": "v"}}', ["'uid'", "/request", "more than once"]),
        (
            b'{"request": {"object": {"spec": {"containers": [{"name": "a", "image": "good", "image": "evil"}]}}}}',
            ["'image'", "/request/object/spec/containers/0"],
        ),
        (b'{"a": 1, "a": 1}', ["'a'", "(top level)"]),
        (b"[" * 100_000 + b"]" * 100_000, ["nested deeper"]),
        (b'{"a": ' + b"[" * (MAX_DEPTH + 5) + b"]" * (MAX_DEPTH + 5) + b"}", ["nested deeper", "/a/0/0"]),
        (b'{"a": NaN}', ["NaN is not JSON"]),
        (b'{"a": -Infinity}', ["-Infinity is not JSON"]),
        (b'{"a": ' + b"9" * 5000 + b"}", ["not JSON Ostiary can read"]),
        (b'{"a": "\xff"}', ["not UTF-8"]),
        (b"not json", ["not JSON", "line 1 column 1"]),
        (b"", ["not JSON"]),
    ],
)
def test_bodies_are_decoded_strictly_naming_the_problem(raw, words):
    with pytest.raises(BadRequest) as err:
        parse_review(raw)
    for word in words:
        assert word in str(err.value), str(err.value)


def test_a_normal_review_decodes_unchanged():
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "request": {"uid": "u", "object": {"a/b~c": [1, 2.5, None, True]}},
    }
    assert parse_review(json.dumps(body).encode()) == body
    assert request_uid(body) == "u"
    assert request_uid({"request": "x"}) is None and request_uid([1]) is None


# ---- the reviewer with a recording stand-in for OPA -----------------------------------------


class RecordingOpa:
    """Allows every image it is shown, and remembers which those were."""

    def __init__(self):
        self.seen: list[str] = []

    def query(self, path, opa_input, deadline):
        json.dumps(opa_input, allow_nan=False)  # what the real client sends must be plain JSON
        images = opa_input["images"]
        if path.endswith("plan"):
            return {"images": [{"id": i["id"], "policy": None, "requirements": None} for i in images]}
        self.seen.extend(i["image"] for i in images)
        return {
            "allowed": True,
            "denials": [],
            "warnings": [],
            "images": [
                {
                    "id": i["id"],
                    "image": i["image"],
                    "path": i["path"],
                    "allowed": True,
                    "reasons": [],
                    "warnings": [],
                    "pin": None,
                    "mutate": False,
                    "policy": None,
                }
                for i in images
            ],
        }


class NoStore:
    def get_secret(self, namespace, name):
        return None

    def get_service_account(self, namespace, name):
        return None


def run(request: dict) -> tuple[dict, RecordingOpa]:
    opa = RecordingOpa()
    body = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {"uid": "u1", **request},
    }
    answer, _ = Reviewer(opa, NoStore()).review(body)
    return answer["response"], opa


def wrap(kind: str, spec) -> dict:
    obj: dict = {}
    node = obj
    path = KINDS[kind]
    for key in path[:-1]:
        node[key] = {}
        node = node[key]
    node[path[-1]] = spec
    return obj


@pytest.mark.parametrize(
    "request_fields, words",
    [
        (
            {
                "operation": "CREATE",
                "kind": {"kind": "Pod"},
                "object": {"spec": {"containers": {"a": {"image": "x"}}}},
            },
            "/spec/containers is not a list",
        ),
        (
            {
                "operation": "CREATE",
                "kind": {"kind": "Pod"},
                "object": {"spec": {"containers": [{"image": 5}]}},
            },
            "/spec/containers/0/image is not a string",
        ),
        ({"operation": "CREATE", "kind": {"kind": "Pod"}, "object": {"spec": None}}, "/spec is missing"),
        ({"operation": "CREATE", "kind": {"kind": "Pod"}, "object": None}, "request.object is missing"),
        ({"operation": "CREATE", "kind": {"kind": "Pod"}, "object": []}, "request.object is missing"),
        ({"operation": "CREATE", "kind": "Pod", "object": {"spec": {}}}, "request.kind.kind"),
        ({"operation": "CREATE", "kind": {"kind": 7}, "object": {"spec": {}}}, "request.kind.kind"),
        ({"operation": ["CREATE"], "kind": {"kind": "Pod"}, "object": {"spec": {}}}, "request.operation"),
        ({"operation": "create", "kind": {"kind": "Pod"}, "object": {"spec": {}}}, "request.operation"),
        ({"operation": None, "kind": {"kind": "Pod"}, "object": {"spec": {}}}, "request.operation"),
        (
            {"operation": "CREATE", "kind": {"kind": "Pod"}, "object": {"kind": "ConfigMap", "spec": {}}},
            "request.object.kind",
        ),
        (
            {"operation": "CREATE", "kind": {"kind": "Pod"}, "object": {"metadata": "x", "spec": {}}},
            "request.object.metadata is not an object",
        ),
        (
            {"operation": "CREATE", "kind": {"kind": "Pod"}, "namespace": ["a"], "object": {"spec": {}}},
            "request.namespace is not a string",
        ),
        (
            {"operation": "UPDATE", "kind": {"kind": "CronJob"}, "object": {"spec": {"jobTemplate": []}}},
            "/spec/jobTemplate is not an object",
        ),
    ],
)
def test_type_confusion_is_a_denial_naming_the_field(request_fields, words):
    response, opa = run(request_fields)
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert words in message and "internal error" not in message, message
    assert opa.seen == []


def test_delete_and_connect_are_not_checked_but_other_operations_are_refused():
    assert run({"operation": "DELETE", "kind": {"kind": "Pod"}, "object": None})[0]["allowed"] is True
    assert run({"operation": "PATCH", "kind": {"kind": "Pod"}, "object": {"spec": {}}})[0]["allowed"] is False


# ---- property tests --------------------------------------------------------------------------

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
json_value = st.recursive(
    json_leaf,
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=5), c, max_size=3)),
    max_leaves=8,
)
image_value = st.one_of(
    st.sampled_from(
        ["nginx", "quay.io/a/b:1", "REGISTRY/app:v1", "", " ", "Bad Image", "x@sha256:1", "a" * 64]
    ),
    st.sampled_from(["nginx:1", "ghcr.io/o/t"]),
    st.text(max_size=20),
    json_value,
)
# Well-formed shapes are drawn more often than junk, so allows with images are common (about a
# third of the reviews), not only denials of malformed ones.
_container = st.fixed_dictionaries(
    {"image": image_value}, optional={"name": st.one_of(st.text(max_size=5), json_leaf)}
)
container = st.one_of(
    _container, _container, _container, st.fixed_dictionaries({}), st.text(min_size=1, max_size=5), json_value
)
container_list = st.one_of(
    st.lists(container, max_size=3),
    st.lists(container, max_size=3),
    st.none(),
    st.dictionaries(st.text(max_size=3), container, max_size=2),
    json_value,
)
_volume = st.fixed_dictionaries(
    {"name": st.text(max_size=5)},
    optional={
        "image": st.one_of(
            st.fixed_dictionaries({}, optional={"reference": image_value}),
            st.fixed_dictionaries({"reference": image_value}),
            st.text(min_size=1, max_size=5),
            json_value,
        ),
        "emptyDir": st.just({}),
    },
)
volume = st.one_of(_volume, _volume, json_value)
_pod_spec = st.fixed_dictionaries(
    {},
    optional={
        "containers": container_list,
        "initContainers": container_list,
        "ephemeralContainers": container_list,
        "volumes": st.one_of(st.lists(volume, max_size=3), st.lists(volume, max_size=3), json_value),
    },
)
_image_text = st.one_of(
    st.sampled_from(["nginx", "quay.io/a/b:1", "REGISTRY/app:v1", "", "Bad Image"]), st.text(max_size=12)
)
_clean_list = st.lists(st.fixed_dictionaries({"name": st.text(max_size=4), "image": _image_text}), max_size=3)
_clean_spec = st.fixed_dictionaries(
    {},
    optional={
        "containers": _clean_list,
        "initContainers": _clean_list,
        "ephemeralContainers": _clean_list,
        "volumes": st.lists(
            st.fixed_dictionaries(
                {"name": st.text(max_size=4), "image": st.fixed_dictionaries({"reference": _image_text})}
            ),
            max_size=2,
        ),
    },
)
pod_spec = st.one_of(
    _clean_spec,
    _clean_spec,
    _pod_spec,
    _pod_spec,
    st.fixed_dictionaries(
        {},
        optional={
            "containers": container_list,
            "initContainers": container_list,
            "ephemeralContainers": container_list,
            "volumes": st.one_of(st.lists(volume, max_size=3), json_value),
            "imagePullSecrets": json_value,
            "serviceAccountName": json_value,
        },
    ),
    json_value,
)


def lenient_images(obj, kind: str) -> list[str]:
    """Every value at an image field of the pod spec, found however the types are confused (dicts
    taken for lists, any value for an image): what Ostiary must have seen if it allows."""
    node = obj
    for key in KINDS[kind]:
        if not isinstance(node, dict):
            return []
        node = node.get(key)
    if not isinstance(node, dict):
        return []

    def items(value):
        return list(value.values()) if isinstance(value, dict) else value if isinstance(value, list) else []

    def present(value) -> bool:
        return value is not None and not (isinstance(value, str) and not value.strip())

    found = []
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for c in items(node.get(key)):
            image = c.get("image") if isinstance(c, dict) else c  # a bare value may be an image too
            if present(image):
                found.append(image)
    for v in items(node.get("volumes")):
        source = v.get("image") if isinstance(v, dict) else v
        ref = source.get("reference") if isinstance(source, dict) else source
        if present(ref):
            found.append(ref)
    return found


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(KINDS)), spec=pod_spec, break_wrapper=st.booleans(), junk=json_value)
def test_extractor_never_crashes_and_finds_every_image(kind, spec, break_wrapper, junk):
    obj = wrap(kind, spec)
    if break_wrapper and kind != "Pod":
        obj["spec"]["template" if "template" in obj["spec"] else "jobTemplate"] = junk
    try:
        sites = image_sites(obj, kind)
    except BadRequest:
        return
    assert sorted(map(repr, (s.image for s in sites))) == sorted(map(repr, lenient_images(obj, kind)))
    for site in sites:
        assert isinstance(site.image, str) and site.image.strip()
        site.as_input()  # an invalid reference is data for the policy, never an exception


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from([*sorted(KINDS), "ConfigMap"]),
    operation=st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT", "create", "", None, 1]),
    spec=pod_spec,
    metadata=st.one_of(
        st.none(),
        st.fixed_dictionaries({}, optional={"namespace": json_value, "name": json_value}),
        json_value,
    ),
    namespace=st.one_of(st.none(), st.text(max_size=5), json_leaf),
    object_kind=st.one_of(st.none(), st.sampled_from(sorted(KINDS)), json_leaf),
)
@example(
    kind="Pod",
    operation="CREATE",
    spec={"volumes": [{"name": "v", "image": "evil.io/x"}]},
    metadata=None,
    namespace=None,
    object_kind=None,
)
@example(
    kind="Job",
    operation="UPDATE",
    spec={"containers": ["evil.io/x"]},
    metadata=None,
    namespace=None,
    object_kind=None,
)
@example(
    kind="Pod",
    operation="CREATE",
    spec={"containers": {"c": {"image": "evil.io/x"}}},
    metadata=None,
    namespace=None,
    object_kind=None,
)
def test_reviewer_never_crashes_and_never_allows_an_unseen_image(
    kind, operation, spec, metadata, namespace, object_kind
):
    obj = wrap(kind, spec) if kind in KINDS else {"data": {"image": "evil.io/x"}}
    obj["metadata"] = metadata
    if object_kind is not None:
        obj["kind"] = object_kind
    response, opa = run(
        {"operation": operation, "kind": {"kind": kind}, "namespace": namespace, "object": obj}
    )
    assert response["uid"] == "u1" and isinstance(response["allowed"], bool)
    if not response["allowed"]:
        assert "internal error" not in response["status"]["message"], response["status"]["message"]
        return
    if operation in ("DELETE", "CONNECT") or kind not in KINDS:
        return
    assert operation in ("CREATE", "UPDATE")
    for image in lenient_images(obj, kind):
        assert image in opa.seen, (image, opa.seen)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(st.text(max_size=300), json_value, st.binary(max_size=20)))
def test_reference_parser_raises_only_its_own_error(value):
    try:
        ref = parse_image(value)  # type: ignore[arg-type]
    except InvalidImageReference:
        return
    assert ref.registry and ref.repository and (ref.tag or ref.digest)
    assert parse_image(ref.normalized).normalized == ref.normalized  # normalizing is idempotent
    assert parse_image(ref.pinned("sha256:" + "e" * 64)).registry == ref.registry
