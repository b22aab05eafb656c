"""Readiness tells the truth (`ostiary serve --policy-dir`, real OPA): /readyz is 200 only when OPA
holds the library, every policy and every custom module asked for and the last load succeeded.
A custom module OPA refuses, a policy that crashes the translator or a lost OPA make it 503 with
the reason, at start and later; a failed reload keeps deciding with the last good set, says so,
and nothing is ever half-loaded."""

from __future__ import annotations

import shutil
import subprocess
import time

import requests

from app.opa.process import find_opa
from tests.integration.test_server import EXAMPLES, example, free_port, served  # noqa: F401 - fixture
from tests.support.procs import die_with_parent

NO_BUSYBOX = """package ostiary.custom.nobusybox

deny contains msg if {
\tsome image in input.images
\tcontains(image.image, "busybox")
\tmsg := sprintf("busybox is not wanted here: %s", [image.image])
}
"""
NOTHING = """package ostiary.custom.nobusybox

deny contains msg if {
\tsome image in input.images
\tcontains(image.image, "never-this-image")
\tmsg := "never"
}
"""
REFUSED = """package ostiary.custom.nobusybox

deny contains msg if {
\tmsg := no_such_function(1)
}
"""
CRASH = """apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: crash-the-translator}
spec: {repositories: [{name: 'quay.io/*'}]}
"""
# A translator bug, injected into the served process only: any exception but a PolicyError.
INJECT = """import app.policies.directory as directory

_real = directory.translate


def translate(resource):
    if resource.name == "crash-the-translator":
        raise RuntimeError("translator bug injected by the test")
    return _real(resource)


directory.translate = translate
"""


def _readyz(s) -> tuple[int, str]:
    r = requests.get(s.base + "/readyz", timeout=5)
    return r.status_code, r.json()["reason"]


def _until(s, status: int, timeout: float = 15.0) -> str:
    end = time.monotonic() + timeout
    code, why = _readyz(s)
    while code != status and time.monotonic() < end:
        time.sleep(0.2)
        code, why = _readyz(s)
    assert code == status, f"/readyz stayed {code}: {why}"
    return why


def _verdict(s, name: str) -> tuple[bool, str]:
    response = s.admit(example(name)).json()["response"]
    return response["allowed"], (response.get("status") or {}).get("message", "")


def _policies(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(EXAMPLES / "policies", policies)
    return policies


def test_a_custom_module_opa_refuses_at_start_is_unready_and_denies(served, tmp_path):  # noqa: F811 - the fixture
    rego = tmp_path / "rego"
    rego.mkdir()
    (rego / "nobusybox.rego").write_text(REFUSED)
    s = served("--policy-dir", str(_policies(tmp_path)), "--rego-dir", str(rego))
    s.wait()
    for _ in range(10):  # and it stays so (no later round pretends the rest is enough)
        code, why = _readyz(s)
        assert code == 503 and "ostiary/custom/nobusybox" in why and "no_such_function" in why, why
        time.sleep(0.3)
    allowed, message = _verdict(s, "deployment-mirror.json")
    assert allowed is False and "not ready" in message and "no_such_function" in message
    (rego / "nobusybox.rego").write_text(NO_BUSYBOX)  # fixed: everything comes into force at once
    _until(s, 200)
    allowed, message = _verdict(s, "deployment-mirror.json")
    assert allowed is False and "busybox is not wanted here" in message
    assert _verdict(s, "deployment-sandbox.json")[0] is True


def test_a_custom_module_refused_later_keeps_the_last_good_set_and_says_so(served, tmp_path):  # noqa: F811 - the fixture
    rego = tmp_path / "rego"
    rego.mkdir()
    (rego / "nobusybox.rego").write_text(NO_BUSYBOX)
    s = served("--policy-dir", str(_policies(tmp_path)), "--rego-dir", str(rego))
    s.wait_ready()
    (rego / "nobusybox.rego").write_text(REFUSED)
    why = _until(s, 503)
    assert "no_such_function" in why and "last good set" in why, why
    allowed, message = _verdict(s, "deployment-mirror.json")  # the old custom module still decides
    assert allowed is False and "busybox is not wanted here" in message
    assert _verdict(s, "deployment-sandbox.json")[0] is True
    (rego / "nobusybox.rego").write_text(NOTHING)
    _until(s, 200)
    assert _verdict(s, "deployment-mirror.json")[0] is True


def _with_translator_bug(monkeypatch, tmp_path, served, policies):  # noqa: F811 - the fixture, passed on
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(INJECT)
    monkeypatch.setenv("PYTHONPATH", str(inject))
    s = served("--policy-dir", str(policies))
    monkeypatch.delenv("PYTHONPATH")
    return s


def test_a_policy_that_crashes_the_translator_at_start_is_unready_with_the_reason(
    served,  # noqa: F811 - the fixture
    monkeypatch,
    tmp_path,
):
    policies = _policies(tmp_path)
    (policies / "crash.yaml").write_text(CRASH)
    s = _with_translator_bug(monkeypatch, tmp_path, served, policies)
    s.wait()  # the server is up (it does not die with the translator) ...
    time.sleep(1)
    code, why = _readyz(s)  # ... and says what is wrong
    assert code == 503 and "translator bug injected by the test" in why, why
    allowed, message = _verdict(s, "deployment-mirror.json")
    assert allowed is False and "not ready" in message
    (policies / "crash.yaml").unlink()
    _until(s, 200)
    assert _verdict(s, "deployment-mirror.json")[0] is True


def test_a_policy_that_crashes_the_translator_later_keeps_the_last_good_set(served, monkeypatch, tmp_path):  # noqa: F811 - the fixture
    policies = _policies(tmp_path)
    s = _with_translator_bug(monkeypatch, tmp_path, served, policies)
    s.wait_ready()
    (policies / "crash.yaml").write_text(CRASH)
    why = _until(s, 503)
    assert "translator bug injected by the test" in why and "last good set" in why, why
    assert _verdict(s, "deployment-mirror.json")[0] is True  # the last good set decides
    assert _verdict(s, "deployment-unlisted.json")[0] is False
    (policies / "crash.yaml").unlink()
    _until(s, 200)


def _opa_on(port: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            find_opa(),
            "run",
            "--server",
            "--skip-version-check",
            "--addr",
            f"127.0.0.1:{port}",
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl
    )


def test_a_lost_opa_is_unready_with_the_reason_at_start_and_later(served):  # noqa: F811 - the fixture
    port = free_port()
    s = served("--policy-dir", str(EXAMPLES / "policies"), "--opa-url", f"http://127.0.0.1:{port}")
    s.wait()
    code, why = _readyz(s)
    assert code == 503 and f"127.0.0.1:{port}" in why and "unreachable" in why, why
    assert _verdict(s, "deployment-mirror.json")[0] is False
    opa = _opa_on(port)
    try:
        _until(s, 200)  # OPA came: everything is pushed, then ready
        assert _verdict(s, "deployment-mirror.json")[0] is True
        opa.kill()
        opa.wait()
        why = _until(s, 503)
        assert f"127.0.0.1:{port}" in why, why
        assert _verdict(s, "deployment-mirror.json")[0] is False
        opa = _opa_on(port)  # back, empty: refilled, then ready again
        _until(s, 200)
        assert _verdict(s, "deployment-mirror.json")[0] is True
    finally:
        opa.kill()
        opa.wait()


def test_readyz_answers_with_the_reason_while_opa_is_stopped_under_load(served, tmp_path):  # noqa: F811 - the fixture
    """OPA stopped (SIGSTOP: it accepts connections and never answers) while 16 clients keep
    sending admissions that each wait on it: every /readyz is still answered, within a bound far
    below an admission's budget, and turns 503 naming OPA. (Before: no answer for ~11 s, every
    request thread waiting on OPA.)"""
    import os
    import signal
    import threading

    from tests.integration.test_server import _opa_children

    # decisions to a file: the fixture never reads the process's stdout, whose pipe would fill
    s = served(
        "--policy-dir", str(_policies(tmp_path)), "--budget", "8", "--decision-log", str(tmp_path / "d.log")
    )
    s.wait_ready()
    (opa_pid,) = _opa_children(s.proc.pid)
    stop = threading.Event()
    verdicts: list[bool] = []

    def client() -> None:
        body = example("deployment-sandbox.json")
        while not stop.is_set():
            try:
                verdicts.append(s.admit(body).json()["response"]["allowed"])
            except requests.RequestException:
                pass

    clients = [threading.Thread(target=client, daemon=True) for _ in range(16)]
    os.kill(opa_pid, signal.SIGSTOP)
    try:
        for t in clients:
            t.start()
        answers = []
        stopped_at = time.monotonic()
        while time.monotonic() - stopped_at < 12:
            asked = time.monotonic()
            try:
                r = requests.get(s.base + "/readyz", timeout=6)
            except requests.RequestException as exc:
                raise AssertionError(
                    f"/readyz gave no answer within 6 s, OPA stopped {asked - stopped_at:.1f} s ago: {exc}"
                ) from None
            answers.append((asked - stopped_at, time.monotonic() - asked, r.status_code, r.json()["reason"]))
            time.sleep(0.2)
    finally:
        stop.set()
        while_stopped = list(verdicts)
        os.kill(opa_pid, signal.SIGCONT)
    for t in clients:
        t.join(20)
    late = [a for a in answers if a[0] > 6]
    assert late and all(code == 503 and "OPA" in why for _, _, code, why in late), answers
    assert while_stopped and True not in while_stopped  # fail closed meanwhile, and answered
    _until(s, 200, timeout=30)  # and it heals
