import pytest

from app.admission.extract import BadRequest, image_sites, pull_secret_names, service_account_name

POD_SPEC = {
    "initContainers": [{"name": "init", "image": "busybox"}],
    "containers": [{"name": "app", "image": "nginx:1.25"}, {"name": "blank", "image": ""}],
    "ephemeralContainers": [{"name": "debug", "image": "alpine"}],
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
        ("CronJob", {"spec": {"jobTemplate": {"spec": {"template": {"spec": POD_SPEC}}}}}, "/spec/jobTemplate/spec/template/spec"),
    ],
)
def test_every_container_list_of_every_workload_kind_is_found(kind, obj, base):
    sites = image_sites(obj, kind)
    assert [(s.path, s.image) for s in sites] == [
        (f"{base}/initContainers/0/image", "busybox"),
        (f"{base}/containers/0/image", "nginx:1.25"),
        (f"{base}/ephemeralContainers/0/image", "alpine"),
    ]
    assert pull_secret_names(obj, kind) == ["pull"]
    assert service_account_name(obj, kind) == "builder"


def test_other_kinds_carry_no_images():
    assert image_sites({"data": {"image": "x"}}, "ConfigMap") == []


def test_malformed_pod_specs_are_errors_not_skips():
    with pytest.raises(BadRequest):
        image_sites({"spec": {"containers": "nginx"}}, "Pod")
    with pytest.raises(BadRequest):
        image_sites({"spec": {"template": "x"}}, "Deployment")


def test_invalid_image_reaches_policy_as_invalid():
    (site,) = image_sites({"spec": {"containers": [{"name": "a", "image": "Bad Image"}]}}, "Pod")
    data = site.as_input()
    assert data["ref"]["valid"] is False and "Bad Image" in data["ref"]["error"]
