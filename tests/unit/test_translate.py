import json
import re

import pytest

from app.policies.model import PolicyError, PolicyResource
from app.policies.translate import parse_pattern, translate, wildcard_regex


@pytest.mark.parametrize(
    "written, normalized",
    [
        ("*", "*/*"),
        ("nginx", "docker.io/library/nginx"),
        ("ubuntu*", "docker.io/library/ubuntu*"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("myorg/app", "docker.io/myorg/app"),
        ("docker.io/nginx", "docker.io/library/nginx"),
        ("docker.io/ubuntu*", "docker.io/library/ubuntu*"),
        ("docker.io/*", "docker.io/*"),
        ("index.docker.io/library/*", "docker.io/library/*"),
        ("*.trusted.io/org/*", "*.trusted.io/org/*"),
        ("localhost/app", "localhost/app"),
        ("localhost:5000/app:*", "localhost:5000/app:*"),
        ("icr.io/team/*-debug", "icr.io/team/*-debug"),
    ],
)
def test_patterns_are_normalized_like_images(written, normalized):
    assert parse_pattern(written).normalized == normalized


@pytest.mark.parametrize(
    "name",
    [
        "REGISTRY/app:v1",
        "Registry.Example.COM/team/app:1",
        "localhost/app",
        "registry-1.docker.io/library/nginx:1",
        "INDEX.DOCKER.IO/org/app:2",
        "myorg/app:3",
        "nginx:1.25",
        "host:5000/a/b:c",
    ],
)
def test_a_pattern_names_the_registry_an_image_of_the_same_text_is_on(name):
    """One host rule and one normaliser for patterns and images: the same text, the same registry."""
    from app.images import parse_image

    pattern, image = parse_pattern(name), parse_image(name)
    assert (pattern.host, pattern.path) == (image.registry, image.repository)


def test_exact_needs_a_tag_and_no_wildcard():
    assert parse_pattern("nginx:1.25").exact == "docker.io/library/nginx:1.25"
    assert parse_pattern("nginx").exact is None
    assert parse_pattern("nginx:1.*").exact is None


def test_wildcard_regex_quotes_everything_but_star():
    rx = wildcard_regex("a.b+c(d)*")
    assert re.match(rx, "a.b+c(d)anything")
    assert not re.match(rx, "aXb+c(d)")


@pytest.mark.parametrize("bad", ["", " nginx", "nginx@sha256:" + "a" * 64, "nginx:", "host.io/"])
def test_unusable_patterns_are_refused(bad):
    with pytest.raises(ValueError):
        parse_pattern(bad)


def resource(name="p", spec=None, kind="ClusterImagePolicy", namespace=None):
    return PolicyResource("ostiary.dev/v1", kind, name, namespace, spec or {}, "f.yaml#0")


def test_translation_is_data_only_and_values_enter_as_json():
    hostile = 'x"} \n package evil\n deny := true #'
    module = translate(
        resource(
            spec={
                "repositories": [
                    {
                        "name": "icr.io/*",
                        "policy": {"trust": {"enabled": True, "signerSecrets": [{"name": hostile}]}},
                    }
                ]
            }
        )
    )
    assert module.id == "ostiary_policies/cluster/p"
    assert module.package == 'ostiary_policies.cluster["p"]'
    # A data document, never Rego: the whole text is one JSON object, the hostile value a string in it.
    assert module.is_data is True
    document = json.loads(module.source)
    assert list(document) == ["policy"]
    data = document["policy"]
    assert data["repositories"][0]["policy"]["trust"]["signerSecrets"][0]["name"] == hostile


def test_bad_pattern_names_the_field():
    with pytest.raises(PolicyError) as err:
        translate(resource(spec={"repositories": [{"name": "ok/*"}, {"name": "a@sha256:" + "a" * 64}]}))
    assert "spec.repositories[1].name" in str(err.value)
    assert "f.yaml#0" in str(err.value)


def test_namespaced_module_ids_carry_the_namespace():
    module = translate(resource(name="team", kind="ImagePolicy", namespace="prod"))
    assert module.id == "ostiary_policies/namespaced/prod/team"
    assert module.package == 'ostiary_policies.namespaced["prod"]["team"]'


# ---- what the translator computes once for the decision (docs/performance.md, issue 26) ----


def _entries(spec, kind="ClusterImagePolicy", namespace=None, name="p"):
    return json.loads(translate(resource(name, spec, kind, namespace)).source)["policy"]


def test_rank_is_exact_specificity_requirements_kind_namespace_name_index():
    policy = _entries(
        {
            "repositories": [
                {"name": "icr.io/team/app:1.0"},
                {"name": "icr.io/team/*", "policy": {"trust": {"enabled": True}}},
                {"name": "icr.io/*", "policy": {"simple": {"requirements": [{"type": "reject"}]}}},
                {"name": "icr.io/*", "policy": {"trust": {"enabled": False}, "mutateImage": False}},
            ]
        },
        kind="ImagePolicy",
        namespace="team",
        name="web",
    )
    ranks = [e["rank"] for e in policy["repositories"]]
    assert ranks == [
        [0, -len("icr.io/team/app:1.0"), 1, "ImagePolicy", "team", "web", 0],
        [1, -len("icr.io/team/"), 0, "ImagePolicy", "team", "web", 1],
        [1, -len("icr.io/"), 0, "ImagePolicy", "team", "web", 2],
        [1, -len("icr.io/"), 1, "ImagePolicy", "team", "web", 3],
    ]
    assert sorted(ranks) == ranks  # the order docs/policies.md gives
    cluster = _entries({"repositories": [{"name": "nginx"}]})
    assert cluster["repositories"][0]["rank"][3:] == ["ClusterImagePolicy", "", "p", 0]


@pytest.mark.parametrize(
    "policy, expected",
    [
        ({"trust": {"enabled": True}}, True),
        ({"simple": {}}, True),
        ({"cosign": {"keys": [{"keySecret": "k"}]}}, True),
        ({"notation": {"trustStores": ["ca:s"]}}, True),
        ({"cosign": False}, False),
        ({"va": {"enabled": True}}, True),
        ({"vulnerability": {}}, True),
        ({"vulnerability": None}, True),  # Rego: only false fails
        ({}, False),
        ({"trust": {"enabled": False}}, False),
        ({"trust": {"enabled": 1}}, False),
        ({"simple": False}, False),
        ({"mutateImage": False}, False),
        ("not an object", False),
    ],
)
def test_has_requirements_reads_the_policy_as_rego_does(policy, expected):
    from app.policies.translate import has_requirements

    assert has_requirements(policy) is expected


def test_needs_spell_out_what_the_entry_asks():
    from app.policies.translate import entry_needs

    assert entry_needs({}) == {
        "trust": False,
        "server": None,
        "signers": [],
        "roots": [],
        "signatures": False,
        "mutate": True,
        "unsupported": [],
    }
    needs = entry_needs(
        {
            "trust": {
                "enabled": True,
                "trustServer": "https://n.example",
                "signerSecrets": [{"name": "alice"}, {"name": "bob"}],
                "rootSecrets": [{"name": "root"}],
            },
            "mutateImage": False,
            "cosign": {"keys": []},
            "va": {"enabled": True},
            "vulnerability": False,
        }
    )
    assert needs == {
        "trust": True,
        "server": "https://n.example",
        "signers": ["alice", "bob"],
        "roots": ["root"],
        "signatures": True,
        "mutate": False,
        "unsupported": ["va"],
    }
    # the signature flag is conservative: naming a verifier at all lets the Rego derive them
    for kind in ("simple", "cosign", "notation"):
        assert entry_needs({kind: {}})["signatures"] is True


def test_wild_lists_each_wildcard_bucket_with_its_host_suffix():
    policy = _entries(
        {
            "repositories": [
                {"name": "*.icr.io/*"},
                {"name": "reg*.example.com/*"},
                {"name": "*"},
                {"name": "icr.io/a"},
            ]
        }
    )
    assert policy["wild"] == [
        ["*", "", "."],
        ["*example.com", "example.com", ".example.com"],
        ["*icr.io", "icr.io", ".icr.io"],
    ]
    assert set(policy["by_host"]) == {"*", "*example.com", "*icr.io", "=icr.io"}
