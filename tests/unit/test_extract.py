import pytest

from app.admission.extract import BadRequest, find_workload, image_sites

POD_SPEC = {
    "initContainers": [{"name": "init", "image": "busybox"}],
    "containers": [{"name": "app", "image": "nginx:1.25"}, {"name": "blank", "image": ""}],
    "ephemeralContainers": [{"name": "debug", "image": "alpine"}],
    "volumes": [
        {"name": "cfg", "configMap": {"name": "c"}},
        {"name": "model", "image": {"reference": "quay.io/org/model:v1", "pullPolicy": "IfNotPresent"}},
        {"name": "blank", "image": {"reference": ""}},
        {"name": "tools", "image": {"reference": "ghcr.io/org/tools@sha256:" + "a" * 64}},
    ],
    "imagePullSecrets": [{"name": "pull"}],
    "serviceAccountName": "builder",
}


@pytest.mark.parametrize(
    "kind, obj, base",
    [
        ("Pod", {"spec": POD_SPEC}, "/spec"),
        ("Deployment", {"spec": {"template": {"spec": POD_SPEC}}}, "/spec/template/spec"),
        ("ReplicaSet", {"spec": {"template": {"spec": POD_SPEC}}}, "/spec/template/spec"),
        ("ReplicationController", {"spec": {"template": {"spec": POD_SPEC}}}, "/spec/template/spec"),
        ("DaemonSet", {"spec": {"template": {"spec": POD_SPEC}}}, "/spec/template/spec"),
        ("StatefulSet", {"spec": {"template": {"spec": POD_SPEC}}}, "/spec/template/spec"),
        ("Job", {"spec": {"template": {"spec": POD_SPEC}}}, "/spec/template/spec"),
        (
            "CronJob",
            {"spec": {"jobTemplate": {"spec": {"template": {"spec": POD_SPEC}}}}},
            "/spec/jobTemplate/spec/template/spec",
        ),
    ],
)
def test_every_container_list_of_every_workload_kind_is_found(kind, obj, base):
    sites = image_sites(obj, kind)
    assert [(s.path, s.image) for s in sites] == [
        (f"{base}/initContainers/0/image", "busybox"),
        (f"{base}/containers/0/image", "nginx:1.25"),
        (f"{base}/ephemeralContainers/0/image", "alpine"),
        (f"{base}/volumes/1/image/reference", "quay.io/org/model:v1"),
        (f"{base}/volumes/3/image/reference", "ghcr.io/org/tools@sha256:" + "a" * 64),
    ]
    assert [s.id for s in sites] == list(range(5))
    assert [(s.container_kind, s.container) for s in sites][3:] == [
        ("volumes", "model"),
        ("volumes", "tools"),
    ]
    assert sites[3].as_input()["container"] == {"kind": "volumes", "name": "model"}
    assert sites[3].as_input()["ref"]["name"] == "quay.io/org/model"
    workload = find_workload(obj, kind)
    assert workload.sites == sites and workload.base == base
    assert workload.pull_secret_names() == ["pull"]
    assert workload.service_account_name() == "builder"


def test_other_kinds_carry_no_images():
    assert image_sites({"data": {"image": "x"}}, "ConfigMap") == []


def test_malformed_pod_specs_are_errors_not_skips():
    with pytest.raises(BadRequest):
        image_sites({"spec": {"containers": "nginx"}}, "Pod")
    with pytest.raises(BadRequest):
        image_sites({"spec": {"template": "x"}}, "Deployment")


@pytest.mark.parametrize(
    "kind, obj, field",
    [
        ("Pod", {"spec": {"containers": {"name": "a", "image": "nginx"}}}, "/spec/containers is not a list"),
        ("Pod", {"spec": {"containers": {}}}, "/spec/containers is not a list"),
        ("Pod", {"spec": {"containers": 0}}, "/spec/containers is not a list"),
        (
            "Pod",
            {"spec": {"containers": [{"name": "a", "image": 7}]}},
            "/spec/containers/0/image is not a string",
        ),
        (
            "Pod",
            {"spec": {"containers": [{"name": "a", "image": ["nginx"]}]}},
            "/spec/containers/0/image is not a string",
        ),
        (
            "Pod",
            {"spec": {"containers": [{"name": 3, "image": "nginx"}]}},
            "/spec/containers/0/name is not a string",
        ),
        ("Pod", {"spec": {"containers": ["nginx"]}}, "/spec/containers/0 is not an object"),
        ("Pod", {"spec": None}, "/spec is missing"),
        ("Pod", {}, "/spec is missing"),
        ("Pod", {"spec": []}, "/spec is not an object"),
        ("Deployment", {"spec": {"template": None}}, "/spec/template is missing"),
        ("CronJob", {"spec": {"jobTemplate": {"spec": "x"}}}, "/spec/jobTemplate/spec is not an object"),
        ("Pod", {"spec": {"volumes": {"name": "v"}}}, "/spec/volumes is not a list"),
        ("Pod", {"spec": {"volumes": ["v"]}}, "/spec/volumes/0 is not an object"),
        (
            "Pod",
            {"spec": {"volumes": [{"name": "v", "image": "nginx"}]}},
            "/spec/volumes/0/image is not an object",
        ),
        (
            "Pod",
            {"spec": {"volumes": [{"name": "v", "image": {"reference": 1}}]}},
            "/spec/volumes/0/image/reference is not a string",
        ),
        ("Pod", {"spec": {"imagePullSecrets": "x"}}, "/spec/imagePullSecrets is not a list"),
    ],
)
def test_type_confusion_is_refused_naming_the_field(kind, obj, field):
    with pytest.raises(BadRequest) as err:
        find_workload(obj, kind).pull_secret_names()
    assert field in str(err.value)


def test_volume_without_image_source_or_reference_has_no_site():
    obj = {
        "spec": {
            "volumes": [
                {"name": "e", "emptyDir": {}},
                {"name": "n", "image": None},
                {"name": "r", "image": {"pullPolicy": "Always"}},
                {"name": "rbd", "rbd": {"image": "ceph-block", "monitors": ["m"]}},
            ]
        }
    }
    assert image_sites(obj, "Pod") == []


def test_invalid_image_reaches_policy_as_invalid():
    (site,) = image_sites({"spec": {"containers": [{"name": "a", "image": "Bad Image"}]}}, "Pod")
    data = site.as_input()
    assert data["ref"]["valid"] is False and "Bad Image" in data["ref"]["error"]


def test_each_site_carries_its_reference_parsed_once():
    """The reference is parsed at extraction and carried to the patch (issue 21 item 1)."""
    (good, bad) = image_sites(
        {"spec": {"containers": [{"name": "a", "image": "nginx:1.25"}, {"name": "b", "image": "Bad Image"}]}},
        "Pod",
    )
    assert good.ref is not None and good.ref.name == "docker.io/library/nginx" and good.ref_error is None
    assert good.reference() is good.ref
    assert bad.ref is None and "Bad Image" in str(bad.ref_error)
    with pytest.raises(ValueError, match="Bad Image"):
        bad.reference()


def test_a_reference_is_parsed_once_and_kept_while_refusals_are_not():
    from app.images import InvalidImageReference, parse_image

    first, again = parse_image("quay.io/org/kept:1"), parse_image("quay.io/org/kept:1")
    assert first is again and first.name == "quay.io/org/kept"
    for _ in range(2):  # refused each time, with its reason
        with pytest.raises(InvalidImageReference, match="contains whitespace"):
            parse_image("bad image")
    with pytest.raises(InvalidImageReference, match="not a string"):
        parse_image(["unhashable"])  # type: ignore[arg-type]
