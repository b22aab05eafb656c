import base64
import json

import jsonpatch
import pytest

from app.admission.extract import ImageSite, image_sites
from app.admission.respond import ORIGINAL_IMAGES_ANNOTATION, allow, deny, original_images_patch, pin_patch

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


def item(image, pin=D1, allowed=True, mutate=True, path="/spec/containers/0/image", id=0):
    return {"id": id, "image": image, "pin": pin, "allowed": allowed, "mutate": mutate, "path": path}


def pins(*items):
    """pin_patch over decided items and the request's sites they are about (same id, path, text)."""
    sites = [ImageSite(i["id"], i["path"], "containers", f"c{i['id']}", i["image"]) for i in items]
    return pin_patch(list(items), sites)


def test_pin_keeps_tag_and_skips_already_pinned_images():
    ops = pins(item("nginx:1.25"), item("quay.io/a/b:1@" + D1, path="/spec/containers/1/image", id=1))
    assert ops == [
        {"op": "replace", "path": "/spec/containers/0/image", "value": "docker.io/library/nginx:1.25@" + D1}
    ]


def test_no_patch_when_mutate_is_off_or_no_pin():
    assert pins(item("nginx", mutate=False), item("nginx", pin=None, id=1, path="/p/1")) == []


def test_a_pin_that_is_not_sha256_is_an_error():
    with pytest.raises(ValueError):
        pins(item("nginx", pin="sha256:abc"))


def test_image_volume_is_pinned_at_its_reference_path():
    path = "/spec/template/spec/volumes/2/image/reference"
    ops = pins(item("quay.io/org/model:v1", path=path))
    assert ops == [{"op": "replace", "path": path, "value": "quay.io/org/model:v1@" + D1}]


@pytest.mark.parametrize(
    "decided",
    [
        item("nginx:1.25", id=7),  # an id the request does not have
        item("nginx:1.25", path="/metadata/name"),  # the request's id at another path
        item("evil.example/nginx:1.25"),  # the request's id and path, another image
        item("nginx:1.25", id="0"),  # not an integer id
    ],
)
def test_a_decision_can_only_pin_the_request_s_own_images(decided):
    """The patch is written from the request's sites, never from what the decision names: a
    decision item that is not one of them is an error (the request is denied), not a patch."""
    site = ImageSite(0, "/spec/containers/0/image", "containers", "c0", "nginx:1.25")
    with pytest.raises(ValueError, match="not an image of the request"):
        pin_patch([decided], [site])


def test_an_invalid_reference_is_never_pinned():
    site = ImageSite(0, "/spec/containers/0/image", "containers", "c0", "Not Valid")
    with pytest.raises(ValueError, match="invalid image"):
        pin_patch([item("Not Valid")], [site])


# ---- the original references, recorded on the object ---------------------------------------


def _deployment(annotations=None, metadata=True):
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "spec": {
            "template": {
                "metadata": {"labels": {"app": "w"}},
                "spec": {
                    "initContainers": [{"name": "init", "image": "busybox"}],
                    "containers": [
                        {"name": "app", "image": "quay.io/org/app:1.0"},
                        {"name": "side", "image": "nginx"},
                    ],
                    "volumes": [{"name": "model", "image": {"reference": "REGISTRY/model:v1"}}],
                },
            }
        },
    }
    if metadata:
        obj["metadata"] = {"name": "w", **({"annotations": annotations} if annotations is not None else {})}
    return obj


def _admit(obj, pinned_paths):
    sites = image_sites(obj, obj["kind"])
    by_path = {s.path: s for s in sites}
    ops = pin_patch([item(by_path[p].image, path=p, id=by_path[p].id) for p in pinned_paths], sites)
    record, warning = original_images_patch(obj, sites, ops)
    assert warning is None
    return jsonpatch.apply_patch(obj, ops + record), ops, record


@pytest.mark.parametrize("annotations, metadata", [(None, True), ({"team": "a"}, True), (None, False)])
def test_originals_are_annotated_on_the_object_itself_not_the_template(annotations, metadata):
    obj = _deployment(annotations, metadata)
    base = "/spec/template/spec"
    out, _, record = _admit(obj, [f"{base}/containers/0/image", f"{base}/volumes/0/image/reference"])
    assert len(record) == 1
    recorded = json.loads(out["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION])
    assert recorded == {"containers/app": "quay.io/org/app:1.0", "volumes/model": "REGISTRY/model:v1"}
    assert out["spec"]["template"]["spec"]["containers"][0]["image"] == "quay.io/org/app:1.0@" + D1
    assert out["spec"]["template"]["spec"]["volumes"][0]["image"]["reference"] == "REGISTRY/model:v1@" + D1
    assert "annotations" not in out["spec"]["template"]["metadata"]
    if annotations:
        assert out["metadata"]["annotations"]["team"] == "a"


def test_no_pin_no_annotation():
    assert original_images_patch(_deployment(), image_sites(_deployment(), "Deployment"), []) == ([], None)


def test_an_earlier_record_is_kept_for_existing_containers_and_dropped_for_gone_ones():
    earlier = json.dumps(
        {"containers/side": "nginx:1.25", "containers/gone": "x", "initContainers/init": "busybox:1"}
    )
    obj = _deployment({ORIGINAL_IMAGES_ANNOTATION: earlier})
    out, _, _ = _admit(obj, ["/spec/template/spec/initContainers/0/image"])
    assert json.loads(out["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION]) == {
        "containers/side": "nginx:1.25",
        "initContainers/init": "busybox",
    }


@pytest.mark.parametrize("earlier", ["not json", "[1]", '{"containers/app": 5}'])
def test_a_malformed_earlier_record_is_replaced(earlier):
    obj = _deployment({ORIGINAL_IMAGES_ANNOTATION: earlier})
    out, _, _ = _admit(obj, ["/spec/template/spec/containers/1/image"])
    assert json.loads(out["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION]) == {
        "containers/side": "nginx"
    }


def test_blank_or_repeated_names_fall_back_to_the_json_pointer():
    obj = {
        "kind": "Pod",
        "metadata": {},
        "spec": {"containers": [{"name": "a", "image": "x1"}, {"name": "a", "image": "x2"}, {"image": "x3"}]},
    }
    out, _, _ = _admit(obj, ["/spec/containers/0/image", "/spec/containers/2/image"])
    assert json.loads(out["metadata"]["annotations"][ORIGINAL_IMAGES_ANNOTATION]) == {
        "/spec/containers/0/image": "x1",
        "/spec/containers/2/image": "x3",
    }


def test_a_record_too_large_is_left_out_with_a_warning():
    containers = [{"name": f"c{i}", "image": "quay.io/o/" + "a" * 200 + f":{i}"} for i in range(400)]
    obj = {"kind": "Pod", "metadata": {}, "spec": {"containers": containers}}
    sites = image_sites(obj, "Pod")
    ops = pin_patch([item(s.image, path=s.path, id=s.id) for s in sites], sites)
    record, warning = original_images_patch(obj, sites, ops)
    assert record == [] and "did not record" in warning
