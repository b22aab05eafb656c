"""Image volumes (`volumes[].image.reference`) go through the same decision as containers, with the
real OPA, for every workload kind."""

from __future__ import annotations

import pytest

from app.opa.client import OpaClient

from .helpers import KIND_GROUPS, decide, load, review, reviewer, workload

POLICY = """
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: cluster}
spec:
  repositories:
    - name: "docker.io/library/*"
    - name: "quay.io/allowed/*"
"""


@pytest.fixture(scope="module")
def cluster(local_opa):
    opa = OpaClient(local_opa.url)
    return reviewer(opa, load(opa, POLICY))


def spec_with_volume(reference: str) -> dict:
    return {
        "containers": [{"name": "app", "image": "nginx:1.25"}],
        "volumes": [{"name": "cfg", "emptyDir": {}}, {"name": "model", "image": {"reference": reference}}],
    }


@pytest.mark.parametrize("kind", sorted(KIND_GROUPS))
def test_an_unlisted_volume_image_denies_the_workload(cluster, kind):
    response = decide(cluster, review(workload(kind, spec_with_volume("evil.io/model:1"))))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert "evil.io/model:1" in message and "/volumes/1/image/reference" in message, message


@pytest.mark.parametrize("kind", sorted(KIND_GROUPS))
def test_a_listed_volume_image_is_admitted(cluster, kind):
    response = decide(cluster, review(workload(kind, spec_with_volume("quay.io/allowed/model:1"))))
    assert response["allowed"] is True, response.get("status")


def test_an_invalid_volume_reference_is_denied_as_invalid(cluster):
    response = decide(cluster, review(workload("Pod", spec_with_volume("quay.io/Allowed/model"))))
    assert response["allowed"] is False and "invalid" in response["status"]["message"]


def test_a_volume_image_of_the_wrong_type_is_denied_naming_the_field(cluster):
    spec = {
        "containers": [{"name": "app", "image": "nginx"}],
        "volumes": [{"name": "m", "image": {"reference": 5}}],
    }
    response = decide(cluster, review(workload("Deployment", spec)))
    assert response["allowed"] is False
    assert "/spec/template/spec/volumes/0/image/reference is not a string" in response["status"]["message"]
