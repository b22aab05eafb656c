"""The bounds on policies (app/policies/bounds.py): one number for the schema and the CRDs, and
which policies a set over a bound loses (the large namespace's, never the cluster's or a small one's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.policies.bounds import MAX_ENTRIES, Bounds, over_bounds
from app.policies.model import PolicyError, RegoModule
from app.policies.schema import POLICY_SPEC_SCHEMA, parse_policy_document

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("crd", ["imagepolicies.ostiary.dev.yaml", "clusterimagepolicies.ostiary.dev.yaml"])
def test_the_crds_hold_the_same_entry_bound_as_the_schema(crd):
    doc = yaml.safe_load((ROOT / "helm/ostiary/crds" / crd).read_text())
    spec = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["repositories"]["maxItems"] == MAX_ENTRIES
    assert POLICY_SPEC_SCHEMA["properties"]["repositories"]["maxItems"] == MAX_ENTRIES


def test_a_policy_of_too_many_entries_is_refused_naming_the_bound_not_echoing_it():
    doc = {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ImagePolicy",
        "metadata": {"name": "p", "namespace": "t"},
        "spec": {"repositories": [{"name": f"r.example.com/x{i}"} for i in range(20000)]},
    }
    with pytest.raises(PolicyError) as caught:
        parse_policy_document(doc, "t#0")
    assert "20000 entries, over the bound of 500 entries per policy" in str(caught.value)
    assert len(str(caught.value)) < 400


def _module(scope: str, name: str, size: int) -> RegoModule:
    mid = "ostiary_policies/cluster/" + name if scope == "" else f"ostiary_policies/namespaced/{scope}/{name}"
    return RegoModule(mid, "", "x" * size)


def test_a_scope_over_its_bound_keeps_its_smaller_policies():
    modules = [_module("t", "a", 40), _module("t", "b", 50), _module("t", "c", 30)]
    refused = over_bounds([(m.id, m) for m in modules], Bounds(10, 80, 1000))
    assert list(refused) == ["ostiary_policies/namespaced/t/b"]
    assert "namespace t" in refused["ostiary_policies/namespaced/t/b"]


def test_over_the_total_the_largest_namespace_goes_never_the_cluster():
    modules = [_module("", "c", 90), _module("big", "x", 95), _module("small", "y", 10)]
    refused = over_bounds([(m.id, m) for m in modules], Bounds(10, 100, 150))
    assert list(refused) == ["ostiary_policies/namespaced/big/x"]
    assert "over the bound of 150 bytes" in refused["ostiary_policies/namespaced/big/x"]


def test_bounds_above_the_crds_are_refused():
    with pytest.raises(ValueError, match="between 1 and 500"):
        Bounds(max_entries=MAX_ENTRIES + 1)
