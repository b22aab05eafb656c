"""Issue 14 through `ostiary serve`: a hostile Notary server (the TLS test server playing one, with the
world's server certificate) answers root.json with many huge unterminated-PEM "certificates", and
targets with a nested release role. Meanwhile /healthz and admissions of another repository, verified
against the real notary-server, answer in normal time; the hostile images are denied with the real
reason. Bounds are generous: a frozen process is the failure.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from tests.support.serve import cluster_policy, deployment_review, stop
from tests.trust.forge import DIGEST_A, DIGEST_B, ForgedRepo
from tests.trust.https_server import NotaryTestServer, ServerKnobs
from tests.trust.test_service_hostile import _hostile_root_keys
from tests.world.test_faults import BUDGET, serve, signed_image

pytestmark = pytest.mark.world

NORMAL = BUDGET + 3.0


@pytest.fixture(scope="module")
def hostile(world, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    world_dir = Path(world.world.dir)
    server = NotaryTestServer(
        str(world_dir / "server.crt"), str(world_dir / "server.key"), ServerKnobs()
    ).start()
    reg = world.registry_host
    evil_root = ForgedRepo(gun=f"{reg}/evil/root")
    evil_root.role_keys["root"] = _hostile_root_keys()
    nested = ForgedRepo(gun=f"{reg}/evil/nested", now=datetime.now(UTC), targets={"v1": DIGEST_A})
    nested.add_delegation("targets/releases", targets={})
    nested.add_delegation("targets/releases/x", targets={"v1": DIGEST_B})
    for repo in (evil_root, nested):
        for role, data in repo.build().items():
            server.knobs.overrides[(repo.gun, role)] = data
    policies = tmp / "policies"
    policies.mkdir()
    (policies / "hostile.json").write_text(
        json.dumps(
            cluster_policy(
                "hostile",
                [
                    {
                        "name": f"{reg}/evil/*",
                        "policy": {"trust": {"enabled": True, "trustServer": server.url}},
                    },
                    {
                        "name": f"{reg}/good/*",
                        "policy": {"trust": {"enabled": True, "trustServer": world.notary_url}},
                    },
                ],
            )
        )
    )
    served = serve(tmp, policies, world.ca_file)
    try:
        served.wait_ready()
        yield world, served
    finally:
        stop(served.proc)
        server.stop()


def test_hostile_root_is_denied_and_others_keep_flowing(hostile) -> None:
    world, served = hostile
    reg = world.registry_host
    good = signed_image(world, "good/app")
    assert served.response(deployment_review(good))["allowed"] is True
    answers: list[dict] = []

    def attack() -> None:
        for _ in range(3):
            answers.append(served.response(deployment_review(f"{reg}/evil/root:latest@sha256:{DIGEST_A}")))

    attacker = threading.Thread(target=attack)
    attacker.start()
    slowest = 0.0
    while attacker.is_alive() or slowest == 0.0:
        started = time.monotonic()
        assert requests.get(f"{served.url}/healthz", timeout=NORMAL).status_code == 200
        assert served.response(deployment_review(good), timeout=NORMAL)["allowed"] is True
        slowest = max(slowest, time.monotonic() - started)
    attacker.join()
    assert slowest < NORMAL
    for answer in answers:
        assert answer["allowed"] is False
        assert "cannot be read" in answer["status"]["message"], answer["status"]["message"]


def test_nested_release_role_is_refused_not_fallen_back(hostile) -> None:
    world, served = hostile
    response = served.response(deployment_review(f"{world.registry_host}/evil/nested:v1"))
    assert response["allowed"] is False, response
    assert "first found in targets/releases/x" in response["status"]["message"], response["status"]["message"]
