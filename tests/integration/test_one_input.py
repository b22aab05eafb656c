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

from app.admission.input import input_config, opa_input, read_request
from app.admission.review import PLAN_PATH, Reviewer
from app.offline.check import synthetic_inputs, synthetic_requests
from app.opa.client import OpaClient
from tests.integration.helpers import load, reviewer

ROOT = Path(__file__).resolve().parents[2]
POLICY = """
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: all}
spec:
  repositories:
    - name: "*"
      policy: {trust: {enabled: false}}
"""


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
