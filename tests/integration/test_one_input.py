"""The document OPA reads has one builder (issue 21 item 1): app/admission/input.py.

`ostiary check` evaluates custom rules on synthetic inputs, the benchmark measures OPA's floor on the
plan input, and the tests query OPA directly; each must see exactly what the webhook sends, or a
drift skews them without any test noticing. The first test holds the webhook's own queries (the
Reviewer, with the real OPA answering) to check's documents; the second is the second line: no
other place in the source assembles the document.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

from app import images
from app.admission.input import input_config, opa_input, read_request
from app.admission.review import PLAN_PATH, Reviewer
from app.offline.check import synthetic_inputs, synthetic_requests
from app.opa.client import OpaClient
from tests.integration.helpers import decide, load, pod_spec, review, reviewer, verified_facts, workload

ROOT = Path(__file__).resolve().parents[2]
POLICY = """
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: all}
spec:
  repositories:
    - name: "quay.io/*"
      policy: {trust: {enabled: true}}
    - name: "*"
      policy: {trust: {enabled: false}}
"""
DIGEST = "sha256:" + "d" * 64


class Facts:
    """Verified facts as the verifier reports them (the verifier is tested against real Notary in
    tests/trust and tests/world), for the references the Reviewer hands it."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def gather(self, requests: list, deadline: float) -> list[dict]:
        self.names += [r.image.name for r in requests]
        return [verified_facts(r, DIGEST) for r in requests]


class Recorded:
    """The real OPA client, keeping a copy of each query's input as it was sent."""

    def __init__(self, client: OpaClient):
        self.client = client
        self.inputs: list[tuple[str, dict]] = []

    def query(self, path: str, input: dict, deadline: float) -> object:
        self.inputs.append((path, copy.deepcopy(input)))
        return self.client.query(path, input, deadline)


def _without_facts(document: dict) -> dict:
    document = copy.deepcopy(document)
    for image in document["images"]:
        image.pop("trust", None)
    return document


def test_check_evaluates_custom_rules_on_the_input_the_webhook_sends(local_opa):
    """For every synthetic admission of `ostiary check`, the plan input the Reviewer sends OPA is
    check's document (without the trust facts check adds for its rules to see)."""
    opa = OpaClient(local_opa.url)
    policy_set = load(opa, POLICY)
    recorded = Recorded(opa)
    rv: Reviewer = reviewer(recorded, policy_set, system_namespace="ostiary-system")  # type: ignore[arg-type]
    documents = dict(synthetic_inputs("ostiary-system"))
    assert len(documents) == len(synthetic_requests()) >= 3
    for label, request in synthetic_requests():
        recorded.inputs.clear()
        answer, outcome = rv.review(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}
        )
        assert not outcome.error, outcome.reason
        sent = [document for path, document in recorded.inputs if path == PLAN_PATH]
        assert sent == [_without_facts(documents[label])], label
        assert sent[0] == opa_input(read_request(request), input_config("ostiary-system"))
        assert sent[0]["config"]["trust_servers"], "the config the webhook sends, not a reduced one"


def test_each_image_is_parsed_once_from_extraction_to_the_patch(local_opa, monkeypatch):
    """The reference an image site parsed at extraction is the one the trust request names and the
    patch pins (three parses per image before); a later admission of the same images parses none."""
    opa = OpaClient(local_opa.url)
    facts = Facts()
    rv = reviewer(opa, load(opa, POLICY), trust=facts)
    parsed: list[str] = []
    parse = images._parse
    monkeypatch.setattr(images, "_parse", lambda text: parsed.append(text) or parse(text))
    images._parse_kept.cache_clear()
    body = review(
        workload("Deployment", pod_spec("quay.io/org/app:1.0", "nginx:1.25", "quay.io/org/app:1.0"))
    )
    response = decide(rv, body)
    assert response["allowed"] is True and "patch" in response
    assert facts.names == ["quay.io/org/app", "quay.io/org/app"]
    assert sorted(parsed) == ["nginx:1.25", "quay.io/org/app:1.0"]  # each text once, then kept
    parsed.clear()
    assert decide(rv, review(body["request"]["object"]))["allowed"] is True
    assert parsed == []


# A dict literal that assembles the OPA input document: its `config` member, or its `images`
# list built from image sites. Only app/admission/input.py may hold one.
ASSEMBLY = re.compile(r'"config":\s*\{\s*"system_namespace"|"images":\s*\[[^\]\n]*\.as_input\(\)')


def test_no_second_builder_of_the_input_document():
    builders = []
    for folder in ("app", "scripts", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path == ROOT / "app/admission/input.py" or path == Path(__file__).resolve():
                continue
            if ASSEMBLY.search(path.read_text(encoding="utf-8")):
                builders.append(str(path.relative_to(ROOT)))
    assert builders == [], f"build the OPA input with app.admission.input.opa_input, not in {builders}"
