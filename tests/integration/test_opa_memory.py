"""OPA cannot be killed, again and again, by what Ostiary pushes (issue 27 item 4): real `ostiary serve`
and a real OPA sidecar run the way the chart runs it — its own process under a memory limit that
really kills it (a memory cgroup, as the kubelet sets for the container's resources.limits.memory),
GOGC and GOMEMLIMIT set in the chart's proportions, restarted when it dies, like the kubelet does.

- a set over the push budget is never pushed: OPA keeps the last set, /readyz and the metrics say why;
- a set that fits a deliberately too large budget but kills OPA is pushed at most a few times:
  Ostiary then keeps the last set that fitted, OPA stays up and decides, /readyz and the metrics say
  why, and removing the cause brings the new policies in.

OPA runs with the chart's arguments that bear on memory (--optimize-store-for-read-speed: policy
documents kept as AST values, about 7 MiB per 1,000 entries; without it about a third of that, and
30,000 entries did not kill this OPA), GOGC and GOMEMLIMIT.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import requests

from tests.e2e.cluster import Process, start_process, tool
from tests.integration.test_policy_isolation import CLUSTER, GOOD_TENANT, _many, _readyz, _verdict
from tests.integration.test_server import free_port, served  # noqa: F401 - fixture

CGROUP = Path("/sys/fs/cgroup")
BIG = 30  # namespaces of 500 entries that kill the sidecar below (about 5.5 MB of policy data)


def _memory_cgroup(limit: int) -> Path:
    """A fresh memory cgroup limited to `limit` bytes (v2 memory.max, or v1 memory.limit_in_bytes)."""
    if os.geteuid() != 0:
        raise AssertionError("this test needs root to create a memory cgroup (run the suite as root)")
    name = f"ostiary-test-{uuid.uuid4().hex[:8]}"
    controllers = CGROUP / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        path = CGROUP / name
        path.mkdir()
        (path / "memory.max").write_text(str(limit))
        (path / "memory.swap.max").write_text("0")
        return path
    path = CGROUP / "memory" / name
    path.mkdir()
    (path / "memory.limit_in_bytes").write_text(str(limit))
    with contextlib.suppress(OSError):  # charge what OPA allocated before it joined
        (path / "memory.move_charge_at_immigrate").write_text("3")
    return path


class Sidecar:
    """OPA in a memory cgroup, killed when its liveness probe fails (GET /health, 1 s timeout, 3
    failures in a row: the chart's probe, every `period` seconds; the chart's is 10) and restarted
    when it dies: what the kubelet does for the chart's sidecar. Near its memory limit, an OPA with
    GOMEMLIMIT may collect garbage without end rather than be OOM-killed; the probe kills it then."""

    def __init__(self, workdir: Path, limit: int, gomemlimit: str, period: float = 3.0):
        self.workdir = workdir
        self.cgroup = _memory_cgroup(limit)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"GOGC": "400", "GOMEMLIMIT": gomemlimit}  # the chart's opa.gogc, opa.goMemLimit
        self.restarts = 0
        self.liveness_kills = 0
        self.period = period
        self.proc: Process | None = None
        self._stop = threading.Event()
        self._start()
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        self._thread.start()

    def _start(self) -> None:
        argv = [tool("opa"), "run", "--server", f"--addr=127.0.0.1:{self.port}", "--log-level=error"]
        argv.append("--optimize-store-for-read-speed")  # the chart's (helm/ostiary/templates/deployment.yaml)
        self.proc = start_process("opa", [*argv, "--skip-version-check"], self.workdir, env=self.env)
        (self.cgroup / "cgroup.procs").write_text(str(self.proc.popen.pid))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.proc.popen.poll() is None:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1):
                    return
            except OSError:
                time.sleep(0.05)

    def _supervise(self) -> None:
        failures, next_probe = 0, time.monotonic() + self.period
        while not self._stop.is_set():
            assert self.proc is not None
            if self.proc.popen.poll() is not None and not self._stop.is_set():
                self.restarts += 1
                time.sleep(0.5)
                self._start()
                failures, next_probe = 0, time.monotonic() + self.period
            if time.monotonic() >= next_probe:
                next_probe = time.monotonic() + self.period
                try:
                    with urllib.request.urlopen(self.url + "/health", timeout=1):
                        failures = 0
                except OSError:
                    failures += 1
                if failures >= 3:
                    self.liveness_kills += 1
                    self.proc.popen.kill()
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        if self.proc is not None:
            self.proc.stop(grace=2)
        for _ in range(50):
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()
                return
            time.sleep(0.1)


@pytest.fixture
def sidecar(tmp_path):
    # 100 MiB with GOMEMLIMIT 80 MiB (the chart: 256Mi, 200MiB). It holds the library and a few
    # policies; 2.4 MB of policy Rego pushed one module at a time got it OOM-killed (docs/security.md).
    opa = Sidecar(tmp_path, 100 * 2**20, "80MiB")
    yield opa
    opa.stop()


def _metric(s, name: str) -> float:
    for line in requests.get(s.base + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no metric {name}")


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what} not within {timeout}s (last: {last!r})")


def _opa_holds(url: str, fragment: str) -> bool:
    """Whether OPA holds `fragment` in a module or in the policy documents (app/policies/sync.py)."""
    for path in ("/v1/policies", "/v1/data/ostiary_policies"):
        with urllib.request.urlopen(url + path, timeout=30) as response:
            if fragment in response.read().decode():
                return True
    return False


def test_a_set_over_the_push_budget_is_never_pushed(served, tmp_path, sidecar):  # noqa: F811 - the fixture
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "cluster.yaml").write_text(CLUSTER)
    (policies / "good.yaml").write_text(GOOD_TENANT)
    s = served(
        "--policy-dir", str(policies), "--opa-url", sidecar.url,
        "--opa-push-budget", "300000", "--max-policy-bytes", "290000", "--max-namespace-policy-bytes", "290000",
    )  # fmt: skip
    s.wait_ready()
    assert _verdict(s, "team-good", "quay.io/good/app:1")[0]
    # 500 entries: about 275 KB of policy data, within the policy bounds; with the 49 KB library, over
    # the budget.
    (policies / "big.yaml").write_text(_many(500, namespace="team-big"))
    reason = _wait(lambda: "held back" in _readyz(s)[1] and _readyz(s)[1], 30, "held back in /readyz")
    assert "over the budget of 300000 bytes" in reason and "--opa-push-budget" in reason, reason
    assert _readyz(s)[0] == 200  # the last set that fitted is in force
    assert not _opa_holds(sidecar.url, "team-big") and _opa_holds(sidecar.url, "team-good")
    assert _metric(s, "ostiary_opa_push_held_back") == 1.0
    assert _verdict(s, "team-good", "quay.io/good/app:1")[0]
    assert sidecar.restarts == 0
    # The cause removed: the new set goes in.
    (policies / "big.yaml").write_text(_many(20, namespace="team-big"))
    _wait(lambda: _readyz(s) == (200, "ready"), 30, "ready again")
    assert _opa_holds(sidecar.url, "team-big") and _metric(s, "ostiary_opa_push_held_back") == 0.0


def test_a_set_that_kills_opa_is_not_pushed_again_and_again(served, tmp_path, sidecar):  # noqa: F811 - the fixture
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "cluster.yaml").write_text(CLUSTER)
    (policies / "good.yaml").write_text(GOOD_TENANT)
    # An operator raised the bounds and the budget beyond what this OPA's memory holds.
    s = served(
        "--policy-dir", str(policies), "--opa-url", sidecar.url, "--opa-push-budget", "20000000",
        "--max-policy-bytes", "20000000", "--max-namespace-policy-bytes", "1000000",
    )  # fmt: skip
    s.wait_ready()
    assert _verdict(s, "team-good", "quay.io/good/app:1")[0]
    # BIG namespaces of 500 entries each: about 275 KB of policy data each, within the bounds given;
    # some 7 MiB of OPA's read-optimised store per 1,000 entries, well over this OPA's 100 MiB.
    for i in range(BIG):
        (policies / f"big{i}.yaml").write_text(_many(500, namespace=f"team-big{i}"))
    try:
        reason = _wait(lambda: "held back" in _readyz(s)[1] and _readyz(s)[1], 180, "held back in /readyz")
    except AssertionError as exc:
        s.stop()
        raise AssertionError(
            f"{exc}; OPA restarts {sidecar.restarts}:\n{s.proc.stdout.read()[-8000:]}"
        ) from None
    print(f"\nOPA restarts: {sidecar.restarts} ({sidecar.liveness_kills} by the liveness probe)")
    deaths = _metric(s, "ostiary_opa_push_deaths_total")
    if not ("OPA died" in reason and 2 <= sidecar.restarts <= 3 and deaths >= 2):  # say what happened
        s.stop()
        raise AssertionError(
            f"{reason}; restarts {sidecar.restarts}, deaths {deaths}:\n{s.proc.stdout.read()[-6000:]}"
        )
    assert _metric(s, "ostiary_opa_push_held_back") == 1.0
    # No loop: OPA stays up with the last set that fitted, and it decides.
    restarts = sidecar.restarts
    _wait(lambda: _opa_holds(sidecar.url, "team-good"), 30, "the last set that fitted back in OPA")
    time.sleep(15)
    assert sidecar.restarts == restarts, "OPA keeps being killed"
    assert not _opa_holds(sidecar.url, "team-big")
    assert _verdict(s, "team-good", "quay.io/good/app:1")[0]
    assert _verdict(s, "team-big1", "registry1.example.com/team1/app-x:1")[0] is False
    status, reason = _readyz(s)
    assert status == 200 and "held back" in reason and "OPA died" in reason, reason
    # The cause removed (all but two big policies deleted): the new set goes in and OPA lives.
    for i in range(2, BIG):
        (policies / f"big{i}.yaml").unlink()
    _wait(lambda: _readyz(s) == (200, "ready"), 60, "ready again")
    assert _opa_holds(sidecar.url, "team-big1") and _metric(s, "ostiary_opa_push_held_back") == 0.0
    assert _verdict(s, "team-big1", "registry1.example.com/team1/app-x:1")[0] is True
    time.sleep(3)
    assert sidecar.restarts == restarts
