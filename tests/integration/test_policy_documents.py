"""Policy documents in a real OPA (app/policies/sync.py): compared by value, written in one go.

- A document OPA hands back in another form than the text Ostiary wrote (1e3 for 1000.0, 1.0 for
  1, spaces, key order, escapes, an integer beyond 64 bits that the decoder of OPA's answers turns
  into a float) is the same document: no difference, nothing pushed again and again.
- A document really changed in OPA (a boolean for a number, a value replaced) is still a difference,
  and repaired.
- A reload of many policies once the library is in OPA takes one write, not one per policy.
"""

from __future__ import annotations

import json
import time

import pytest

from app.opa.client import OpaClient
from app.opa.process import LocalOpa
from app.policies.model import PolicyResource, RegoModule
from app.policies.sync import POLICY_DATA_ROOT, PolicySync, library_modules, same_json
from app.policies.translate import canonical_json, translate


@pytest.fixture()
def sync(opa_binary):
    opa = LocalOpa(opa_binary, authenticate=True).start()
    client = OpaClient(opa.url, token=opa.token)
    policy_sync = PolicySync(client, base=library_modules())
    policy_sync.resync()
    yield policy_sync
    opa.stop()


def document(name: str, text: str) -> RegoModule:
    return RegoModule(
        f"{POLICY_DATA_ROOT}/cluster/{name}", f"ostiary_policies.cluster.{name}", text, is_data=True
    )


# One document, written in forms OPA does not hand back as written: each is the same document.
FORMS = {
    "exponent": '{"policy": {"n": 1e3}}',
    "integral_float": '{"policy":{"n":1.0}}',
    "spaces_and_order": '{ "policy" : { "b" : [ 1 , 2 ] , "a" : "x" } }',
    "escapes": '{"policy":{"s":"\\u00e9\\u003c"}}',
    "beyond_64_bits": '{"policy":{"n":18446744073709551617}}',
}


def test_a_document_handed_back_in_another_form_is_not_a_difference(sync):
    sync.replace_all([document(name, text) for name, text in FORMS.items()])
    before = sync.generation
    for _ in range(3):
        found = sync.difference()
        assert found.empty, found.describe()
        assert sync.repair() is None
    assert sync.generation == before, "the documents were pushed again"


def test_a_document_really_changed_in_opa_is_a_difference_and_repaired(sync):
    sync.replace_all([document("flag", '{"policy":{"n":1,"on":true}}')])
    for changed in (
        {"policy": {"n": True, "on": True}},
        {"policy": {"n": 1, "on": 1}},
        {"policy": {"n": 2, "on": True}},
    ):
        sync.opa.put_data(f"{POLICY_DATA_ROOT}/cluster/flag", json.dumps(changed))
        found = sync.repair()
        assert found is not None and found.altered == ("data:ostiary_policies/cluster/flag",), changed
        assert sync.opa.get_data(f"{POLICY_DATA_ROOT}/cluster/flag") == {"policy": {"n": 1, "on": True}}
        assert sync.repair() is None


def test_same_json_tells_booleans_from_numbers():
    assert same_json({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert same_json(18446744073709551617, float(18446744073709551617))
    assert not same_json(True, 1) and not same_json(1, True) and not same_json(0, False)
    assert not same_json({"a": 1}, {"a": 1, "b": 1}) and not same_json([1], [1, 1])
    assert not same_json("1", 1) and not same_json(None, False)


def test_many_documents_reach_opa_in_one_write(sync):
    """150 policies added once the library is in OPA: one PUT per document took 25 s on this machine
    (OPA's cost per write grows with all the documents); one write takes well under a second. The
    bound (10 s) holds on a loaded machine and fails the old way of writing by far."""
    documents = [
        document(f"bulk{i:03d}", canonical_json({"policy": {"i": i, "name": f"r/{i}/*"}})) for i in range(150)
    ]
    started = time.monotonic()
    sync.replace_all(documents)
    took = time.monotonic() - started
    assert sync.difference().empty
    assert took < 10, f"150 documents took {took:.1f}s to push"


def test_no_rule_path_runs_through_the_policy_documents(sync):
    """OPA checks every data write against every rule's path and copies, per rule, the data under
    each prefix of that path (CheckPathConflicts): documents under a library package's prefix
    (data.ostiary, before) were copied once per rule on every change (seconds and a hundred MiB at a
    few thousand entries; docs/performance.md). Under their own root no prefix of any package OPA
    holds reaches them, and the library reads them there."""
    spec = {"repositories": [{"name": "registry.example.com/ok/*"}]}
    module = translate(PolicyResource("ostiary.dev/v1", "ClusterImagePolicy", "base", None, spec, "t"))
    sync.replace_all([module])
    _, packages = sync.opa.list_modules()
    assert packages, "the library's packages"
    for package in packages.values():
        parts = package.strip("/").split("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            assert not module.id.startswith(prefix + "/"), f"{module.id} lies under package prefix {prefix}"
    assert sync.opa.get_data(module.id) == json.loads(module.source)
    assert sync.opa.get_data("ostiary/policies") is None
    applicable = sync.opa.get_data("ostiary/main/cluster_policies")
    assert [p["name"] for p in applicable] == ["base"], applicable
