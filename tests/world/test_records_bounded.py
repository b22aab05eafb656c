"""Durable trust records from outside (issue 20, item 9), through `ostiary serve --state-dir`.

Anyone who can reach /admit can send an AdmissionReview naming repositories: a dry run
(`request.dryRun: true`, which the webhook registration promises has no side effects) must leave
no record, and the records a caller can make are bounded (`--max-trust-records`): beyond the
limit a repository used for the first time is denied, saying so, while recorded ones keep being
admitted; the count and the refusals are metrics.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from app.notary.state import FileRecordStore
from tests.support.serve import cluster_policy, deployment_review, stop
from tests.world.test_faults import signed_image
from tests.world.test_roots import start

pytestmark = pytest.mark.world


def dry(body: dict) -> dict:
    body["request"]["dryRun"] = True
    return body


def test_dry_runs_write_nothing_and_records_are_capped(world, tmp_path) -> None:
    stamp = time.monotonic_ns()
    images = [signed_image(world, f"records-{stamp}/app{i}") for i in range(3)]
    policies = tmp_path / "policies"
    policies.mkdir()
    trust = {"trust": {"enabled": True, "trustServer": world.notary_url}}
    doc = cluster_policy("records", [{"name": f"{world.registry_host}/records-{stamp}/*", "policy": trust}])
    (policies / "policy.json").write_text(json.dumps(doc))
    state = tmp_path / "state"
    served = start(tmp_path, policies, world.ca_file, state, "--max-trust-records", "2")
    store = FileRecordStore(state)
    try:
        # a dry run is verified and answered like any admission, and writes nothing
        for _ in range(3):
            answer = served.response(dry(deployment_review(images[0])))
            assert answer["allowed"] is True, answer
        assert store.records() == []
        # the real admission records the first use
        assert served.response(deployment_review(images[0]))["allowed"] is True
        assert [r.gun for r in store.records()] == [images[0].rsplit(":", 1)[0]]
        assert served.response(deployment_review(images[1]))["allowed"] is True
        assert len(store.records()) == 2
        # full: a third repository is denied, naming the limit, and nothing is written
        refused = served.response(deployment_review(images[2]))
        assert refused["allowed"] is False
        assert "--max-trust-records 2" in refused["status"]["message"], refused
        assert len(store.records()) == 2
        # recorded repositories are still admitted
        assert served.response(deployment_review(images[0]))["allowed"] is True
        metrics = requests.get(f"{served.url}/metrics", timeout=10).text
        assert "ostiary_trust_records 2.0" in metrics
        assert "ostiary_trust_records_refused_total 1.0" in metrics
    finally:
        stop(served.proc)
