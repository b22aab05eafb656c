"""OPA belongs to Ostiary: the OPA `ostiary serve` starts answers nobody without Ostiary's token,
and `--opa-token-file` lets Ostiary use an external OPA (the chart's sidecar) guarded the same way.
Everything here is the real `ostiary serve` and the real opa binary."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import requests

from app.opa.process import LocalOpa
from app.policies.sync import library_modules
from tests.integration.test_server import EXAMPLES, OSTIARY, _opa_children, example, served  # noqa: F401 - fixture


def _opa_of(pid: int) -> tuple[str, list[str]]:
    (opa_pid,) = _opa_children(pid)
    argv = Path(f"/proc/{opa_pid}/cmdline").read_bytes().split(b"\0")
    args = [a.decode() for a in argv if a]
    return "http://" + args[args.index("--addr") + 1], args


ATTEMPTS = {
    "list policies": ("GET", "/v1/policies", None),
    "plant a module": (
        "PUT",
        "/v1/policies/planted",
        'package ostiary.custom.planted\n\ndeny contains "x" if true\n',
    ),
    "replace a library module": (
        "PUT",
        "/v1/policies/{library}",
        "package ostiary.admission\n\nallow := true\n",
    ),
    "delete a library module": ("DELETE", "/v1/policies/{library}", None),
    "read data": ("GET", "/v1/data", None),
    "query a decision": ("POST", "/v1/data/ostiary", '{"input": {}}'),
    "write data": ("PUT", "/v1/data/ostiary/planted", "{}"),
    "replace the authz policy": ("PUT", "/v1/policies/authz", "package system.authz\n\nallow := true\n"),
}


@pytest.mark.parametrize(
    "credentials",
    [None, "Bearer not-the-token", "Basic b3N0aWFyeTpvc3RpYXJ5"],
    ids=["no token", "wrong token", "basic auth"],
)
def test_the_opa_ostiary_starts_refuses_everyone_else(served, credentials):  # noqa: F811 - the fixture
    s = served("--policy-dir", str(EXAMPLES / "policies"))
    s.wait_ready()
    opa_url, args = _opa_of(s.proc.pid)
    assert "--authentication=token" in args and "--authorization=basic" in args
    bundle = args[args.index("--bundle") + 1]
    assert not Path(bundle).exists(), "the file holding the token must be gone once OPA has read it"
    library = library_modules()[0].id
    headers = {"Authorization": credentials} if credentials else {}
    for what, (method, path, body) in ATTEMPTS.items():
        r = requests.request(
            method, opa_url + path.format(library=library), data=body, headers=headers, timeout=5
        )
        assert r.status_code == 401, f"{what} without Ostiary's token: {r.status_code} {r.text[:200]}"
    # Ostiary itself still holds exactly its modules and decides
    time.sleep(2.5)  # one watchdog round comparing OPA's modules with Ostiary's
    assert requests.get(s.base + "/readyz", timeout=5).status_code == 200
    assert s.admit(example("deployment-mirror.json")).json()["response"]["allowed"] is True
    assert s.admit(example("deployment-unlisted.json")).json()["response"]["allowed"] is False
    # nothing got in, so nothing had to be repaired (the authz module is OPA's, not drift)
    assert "ostiary_opa_resyncs_total 0.0" in requests.get(s.base + "/metrics", timeout=5).text


def test_a_restarted_local_opa_is_guarded_again(served):  # noqa: F811 - the fixture
    import os
    import signal

    s = served("--policy-dir", str(EXAMPLES / "policies"))
    s.wait_ready()
    first, _ = _opa_of(s.proc.pid)
    (pid,) = _opa_children(s.proc.pid)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            url, _ = _opa_of(s.proc.pid)
        except (ValueError, OSError):  # no OPA child yet, or the killed one gone between list and read
            time.sleep(0.2)
            continue
        if url != first and requests.get(s.base + "/readyz", timeout=5).status_code == 200:
            break
        time.sleep(0.2)
    url, _ = _opa_of(s.proc.pid)
    assert url != first
    assert (
        requests.put(url + "/v1/policies/planted", data="package ostiary.custom.p\n", timeout=5).status_code
        == 401
    )
    assert s.admit(example("deployment-mirror.json")).json()["response"]["allowed"] is True


@pytest.fixture()
def guarded_opa():
    opa = LocalOpa(authenticate=True).start()  # the same guard the chart's sidecar gets
    yield opa
    opa.stop()


def test_an_external_opa_is_used_with_the_token_file(served, guarded_opa, tmp_path):  # noqa: F811 - the fixture
    token_file = tmp_path / "token"
    token_file.write_text(guarded_opa.token + "\n")  # a Secret mounted as a file ends with a newline
    s = served(
        "--policy-dir",
        str(EXAMPLES / "policies"),
        "--opa-url",
        guarded_opa.url,
        "--opa-token-file",
        str(token_file),
    )
    s.wait_ready()
    assert s.admit(example("deployment-mirror.json")).json()["response"]["allowed"] is True
    assert requests.get(guarded_opa.url + "/v1/policies", timeout=5).status_code == 401


def test_a_wrong_or_missing_token_is_unready_with_a_reason_and_denies(served, guarded_opa, tmp_path):  # noqa: F811 - the fixture
    token_file = tmp_path / "token"
    token_file.write_text("not-the-token")
    wrong = served(
        "--policy-dir",
        str(EXAMPLES / "policies"),
        "--opa-url",
        guarded_opa.url,
        "--opa-token-file",
        str(token_file),
    )
    missing = served("--policy-dir", str(EXAMPLES / "policies"), "--opa-url", guarded_opa.url)
    for s, says in ((wrong, "rejected Ostiary's token"), (missing, "requires authentication")):
        s.wait()
        time.sleep(0.5)
        r = requests.get(s.base + "/readyz", timeout=5)
        assert r.status_code == 503 and says in r.json()["reason"], r.text
        denied = s.admit(example("deployment-mirror.json")).json()["response"]
        assert denied["allowed"] is False and says in denied["status"]["message"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--opa-token-file", "{token}"], "--opa-token-file is for --opa-url"),
        (["--opa-url", "http://127.0.0.1:1", "--opa-token-file", "{empty}"], "must hold one token"),
    ],
)
def test_token_file_mistakes_stop_the_start(tmp_path, args, says):
    (tmp_path / "token").write_text("t0ken")
    (tmp_path / "empty").write_text("\n")
    argv = [a.format(token=tmp_path / "token", empty=tmp_path / "empty") for a in args]
    result = subprocess.run(
        [OSTIARY, "serve", "--policy-dir", str(EXAMPLES / "policies"), *argv],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0 and says in result.stderr, result.stderr


def test_a_token_file_fixed_in_place_is_picked_up(served, guarded_opa, tmp_path):  # noqa: F811 - the fixture
    """The token file is a mounted Secret: a rotated (here: corrected) token needs no restart."""
    token_file = tmp_path / "token"
    token_file.write_text("not-the-token")
    s = served(
        "--policy-dir",
        str(EXAMPLES / "policies"),
        "--opa-url",
        guarded_opa.url,
        "--opa-token-file",
        str(token_file),
    )
    s.wait()
    assert requests.get(s.base + "/readyz", timeout=5).status_code == 503
    token_file.write_text(guarded_opa.token + "\n")
    s.wait_ready(timeout=15)
    assert s.admit(example("deployment-mirror.json")).json()["response"]["allowed"] is True
