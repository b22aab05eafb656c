"""The readiness probe reads a marker of the set OPA holds instead of OPA's whole state twice a second
(app/policies/sync.py "The marker", app/supervise.py), and still never says ready while OPA does
not hold Ostiary's set.

`ostiary serve --opa-url` against a real OPA started as the chart's sidecar is (token
authentication, app/opa/process.py's authz bundle), on a port of the test's choosing so it can be
restarted empty on the same one. Where the test must see or steer what Ostiary asks OPA, a small
HTTP proxy of the test's own stands between them (OPA is plain HTTP on loopback): it counts the
requests, can point at another OPA from one request to the next (an OPA restarted entirely between
two probes: its /health never failed), and can hold writes back (the set cannot be pushed back
yet, as with a slow OPA).
"""

from __future__ import annotations

import collections
import http.client
import http.server
import json
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

from app.opa.process import find_opa, write_authz_bundle
from app.supervise import FULL_CHECK_INTERVAL
from tests.integration.test_server import EXAMPLES, free_port, served  # noqa: F401 - fixture
from tests.support.procs import die_with_parent

TOKEN = "readiness-marker-test-token"
PLANTED = 'package ostiary.planted\n\nplanted := "by a token holder"\n'
MARK = "added_by_a_token_holder"  # a member added to a policy document in place


class Opa:
    """A real OPA on a fixed port with token authentication; restartable empty on the same port."""

    def __init__(self, tmp_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.bundle = tmp_path / f"authz-{self.port}"
        if not self.bundle.exists():
            write_authz_bundle(self.bundle, TOKEN)
        self.proc: subprocess.Popen | None = None

    def start(self) -> Opa:
        self.proc = subprocess.Popen(
            [
                find_opa(),
                "run",
                "--server",
                "--skip-version-check",
                "--addr",
                f"127.0.0.1:{self.port}",
                "--log-level",
                "error",
                "--authentication=token",
                "--authorization=basic",
                "--bundle",
                str(self.bundle),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl
        )
        return self

    def healthy(self, timeout: float = 20.0) -> float:
        """Wait until it answers /health; returns when (time.monotonic())."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                if self.call("GET", "/health", timeout=0.5).status_code == 200:
                    return time.monotonic()
            except requests.RequestException:
                pass
            time.sleep(0.01)
        raise AssertionError(f"OPA on port {self.port} did not become healthy")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def call(self, method: str, path: str, body: str | None = None, timeout: float = 10) -> requests.Response:
        return requests.request(
            method, self.url + path, data=body, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=timeout
        )

    def module_ids(self) -> set[str]:
        """The ids of the modules OPA holds, its own authz bundle's aside."""
        listed = self.call("GET", "/v1/policies").json()["result"]
        return {m["id"] for m in listed if not m["id"].endswith("/authz.rego")}


class Proxy(http.server.ThreadingHTTPServer):
    """Forwards every request to `upstream` (a new connection each), counting (method, path);
    PUT/PATCH/DELETE wait while `writes` is cleared (held back, as by a slow OPA)."""

    daemon_threads = True

    def __init__(self, upstream: int):
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = upstream
        self.writes = threading.Event()
        self.writes.set()
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def count(self, method: str, path: str) -> int:
        with self.lock:
            return self.counts[(method, path)]

    def reset(self) -> None:
        with self.lock:
            self.counts.clear()


class _Forward(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Proxy

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.counts[(self.command, self.path.split("?")[0])] += 1
        if self.command in ("PUT", "PATCH", "DELETE"):
            self.server.writes.wait(30)
        conn = http.client.HTTPConnection("127.0.0.1", self.server.upstream, timeout=30)
        try:
            headers = {
                k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type")
            }
            conn.request(self.command, self.path, body=body or None, headers=headers)
            answer = conn.getresponse()
            status, content = answer.status, answer.read()
            kind = answer.getheader("Content-Type") or "application/json"
        except OSError:
            status, content, kind = (
                502,
                b'{"message":"OPA unreachable behind the test proxy"}',
                "application/json",
            )
        finally:
            conn.close()
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _forward


@pytest.fixture()
def proxy_for():
    proxies: list[Proxy] = []

    def start(upstream: int) -> Proxy:
        proxy = Proxy(upstream)
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.shutdown()
        proxy.server_close()


@pytest.fixture()
def opas(tmp_path):
    started: list[Opa] = []

    def start(port: int | None = None) -> Opa:
        opa = Opa(tmp_path, port).start()
        started.append(opa)
        opa.healthy()
        return opa

    yield start
    for opa in started:
        opa.kill()


def _serve(served, tmp_path: Path, opa_url: str):  # noqa: F811 - the fixture, passed on
    policies = tmp_path / "policies"
    if not policies.exists():
        shutil.copytree(EXAMPLES / "policies", policies)
    token = tmp_path / "opa-token"
    token.write_text(TOKEN + "\n")
    s = served("--policy-dir", str(policies), "--opa-url", opa_url, "--opa-token-file", str(token))
    s.wait_ready()
    return s


def _readyz(s) -> tuple[int, str]:
    r = requests.get(s.base + "/readyz", timeout=5)
    return r.status_code, r.json()["reason"]


def _first(s, status: int, within: float) -> tuple[float, str]:
    """Poll /readyz (every 20 ms) until it answers `status`; returns when, and the reason."""
    end = time.monotonic() + within
    while True:
        code, why = _readyz(s)
        if code == status:
            return time.monotonic(), why
        assert time.monotonic() < end, f"/readyz did not answer {status} within {within}s: {code} {why}"
        time.sleep(0.02)


def test_an_opa_restarted_empty_on_the_same_port_is_unready_at_the_next_probe(served, opas, tmp_path):  # noqa: F811 - the fixture
    """The real thing: the external OPA killed and started again, empty, on the same port as fast as
    it goes. /readyz is 503 within 2 s of OPA answering /health again, then the set is pushed back
    (the probe wakes the repair) and it is 200 with OPA holding the whole set."""
    opa = opas()
    s = _serve(served, tmp_path, opa.url)
    held = opa.module_ids()
    assert any(i.startswith("ostiary/lib/") for i in held), held
    opa.kill()
    opa.start()
    back = opa.healthy()
    seen, why = _first(s, 503, within=10)
    assert seen - back < 2.0, f"/readyz was 503 only {seen - back:.2f}s after OPA answered again"
    _first(s, 200, within=15)
    assert opa.module_ids() == held


def test_an_opa_swapped_for_an_empty_one_between_two_probes_stays_unready_until_the_set_is_back(
    served,  # noqa: F811 - the fixture
    opas,
    proxy_for,
    tmp_path,
):
    """OPA 'restarted' entirely between two probes: the proxy points at a fresh, empty OPA from one
    request to the next, so /health never fails and nothing but OPA's content tells. /readyz is
    503 within 2 s and stays 503 while the set cannot be pushed back (the repair's writes held back
    for 4 s, well within its client's timeout), then 200 once it is."""
    first = opas()
    proxy = proxy_for(first.port)
    s = _serve(served, tmp_path, proxy.url)
    held = first.module_ids()
    second = opas()
    proxy.writes.clear()
    proxy.upstream = second.port
    swapped = time.monotonic()
    seen, why = _first(s, 503, within=10)
    assert seen - swapped < 2.0, f"/readyz was 503 only {seen - swapped:.2f}s after the swap: {why}"
    assert "OPA does not hold exactly Ostiary's modules" in why, why
    until = time.monotonic() + 4.0
    while time.monotonic() < until:  # nothing can be pushed: never ready meanwhile
        code, why = _readyz(s)
        assert code == 503, f"/readyz said ready while OPA holds nothing of Ostiary's: {why}"
        time.sleep(0.05)
    assert second.module_ids() == set()
    proxy.writes.set()
    _first(s, 200, within=15)
    assert second.module_ids() == held


def test_a_module_planted_or_a_document_changed_behind_ostiarys_back_is_unready_then_repaired(
    served,  # noqa: F811 - the fixture
    opas,
    tmp_path,
):
    """A token holder plants a module, then rewrites a policy document in place; neither touches
    the marker. Each turns /readyz 503 within the full-check bound (+ a margin), and is repaired."""
    opa = opas()
    s = _serve(served, tmp_path, opa.url)
    documents = opa.call("GET", "/v1/data/ostiary_policies").json()["result"]
    scope, members = next((k, v) for k, v in documents.items() if v)
    name = next(iter(members))
    changes = [
        ("a planted module", lambda: opa.call("PUT", "/v1/policies/planted", PLANTED)),
        (
            "a changed document",
            lambda: opa.call(
                "PATCH",
                "/v1/data/ostiary_policies",
                json.dumps([{"op": "add", "path": f"/{scope}/{name}/{MARK}", "value": True}]),
            ),
        ),
    ]
    bound = FULL_CHECK_INTERVAL + 5.0  # the probe's bound, a round of it and a margin for a loaded machine
    for what, change in changes:
        _first(s, 200, within=15)
        assert change().status_code in (200, 204), what
        made = time.monotonic()
        seen, why = _first(s, 503, within=bound)
        assert "OPA does not hold exactly Ostiary's modules" in why, (what, why)
        _first(s, 200, within=15)
        assert "planted" not in opa.module_ids(), what
        assert MARK not in json.dumps(opa.call("GET", "/v1/data/ostiary_policies").json()), what
        print(f"{what}: /readyz 503 after {seen - made:.1f}s")


def test_idle_serving_reads_opas_whole_state_at_most_every_full_check_bound(
    served,  # noqa: F811 - the fixture
    opas,
    proxy_for,
    tmp_path,
):
    """Over 5 s of idle serving, OPA's whole listing (GET /v1/policies: every module's source and
    AST) and the policy documents are read at most twice by the probe and the repair together; the
    probe reads the few bytes of the marker instead. Failed before: the probe read both every
    0.5 s and the watchdog's repair every 2 s (12-13 listings in 5 s)."""
    opa = opas()
    proxy = proxy_for(opa.port)
    s = _serve(served, tmp_path, proxy.url)
    time.sleep(1.0)  # past the start's pushes and first looks
    proxy.reset()
    time.sleep(FULL_CHECK_INTERVAL)
    listings = proxy.count("GET", "/v1/policies")
    documents = proxy.count("GET", "/v1/data/ostiary_policies")
    markers = proxy.count("GET", "/v1/data/ostiary_sync/set")
    health = proxy.count("GET", "/health")
    assert health >= 5, f"the probe did not run: {dict(proxy.counts)}"
    assert listings <= 2 and documents <= 2, f"OPA's whole state read too often: {dict(proxy.counts)}"
    assert markers >= 5, f"the probe did not read the marker: {dict(proxy.counts)}"
    assert _readyz(s)[0] == 200


def test_two_replicas_sharing_one_opa_do_not_fight_over_the_marker(served, opas, proxy_for, tmp_path):  # noqa: F811 - the fixture
    """Two `ostiary serve` with the same set on one external OPA (the marker is a function of the
    set, not of the process): both ready, and over 5 s idle neither writes anything to OPA (no
    marker rewritten, no module pushed back), each staying ready throughout."""
    opa = opas()
    proxy = proxy_for(opa.port)
    first = _serve(served, tmp_path, proxy.url)
    second = _serve(served, tmp_path, proxy.url)
    time.sleep(1.0)
    proxy.reset()
    end = time.monotonic() + FULL_CHECK_INTERVAL
    while time.monotonic() < end:
        assert _readyz(first)[0] == 200 and _readyz(second)[0] == 200
        time.sleep(0.1)
    writes = {k: v for k, v in proxy.counts.items() if k[0] in ("PUT", "PATCH", "DELETE")}
    assert writes == {}, f"the replicas wrote to OPA while idle: {writes}"
    assert proxy.count("GET", "/v1/data/ostiary_sync/set") >= 10  # both probes read the marker


def test_a_set_held_back_after_opa_died_of_it_twice_still_holds_the_library(served, opas, tmp_path):  # noqa: F811 - the fixture
    """OPA restarted empty twice within the guard's window: the set pushed before each death is held
    back (app/policies/pushguard.py). What OPA keeps then is the base alone (the library: every
    admission denied, with reasons), never the empty set from before the first push, which left OPA
    deciding nothing while /readyz said "ready"."""
    opa = opas()
    s = _serve(served, tmp_path, opa.url)
    for _ in range(2):
        opa.kill()
        opa.start()
        opa.healthy()
        time.sleep(2 * FULL_CHECK_INTERVAL / 5)
    end = time.monotonic() + 30
    while "held back" not in (why := _readyz(s)[1]):
        assert time.monotonic() < end, f"the set was not held back: {why}"
        time.sleep(0.1)
    end = time.monotonic() + 15
    while True:
        held = opa.module_ids()
        if any(i.startswith("ostiary/lib/") for i in held):
            break
        assert time.monotonic() < end, f"OPA holds no library while the set is held back: {held}"
        time.sleep(0.1)
    code, why = _readyz(s)
    assert code == 200 and "held back" in why, (code, why)
