"""Kept plans (app/admission/plans.py) with the real OPA: a warm admission asks OPA once, a policy
change is seen by the next admission, and a plan that is stale anyway never lets an image through."""

from __future__ import annotations

import base64
import json
import textwrap

import pytest
import yaml

from app.admission.plans import MAX_IMAGES, PlanCache
from app.admission.review import DECISION_PATH, PLAN_PATH
from app.opa.client import OpaClient
from app.policies.directory import translate_all
from app.policies.schema import parse_policy_document
from app.policies.sync import PolicySync, library_modules

from .helpers import decide, pod_spec, review, reviewer, verified_facts, workload

DIGEST = "sha256:" + "d" * 64


def policy(trust: dict | None) -> list:
    doc = {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ClusterImagePolicy",
        "metadata": {"name": "cluster"},
        "spec": {"repositories": [{"name": "quay.io/org/*", "policy": {"trust": trust} if trust else {}}]},
    }
    return translate_all([parse_policy_document(yaml.safe_load(textwrap.dedent(json.dumps(doc))), "test#0")])


class Counting:
    """The real OPA client, counting the queries per path."""

    def __init__(self, client: OpaClient):
        self.client = client
        self.paths: list[str] = []

    def query(self, path, input, deadline):
        self.paths.append(path)
        return self.client.query(path, input, deadline)


class Facts:
    """Verified facts as the verifier reports them (tested against real Notary in tests/trust,
    tests/world), from the server each request names."""

    def __init__(self):
        self.servers: list[str] = []

    def gather(self, requests, deadline):
        self.servers += [r.server for r in requests]
        return [verified_facts(r, DIGEST) for r in requests]


@pytest.fixture()
def setup(local_opa):
    client = OpaClient(local_opa.url)
    sync = PolicySync(client)
    sync.resync()
    sync.set_base(library_modules())
    counting = Counting(client)
    return sync, counting


def deployment(name: str, *images: str, namespace: str = "default") -> dict:
    return review(
        workload("Deployment", pod_spec(*images), name=name, namespace=namespace), namespace=namespace
    )


def test_a_warm_admission_asks_opa_once_and_answers_the_same(setup):
    sync, opa = setup
    sync.replace_all(policy({"enabled": True, "trustServer": "https://notary.example.com"}))
    facts = Facts()
    rv = reviewer(opa, trust=facts, plans=PlanCache(lambda: sync.generation))
    first = decide(rv, deployment("a", "quay.io/org/app:1", "quay.io/org/db:2"))
    assert opa.paths == [PLAN_PATH, DECISION_PATH]
    second = decide(rv, deployment("b", "quay.io/org/app:1", "quay.io/org/db:2"))
    assert opa.paths[2:] == [DECISION_PATH]  # the kept plan: one query
    assert first["allowed"] is second["allowed"] is True
    assert base64.b64decode(first["patch"]) == base64.b64decode(second["patch"])
    assert facts.servers == ["https://notary.example.com"] * 4  # the facts were still gathered

    # other images, another namespace: another plan
    decide(rv, deployment("c", "quay.io/org/app:1", namespace="team-a"))
    assert opa.paths[3:] == [PLAN_PATH, DECISION_PATH]


def test_the_next_admission_after_a_policy_change_uses_the_new_policy(setup):
    sync, opa = setup
    sync.replace_all(policy(None))  # allowed without trust
    rv = reviewer(opa, trust=None, plans=PlanCache(lambda: sync.generation))
    assert decide(rv, deployment("a", "quay.io/org/app:1"))["allowed"] is True
    assert decide(rv, deployment("b", "quay.io/org/app:1"))["allowed"] is True
    assert opa.paths == [PLAN_PATH, DECISION_PATH]  # the second was planned already

    before = sync.generation
    sync.replace_all(policy({"enabled": True, "trustServer": "https://notary.example.com"}))
    assert sync.generation > before
    response = decide(rv, deployment("c", "quay.io/org/app:1"))
    assert response["allowed"] is False and "trust data unavailable" in response["status"]["message"]
    assert opa.paths[2:] == [PLAN_PATH, DECISION_PATH]  # planned again

    unchanged = sync.generation
    sync.replace_all(policy({"enabled": True, "trustServer": "https://notary.example.com"}))
    assert sync.generation == unchanged  # nothing written to OPA: the kept plans stay valid


def test_a_stale_plan_that_skips_trust_still_denies(setup):
    # The attacker's best case: the plan kept is stale (here: a generation that never moves, as if
    # a change reached OPA behind Ostiary's back) and says no trust is needed. The decision derives
    # the requirement from the modules in force and denies the image that has no facts.
    sync, opa = setup
    sync.replace_all(policy(None))
    rv = reviewer(opa, trust=Facts(), plans=PlanCache(lambda: 0))
    assert decide(rv, deployment("a", "quay.io/org/app:1"))["allowed"] is True
    sync.replace_all(policy({"enabled": True, "trustServer": "https://notary.example.com"}))
    response = decide(rv, deployment("b", "quay.io/org/app:1"))
    assert opa.paths[-1] == DECISION_PATH and opa.paths.count(PLAN_PATH) == 1  # the stale plan was used
    assert response["allowed"] is False
    assert "trust data unavailable" in response["status"]["message"]


def test_a_stale_plan_naming_the_old_trust_server_still_denies(setup):
    # The policy moved to another trust server; facts gathered from the old one (a stale plan, or a
    # change between the two queries of one admission) are refused, never taken for the new server.
    sync, opa = setup
    sync.replace_all(policy({"enabled": True, "trustServer": "https://old-notary.example.com"}))
    facts = Facts()
    rv = reviewer(opa, trust=facts, plans=PlanCache(lambda: 0))
    assert decide(rv, deployment("a", "quay.io/org/app:1"))["allowed"] is True
    sync.replace_all(policy({"enabled": True, "trustServer": "https://new-notary.example.com"}))
    response = decide(rv, deployment("b", "quay.io/org/app:1"))
    assert facts.servers[-1] == "https://old-notary.example.com"  # gathered by the stale plan
    assert response["allowed"] is False
    assert (
        "but the policy requires trust server https://new-notary.example.com" in response["status"]["message"]
    )
    assert "patch" not in response


def test_trust_servers_are_compared_as_the_verifier_names_them(setup):
    # An upper-case host and a trailing slash in the policy name the same server as the facts do.
    sync, opa = setup
    sync.replace_all(policy({"enabled": True, "trustServer": "https://Notary.Example.com/"}))
    facts = Facts()
    rv = reviewer(opa, trust=facts)
    assert decide(rv, deployment("a", "quay.io/org/app:1"))["allowed"] is True
    assert facts.servers == ["https://notary.example.com"]


def test_plans_too_large_to_keep_are_queried_every_time(setup):
    sync, opa = setup
    sync.replace_all(policy(None))
    rv = reviewer(opa, plans=PlanCache(lambda: sync.generation))
    images = [f"quay.io/org/app{i}:1" for i in range(MAX_IMAGES + 1)]
    for name in ("a", "b"):
        assert decide(rv, deployment(name, *images))["allowed"] is True
    assert opa.paths == [PLAN_PATH, PLAN_PATH]  # each answered by its own plan query
