"""Property: any policy Ostiary accepts (schema and patterns) compiles in the real OPA and decides
(issue 8 point 9). A policy it refuses is refused with a PolicyError naming the file and field,
never with another exception.

Generated documents cover both kinds, both modes, every trust field, mutateImage, and repository
names drawn from the characters patterns are made of (wildcards, hosts with ports, tags, odd
punctuation), with YAML-hostile values (dates, numbers, booleans) where strings belong.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.admission.input import input_config, opa_input, read_request
from app.opa.client import OpaClient
from app.opa.process import LocalOpa
from app.policies.model import PolicyError
from app.policies.schema import parse_policy_document
from app.policies.sync import PolicySync, library_modules
from app.policies.translate import translate
from tests.integration.helpers import pod_spec, review, workload

DNS = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
PATTERN = st.text(alphabet="abcxyz019.-_/:*@ ", min_size=1, max_size=40)
ODD = st.one_of(st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False), st.dates().map(str))


@st.composite
def policy_document(draw):
    kind = draw(st.sampled_from(["ClusterImagePolicy", "ImagePolicy"]))
    trust = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "enabled": st.one_of(st.booleans(), ODD),
                "trustServer": st.one_of(st.just("https://notary.example.com:4443"), DNS, ODD),
                "signerSecrets": st.lists(st.fixed_dictionaries({"name": st.one_of(DNS, ODD)}), max_size=3),
            },
        )
    )
    entry = {"name": draw(st.one_of(PATTERN, ODD))}
    policy = draw(st.fixed_dictionaries({}, optional={"trust": st.just(trust), "mutateImage": st.booleans()}))
    if policy:
        entry["policy"] = policy
    spec: dict = {
        "repositories": [entry, *draw(st.lists(st.fixed_dictionaries({"name": PATTERN}), max_size=3))]
    }
    if draw(st.booleans()):
        spec["mode"] = draw(st.sampled_from(["enforce", "warn", "audit"]))
    metadata = {"name": draw(DNS)}
    if kind == "ImagePolicy":
        metadata["namespace"] = draw(DNS)
    return {"apiVersion": "ostiary.dev/v1", "kind": kind, "metadata": metadata, "spec": spec}


@pytest.fixture(scope="module")
def sync():
    opa = LocalOpa().start()
    s = PolicySync(OpaClient(opa.url))
    s.set_base(library_modules())
    s.replace_all([])
    yield s
    opa.stop()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=policy_document())
def test_a_schema_valid_policy_translates_compiles_and_decides(sync, doc):
    try:  # the schema, then the pattern checks of the translation
        resource = parse_policy_document(doc, "generated.yaml#0")
        module = translate(resource)
    except PolicyError as exc:
        assert str(exc).startswith("generated.yaml#0: "), exc  # refused, naming the file and field
        return
    sync.compiles(module)  # raises OpaModuleRefused if OPA would not take it
    sync.upsert(module)
    try:
        namespace = resource.namespace or "default"
        request = review(workload("Pod", pod_spec("x"), namespace=namespace), namespace=namespace)["request"]
        document = opa_input(read_request(request), input_config("ostiary-system"))
        answer = sync.opa.query("ostiary/main/plan", document, time.monotonic() + 10)
        assert answer["images"][0]["id"] == 0
    finally:
        sync.remove(module.id)
