"""Faults fail closed and heal, with the real parts: `ostiary serve` (a subprocess with its own
OPA), the real notary-server of the test world, and a fault-injecting TLS proxy between them.

The proxy terminates TLS with the world's own server certificate (so Ostiary's --ca-file trusts it)
and forwards each request to the real notary-server, unless a fault is switched on:

- ``5xx``: answers 503 to every request;
- ``reset``: closes the connection (with RST) as soon as the request has been read;
- ``truncate``: forwards the real status and headers, then half of the body, then closes;
- ``stall``: reads the request and says nothing for 30 s.

For every fault, an image that is signed (and admitted when nothing is wrong) is denied with a
reason, well within the admission budget, never allowed; once the fault is switched off, the same
image is admitted again (after the failure memory has passed). Each image is first seen under a
fault, so no cached verification can answer for it.

Also here: a local OPA killed while a policy reload is being pushed, and the gunicorn worker
killed under load: answers in between are denials or transport errors, never an allow of an
image the policies forbid, and everything comes back.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Self

import pytest
import requests

from tests.support.faultproxy import FaultProxy
from tests.support.serve import Ostiary, cluster_policy, deployment_review, start, stop

pytestmark = pytest.mark.world

BUDGET = 4.0  # --budget given to ostiary serve in these tests


def serve(tmp: Path, policy_dir: Path, ca_file: str) -> Ostiary:
    """`ostiary serve` trusting the world's CA, with these tests' --budget (not waited for)."""
    return start(tmp, policy_dir, "--ca-file", ca_file, "--budget", str(BUDGET))


@pytest.fixture(scope="module")
def proxied(world, tmp_path_factory):
    """ostiary serve whose policy sends REG/faults/* through the fault proxy."""
    tmp = tmp_path_factory.mktemp("faults")
    proxy = FaultProxy(world)
    policies = tmp / "policies"
    policies.mkdir()
    reg = world.registry_host
    (policies / "faults.json").write_text(
        json.dumps(
            cluster_policy(
                "faults",
                [
                    {
                        "name": f"{reg}/faults/*",
                        "policy": {"trust": {"enabled": True, "trustServer": proxy.url}},
                    },
                ],
            )
        )
    )
    served = serve(tmp, policies, world.ca_file)
    try:
        served.wait_ready()
        yield world, proxy, served
    finally:
        stop(served.proc)
        proxy.close()


def signed_image(world, repo: str) -> str:
    img = world.world.push(repo, "v1", seed=repo)
    world.world.sign(repo, "v1", img.digest, img.size)
    return f"{world.registry_host}/{repo}:v1"


@pytest.mark.parametrize("fault", ["5xx", "reset", "truncate", "stall"])
def test_a_failing_notary_server_means_denial_within_the_budget_and_heals(proxied, fault):
    world, proxy, served = proxied
    image = signed_image(world, f"faults/{fault}-{uuid.uuid4().hex[:6]}")
    proxy.fault = fault
    try:
        seen_before = proxy.seen
        started = time.monotonic()
        response = served.response(deployment_review(image))
        elapsed = time.monotonic() - started
        assert response["allowed"] is False, response
        message = response["status"]["message"]
        assert image in message, message
        assert proxy.seen > seen_before, "the trust server was never asked"
        assert elapsed < BUDGET + 3, f"{fault}: answered after {elapsed:.1f}s (budget {BUDGET}s)"
        # while the fault lasts, no admission of the image is allowed
        for _ in range(3):
            assert served.response(deployment_review(image))["allowed"] is False
    finally:
        proxy.fault = None
    deadline = time.monotonic() + 30  # the failure memory (a few seconds) must pass first
    while True:
        response = served.response(deployment_review(image))
        if response["allowed"]:
            break
        assert time.monotonic() < deadline, f"{fault}: not admitted again after the fault: {response}"
        time.sleep(0.5)
    assert response.get("patch"), "an admitted signed image is pinned"


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


@pytest.fixture()
def plain(world, tmp_path):
    """ostiary serve with a policy admitting REG/open/* without trust, and nothing else."""
    policies = tmp_path / "policies"
    policies.mkdir()
    reg = world.registry_host
    (policies / "open.json").write_text(
        json.dumps(cluster_policy("open", [{"name": f"{reg}/open/*", "policy": {}}]))
    )
    served = serve(tmp_path, policies, world.ca_file)
    try:
        served.wait_ready()
        yield world, served, policies
    finally:
        stop(served.proc)


class Hammer:
    """Threads sending admissions of images the policies forbid, counting any allow."""

    def __init__(self, served: Ostiary, images: list[str]) -> None:
        self.served, self.images = served, images
        self.allowed: list[str] = []
        self.denied = self.errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(3)]

    def __enter__(self) -> Self:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=40)

    def _run(self) -> None:
        http = requests.Session()
        while not self._stop.is_set():
            for image in self.images:
                try:
                    r = http.post(f"{self.served.url}/admit", json=deployment_review(image), timeout=30)
                    if r.status_code == 200 and r.json()["response"]["allowed"]:
                        self.allowed.append(image)
                    elif r.status_code == 200:
                        self.denied += 1
                    else:
                        self.errors += 1
                except requests.RequestException:
                    self.errors += 1
                    time.sleep(0.05)


def test_opa_killed_while_a_reload_is_pushed_never_admits_a_forbidden_image_and_recovers(plain):
    world, served, policies = plain
    reg = world.registry_host
    forbidden = [f"{reg}/closed/app:v1", f"{reg}/soon/app:v1"]
    (opa_pid,) = [p for p in _tree(served.proc.pid) if _comm(p) == "opa"]
    with Hammer(served, forbidden) as hammer:
        # a reload with many modules, so OPA dies while they are being pushed
        for i in range(150):
            (policies / f"bulk-{i:03d}.json").write_text(
                json.dumps(
                    cluster_policy(
                        f"bulk-{i:03d}",
                        [{"name": f"{reg}/bulk{i}/*", "policy": {"trust": {"enabled": True}}}],
                    )
                )
            )
        time.sleep(2.2)  # the watchdog looks every 2 s
        os.kill(opa_pid, signal.SIGKILL)
        # /readyz answers from a probe's state (app/runtime.py): wait until it has seen the kill
        # (the process may take a moment to die) before waiting for the recovery
        deadline = time.monotonic() + 10
        while requests.get(f"{served.url}/readyz", timeout=5).status_code == 200:
            assert time.monotonic() < deadline, "the readiness probe never saw OPA killed"
            time.sleep(0.05)
        # OPA is restarted within ~2 s and the last set put back; 30 s leaves room for a loaded
        # machine. (It took 30-80 s while each policy document was a PUT of its own: OPA's cost per
        # write grows with all the documents, app/policies/sync.py _write_documents.)
        killed = time.monotonic()
        served.wait_ready(30)
        print(f"ready again {time.monotonic() - killed:.1f}s after the kill was seen")
        time.sleep(1)
    assert hammer.allowed == [], f"forbidden images were admitted: {hammer.allowed[:5]}"
    assert hammer.denied > 0
    # everything comes back: the old policy still admits, and the reload OPA's death interrupted
    # is retried until the 150 new policies are in force (their images then need trust)
    assert served.response(deployment_review(f"{reg}/open/app:v1"))["allowed"] is True
    deadline = time.monotonic() + 30
    while True:
        denied = served.response(deployment_review(f"{reg}/bulk149/app:v1"))
        assert denied["allowed"] is False, denied
        if "no repository entry" not in denied["status"]["message"]:
            break
        assert time.monotonic() < deadline, f"the interrupted reload was not retried:\n{served.tail()}"
        time.sleep(0.5)


def test_a_killed_worker_is_replaced_and_no_forbidden_image_is_admitted_meanwhile(plain):
    world, served, _ = plain
    reg = world.registry_host
    workers = [p for p in _children(served.proc.pid) if _comm(p) != "opa"]
    assert workers, f"no worker process under {served.proc.pid}"
    with Hammer(served, [f"{reg}/closed/app:v1"]) as hammer:
        time.sleep(0.5)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        time.sleep(1)
        served.wait_ready(60)
        time.sleep(1)
    assert hammer.allowed == []
    assert served.proc.poll() is None, "the server itself must survive a worker's death"
    assert served.response(deployment_review(f"{reg}/open/app:v1"))["allowed"] is True
    assert set(_children(served.proc.pid)) != set(workers)


def _probes_while(served, busy, seconds: float = 10.0) -> list[tuple[str, float, int, str, float]]:
    """Ask /readyz and /healthz every 0.2 s for `seconds` while `busy` clients keep every request
    thread waiting: (path, seconds to answer, status, reason, seconds since the load began). A
    probe not answered within 1 s fails the test."""
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                requests.post(f"{served.url}/admit", json=busy(), timeout=30)
            except requests.RequestException:
                pass

    clients = [threading.Thread(target=client, daemon=True) for _ in range(16)]
    answers = []
    try:
        for t in clients:
            t.start()
        time.sleep(1.0)  # every thread is taken by now
        begin = time.monotonic()
        while time.monotonic() - begin < seconds:
            for path in ("/readyz", "/healthz"):
                asked = time.monotonic()
                try:
                    r = requests.get(served.url + path, timeout=1.0)
                except requests.RequestException as exc:
                    raise AssertionError(
                        f"{path} gave no answer within 1 s ({asked - begin:.1f} s in): {exc}\n{answers}"
                    ) from None
                body = r.json()
                why = body.get("reason") or body.get("status")
                answers.append((path, time.monotonic() - asked, r.status_code, why, asked - begin))
            time.sleep(0.2)
    finally:
        stop.set()
        for t in clients:
            t.join(35)
    return answers


def test_probes_answer_within_a_second_while_every_thread_waits_on_a_stalled_trust_server(proxied):
    """16 clients admit images whose trust server (the real notary-server behind the proxy) takes
    every request and never answers: /readyz and /healthz still answer within a second, with the
    reason, and the admissions are denials."""
    world, proxy, served = proxied
    reg = world.registry_host
    proxy.fault = "stall"
    try:
        answers = _probes_while(
            served, lambda: deployment_review(f"{reg}/faults/load-{uuid.uuid4().hex[:8]}:v1")
        )
    finally:
        proxy.fault = None
    assert {path for path, *_ in answers} == {"/readyz", "/healthz"}
    assert all(code == 200 and why for _, _, code, why, _ in answers), answers
    print(f"\nslowest probe: {max(a[1] for a in answers):.2f} s of {len(answers)}")


def test_probes_answer_within_a_second_while_every_thread_waits_on_a_stopped_opa(plain):
    """OPA stopped (SIGSTOP: it takes connections and never answers) under 16 clients: /readyz
    answers within a second, turning 503 and naming OPA; /healthz answers too."""
    world, served, _ = plain
    opa = [p for p in _tree(served.proc.pid) if _comm(p) == "opa"]
    assert opa, "no local OPA under ostiary serve"
    for pid in opa:
        os.kill(pid, signal.SIGSTOP)
    try:
        answers = _probes_while(served, lambda: deployment_review(f"{world.registry_host}/open/app:1"))
    finally:
        for pid in opa:
            os.kill(pid, signal.SIGCONT)
    # the probe finds OPA silent within its 2 s timeout (app/runtime.py); from then on 503 naming it
    late = [a for a in answers if a[0] == "/readyz" and a[4] > 4]
    assert late and all(code == 503 and "OPA" in why for _, _, code, why, _ in late), answers
    assert all(code == 200 for path, _, code, _, _ in answers if path == "/healthz"), answers
    print(f"\nslowest probe: {max(a[1] for a in answers):.2f} s of {len(answers)}")
    served.wait_ready(30)  # and it heals
