import pytest

from app.policies.model import PolicyError
from app.policies.schema import parse_policy_document


def doc(**over):
    base = {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ClusterImagePolicy",
        "metadata": {"name": "p"},
        "spec": {"repositories": [{"name": "icr.io/*", "policy": {"trust": {"enabled": True}}}]},
    }
    base.update(over)
    return base


@pytest.mark.parametrize(
    "api_version",
    ["ostiary.dev/v1", "portieris.cloud.ibm.com/v1", "securityenforcement.admission.cloud.ibm.com/v1beta1"],
)
def test_portieris_groups_are_accepted_unchanged(api_version):
    assert parse_policy_document(doc(apiVersion=api_version), "x#0").api_version == api_version


@pytest.mark.parametrize(
    "override, field",
    [
        ({"apiVersion": "v1"}, "apiVersion"),
        ({"kind": "Policy"}, "kind"),
        ({"metadata": {"name": "Bad_Name"}}, "metadata.name"),
        ({"kind": "ImagePolicy"}, "metadata.namespace"),
        ({"metadata": {"name": "p", "namespace": "x"}}, "metadata.namespace"),
        ({"spec": {"repositories": [{"name": ""}]}}, "spec.repositories[0].name"),
        ({"spec": {"repositories": [{"name": "a", "policy": {"trsut": {}}}]}}, "spec.repositories[0].policy"),
        (
            {"spec": {"repositories": [{"name": "a", "policy": {"trust": {"enabled": "yes"}}}]}},
            "spec.repositories[0].policy.trust.enabled",
        ),
        (
            {"spec": {"repositories": [{"name": "a", "policy": {"trust": {"trustServer": "http://n"}}}]}},
            "trustServer",
        ),
        ({"spec": {"mode": "audit"}}, "spec.mode"),
    ],
)
def test_invalid_documents_name_origin_and_field(override, field):
    with pytest.raises(PolicyError) as err:
        parse_policy_document(doc(**override), "policies.yaml#3")
    assert "policies.yaml#3" in str(err.value)
    assert field in str(err.value)


def test_misspelt_trust_is_refused_not_ignored():
    with pytest.raises(PolicyError):
        parse_policy_document(
            doc(spec={"repositories": [{"name": "a", "policy": {"Trust": {"enabled": True}}}]}), "x"
        )


def test_image_policy_keeps_its_namespace():
    res = parse_policy_document(doc(kind="ImagePolicy", metadata={"name": "p", "namespace": "team-a"}), "x")
    assert res.namespace == "team-a" and res.kind == "ImagePolicy"
