"""Root pins added while an admission is in flight (issue 20, item 2), through `ostiary serve`.

The repository is signed by publisher A and verified on first use. An attacker stalls the trust
server (the fault proxy holds its answers); meanwhile the operator pins the root to publisher B's
key (rootSecrets added to the policy). The admission in flight then gets its first-use facts: the
decision must deny them, since they were not verified under the pins in force, instead of
admitting the image on the unpinned root. A fresh admission after the change is denied by the
pins themselves.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from tests.support.serve import cluster_policy, deployment_review, stop
from tests.world.test_faults import FaultProxy, serve
from tests.world.test_roots import Publisher
from tests.world.test_roots_pinned import SYSTEM_NS, root_certificate_pem, root_secret

pytestmark = pytest.mark.world


def test_pins_added_while_an_admission_is_in_flight_deny_its_first_use_facts(world, tmp_path) -> None:
    w = world.world
    stamp = time.monotonic_ns()
    a, b = Publisher(w, f"flight-a-{stamp}"), Publisher(w, f"flight-b-{stamp}")
    repo, other = f"roots-flight/app-{stamp}", f"roots-flight/other-{stamp}"
    for name, publisher in ((repo, a), (other, b)):
        img = w.push(name, "v1", seed=name)
        publisher.init(w.gun(name))
        publisher.sign(w.gun(name), "v1", img.digest, img.size)
    b_root = root_certificate_pem(w, other)
    proxy = FaultProxy(world)
    policies = tmp_path / "policies"
    policies.mkdir()
    entry = {"name": f"{world.registry_host}/roots-flight/*", "policy": {"trust": {"enabled": True}}}
    entry["policy"]["trust"]["trustServer"] = proxy.url

    def write_policy(*roots: str) -> None:
        trust = dict(entry["policy"]["trust"], rootSecrets=[{"name": r} for r in roots])
        doc = cluster_policy("flight", [{"name": entry["name"], "policy": {"trust": trust}}])
        (policies / "policy.json").write_text(json.dumps(doc))

    write_policy()
    (policies / "secret.json").write_text(json.dumps(root_secret("hub-root", SYSTEM_NS, b_root)))
    served = serve(tmp_path, policies, world.ca_file)
    try:
        served.wait_ready()
        image = f"{w.gun(repo)}:v1"
        proxy.fault = "hold"
        answers: list[dict] = []
        flight = threading.Thread(target=lambda: answers.append(served.response(deployment_review(image))))
        flight.start()
        deadline = time.monotonic() + 20
        while proxy.held == 0:  # the admission waits on the stalled server
            assert time.monotonic() < deadline, served.tail()
            time.sleep(0.02)
        loads = served.log.read_text().count("loaded 1 policies")
        write_policy("hub-root")  # the operator pins the root meanwhile
        while served.log.read_text().count("loaded 1 policies") == loads:
            assert time.monotonic() < deadline, served.tail()
            time.sleep(0.05)
        proxy.fault = None
        proxy.release.set()  # the server answers: A's root, trusted on first use
        flight.join(30)
        [answer] = answers
        message = (answer.get("status") or {}).get("message", "")
        assert answer["allowed"] is False, "admitted on the unpinned root after pins were added"
        assert "verified on a first-use root" in message, message
        # a new admission is decided under the pins: A's root is not B's
        again = served.response(deployment_review(image))
        assert again["allowed"] is False
        assert "pinned in secret(s) ostiary-system/hub-root" in again["status"]["message"]
    finally:
        stop(served.proc)
        proxy.close()
