"""The ownerReference check: approve a child only for a real owner whose template has the same images."""

from __future__ import annotations

import pytest

from app.kube.client import KubeError
from app.kube.owners import (
    OWNER_KINDS,
    OwnerVerifier,
    controller_reference,
    image_mismatch,
    pod_template,
    template_images,
)

PINNED = "registry.example.com/team/app:1.0@sha256:" + "a" * 64
OTHER_DIGEST = "registry.example.com/team/app:1.0@sha256:" + "b" * 64


def spec(containers=(("app", PINNED),), init=()):
    return {
        "containers": [{"name": n, "image": i} for n, i in containers],
        **({"initContainers": [{"name": n, "image": i} for n, i in init]} if init else {}),
    }


def workload(kind: str, uid: str = "uid-1", name: str = "web", namespace: str = "apps", **spec_kw) -> dict:
    template = {"metadata": {"labels": {"app": name}}, "spec": spec(**spec_kw)}
    if kind == "CronJob":
        body = {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}
    else:
        body = {"template": template}
    return {"kind": kind, "metadata": {"name": name, "namespace": namespace, "uid": uid}, "spec": body}


def child(
    owner_kind="ReplicaSet",
    api_version="apps/v1",
    uid="uid-1",
    name="web",
    controller=True,
    containers=(("app", PINNED),),
) -> dict:
    return {
        "kind": "Pod",
        "metadata": {
            "name": "web-x",
            "namespace": "apps",
            "ownerReferences": [
                {
                    "apiVersion": api_version,
                    "kind": owner_kind,
                    "name": name,
                    "uid": uid,
                    "controller": controller,
                }
            ],
        },
        "spec": spec(containers=containers),
    }


def triples(obj: dict) -> list[tuple[str, str, str]]:
    out = []
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for c in obj["spec"].get(kind) or []:
            out.append((kind, c["name"], c["image"]))
    return out


class FakeApi:
    def __init__(self, objects: dict[str, dict] | None = None, fail: bool = False):
        self.objects = objects or {}
        self.gets: list[str] = []
        self.fail = fail

    def get(self, path):
        self.gets.append(path)
        if self.fail:
            raise KubeError(503, "unavailable")
        return self.objects.get(path)


# ----------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    "kind",
    ["Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "ReplicationController", "CronJob"],
)
def test_pod_template_is_found_where_each_kind_keeps_it(kind):
    group = {"Job": "batch", "CronJob": "batch", "ReplicationController": ""}.get(kind, "apps")
    template = pod_template(workload(kind), OWNER_KINDS[(group, kind)])
    assert template is not None
    assert template_images(template) == {("containers", "app"): PINNED}


def test_template_images_keep_container_kind_apart():
    template = {"spec": spec(containers=(("app", "nginx:1"),), init=(("setup", "busybox:1"),))}
    assert template_images(template) == {
        ("containers", "app"): "nginx:1",
        ("initContainers", "setup"): "busybox:1",
    }


def test_only_the_controller_reference_counts():
    obj = child(controller=False)
    assert controller_reference(obj) is None
    obj["metadata"]["ownerReferences"].append(
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "r", "uid": "u", "controller": True}
    )
    assert controller_reference(obj)["name"] == "r"


def test_same_images_match():
    assert image_mismatch([("containers", "app", PINNED)], {("containers", "app"): PINNED}) is None


def test_images_are_compared_normalized():
    owner = {("containers", "app"): "docker.io/library/nginx:1.25"}
    assert image_mismatch([("containers", "app", "nginx:1.25")], owner) is None


def test_a_child_without_the_pinned_digest_does_not_match():
    assert image_mismatch(
        [("containers", "app", "registry.example.com/team/app:1.0")], {("containers", "app"): PINNED}
    )


def test_a_different_digest_does_not_match():
    assert image_mismatch([("containers", "app", OTHER_DIGEST)], {("containers", "app"): PINNED})


def test_a_container_missing_from_the_template_does_not_match():
    assert "not in the owner" in image_mismatch(
        [("containers", "app", PINNED), ("containers", "extra", PINNED)], {("containers", "app"): PINNED}
    )


def test_the_same_name_under_another_container_kind_does_not_match():
    assert image_mismatch([("initContainers", "app", PINNED)], {("containers", "app"): PINNED})


def test_ephemeral_containers_never_match_a_template():
    assert "cannot come from a pod template" in image_mismatch(
        [("ephemeralContainers", "app", PINNED)], {("containers", "app"): PINNED}
    )


def test_an_invalid_image_never_matches_even_itself():
    assert image_mismatch([("containers", "app", "Bad Image")], {("containers", "app"): "Bad Image"})


def test_no_images_is_not_an_approval():
    assert image_mismatch([], {("containers", "app"): PINNED})


# ----------------------------------------------------------------------------- against a fake API

RS_PATH = "/apis/apps/v1/namespaces/apps/replicasets/web"


def test_a_child_of_a_real_owner_with_the_same_images_is_approved():
    api = FakeApi({RS_PATH: workload("ReplicaSet")})
    pod = child()
    reason = OwnerVerifier(api).approved_by_owner(pod, "apps", triples(pod))
    assert reason and "ReplicaSet apps/web" in reason
    assert api.gets == [RS_PATH]


@pytest.mark.parametrize(
    ("owner_kind", "api_version", "path"),
    [
        ("Deployment", "apps/v1", "/apis/apps/v1/namespaces/apps/deployments/web"),
        ("StatefulSet", "apps/v1", "/apis/apps/v1/namespaces/apps/statefulsets/web"),
        ("DaemonSet", "apps/v1", "/apis/apps/v1/namespaces/apps/daemonsets/web"),
        ("Job", "batch/v1", "/apis/batch/v1/namespaces/apps/jobs/web"),
        ("CronJob", "batch/v1", "/apis/batch/v1/namespaces/apps/cronjobs/web"),
        ("ReplicationController", "v1", "/api/v1/namespaces/apps/replicationcontrollers/web"),
    ],
)
def test_every_workload_kind_can_own(owner_kind, api_version, path):
    api = FakeApi({path: workload(owner_kind)})
    pod = child(owner_kind=owner_kind, api_version=api_version)
    assert OwnerVerifier(api).approved_by_owner(pod, "apps", triples(pod))


def test_a_forged_uid_is_verified_in_full():
    api = FakeApi({RS_PATH: workload("ReplicaSet", uid="real-uid")})
    pod = child(uid="forged-uid")
    assert OwnerVerifier(api).approved_by_owner(pod, "apps", triples(pod)) is None


def test_a_nonexistent_owner_is_verified_in_full():
    pod = child()
    assert OwnerVerifier(FakeApi()).approved_by_owner(pod, "apps", triples(pod)) is None


def test_an_owner_whose_template_has_other_images_is_verified_in_full():
    api = FakeApi({RS_PATH: workload("ReplicaSet", containers=(("app", OTHER_DIGEST),))})
    pod = child()
    assert OwnerVerifier(api).approved_by_owner(pod, "apps", triples(pod)) is None


def test_an_unknown_owner_kind_is_verified_in_full_without_reading_it():
    api = FakeApi()
    pod = child(owner_kind="Rollout", api_version="argoproj.io/v1alpha1")
    assert OwnerVerifier(api).approved_by_owner(pod, "apps", triples(pod)) is None
    assert api.gets == []


def test_a_kind_name_in_the_wrong_group_is_not_an_owner():
    api = FakeApi({RS_PATH: workload("ReplicaSet")})
    pod = child(api_version="evil.io/v1")
    assert OwnerVerifier(api).approved_by_owner(pod, "apps", triples(pod)) is None


def test_the_owner_is_looked_up_in_the_childs_namespace_only():
    api = FakeApi({RS_PATH: workload("ReplicaSet")})
    pod = child()
    assert OwnerVerifier(api).approved_by_owner(pod, "other", triples(pod)) is None
    assert api.gets == ["/apis/apps/v1/namespaces/other/replicasets/web"]


def test_an_api_error_means_full_verification():
    pod = child()
    assert OwnerVerifier(FakeApi(fail=True)).approved_by_owner(pod, "apps", triples(pod)) is None


def test_a_cached_owner_saves_reads_but_a_cached_no_is_read_again():
    now = [0.0]
    api = FakeApi({RS_PATH: workload("ReplicaSet", containers=(("app", OTHER_DIGEST),))})
    verifier = OwnerVerifier(api, ttl=2.0, clock=lambda: now[0])
    pod = child()
    assert verifier.approved_by_owner(pod, "apps", triples(pod)) is None
    api.objects[RS_PATH] = workload("ReplicaSet")  # the template changed since
    assert verifier.approved_by_owner(pod, "apps", triples(pod))  # a cached "no" is read again
    reads = len(api.gets)
    assert verifier.approved_by_owner(pod, "apps", triples(pod))  # a cached "yes" is reused
    assert len(api.gets) == reads
    now[0] = 5.0
    del api.objects[RS_PATH]  # after the TTL the owner is gone
    assert verifier.approved_by_owner(pod, "apps", triples(pod)) is None


# ----------------------------------------------------------------------------- image volumes

VOLUME_IMAGE = "registry.example.com/team/data:1.0@sha256:" + "c" * 64


def test_a_template_names_its_image_volumes_too():
    template = {
        "spec": {
            **spec(),
            "volumes": [
                {"name": "data", "image": {"reference": VOLUME_IMAGE}},
                {"name": "scratch", "emptyDir": {}},
            ],
        }
    }
    assert template_images(template) == {("containers", "app"): PINNED, ("volumes", "data"): VOLUME_IMAGE}


def test_an_image_volume_is_approved_only_when_the_owner_template_has_the_same_one():
    owner = {("containers", "app"): PINNED, ("volumes", "data"): VOLUME_IMAGE}
    same = [("containers", "app", PINNED), ("volumes", "data", VOLUME_IMAGE)]
    assert image_mismatch(same, owner) is None
    other = [("containers", "app", PINNED), ("volumes", "data", "registry.example.com/evil/data:1")]
    assert "differs" in image_mismatch(other, owner)
    extra = [("containers", "app", PINNED), ("volumes", "more", VOLUME_IMAGE)]
    assert "not in the owner's pod template" in image_mismatch(extra, owner)


def test_the_owner_kinds_come_from_the_workloads_table():
    from app.workloads import WORKLOADS

    assert set(OWNER_KINDS) == {(w.group, w.kind) for w in WORKLOADS if w.kind != "Pod"}
    assert pod_template(workload("CronJob"), OWNER_KINDS[("batch", "CronJob")])["spec"]["containers"]
