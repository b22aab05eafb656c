"""Slow, idle and hostile clients against the real `ostiary serve` (plain HTTP and TLS).

The bound on /healthz and /admit latency while dozens of such connections are open IS the
property: a webhook with `failurePolicy: Fail` that a few sockets can freeze stops every deploy.
Each kind of slow client is opened SLOW_PER_KIND times; the figures are printed (run with -s).
"""

from __future__ import annotations

import socket
import ssl
import statistics
import threading
import time

import pytest
import requests

from tests.integration.test_server import EXAMPLES, Served, _cert, example, served  # noqa: F401 - fixture

SLOW_PER_KIND = 32
BOUND = 2.0  # seconds: /healthz and /admit must answer within this while the slow clients hang on


def drain(s: Served) -> Served:
    """Read the server's log as it comes (one access-log line per request), so that a full pipe
    never blocks the server; test_server.Served reads it only when the process has exited."""
    lines: list[str] = []

    def read() -> None:
        for line in s.proc.stdout:
            lines.append(line)
            del lines[:-200]

    threading.Thread(target=read, daemon=True).start()
    s.log_lines = lines  # type: ignore[attr-defined]
    return s


def _tcp(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def _tls(port: int) -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx.wrap_socket(_tcp(port))


def _client_hello() -> bytes:
    """The first flight of a real TLS client, to send only part of it."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="ostiary")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


PARTIALS = {
    "half request line": b"POST /adm",
    "half headers": b"POST /admit HTTP/1.1\r\nHost: ostiary\r\nContent-Type: appl",
    "a few bytes of the announced body": b"POST /admit HTTP/1.1\r\nHost: ostiary\r\nContent-Type: application/json\r\n"
    b'Content-Length: 100000\r\n\r\n{"apiVe',
}


def _kept_alive(sock):
    """One complete request and answer, then the connection stays open (HTTP/1.1 keep-alive)."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: ostiary\r\n\r\n")
    said = b""
    while b'"ok"' not in said:
        chunk = sock.recv(4096)
        assert chunk, f"closed after {said!r}"
        said += chunk
    assert said.startswith(b"HTTP/1.1 200 ")
    return sock


class Slowloris:
    """Sends one more header byte per second on each socket, forever (until stopped)."""

    def __init__(self, socks: list):
        self.socks = socks
        self.stop = threading.Event()
        for s in socks:
            s.sendall(b"POST /admit HTTP/1.1\r\nHost: ostiary\r\nX-Slow: ")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            for s in list(self.socks):
                try:
                    s.sendall(b"a")
                except OSError:
                    self.socks.remove(s)


def open_slow_clients(port: int, tls: bool) -> tuple[list, Slowloris]:
    """SLOW_PER_KIND connections of each kind; they stay open until the caller closes them.
    A server that cannot even complete their handshakes or first requests fails here."""
    held: list = []
    connect = _tls if tls else _tcp
    for _ in range(SLOW_PER_KIND):
        held.append(_tcp(port))  # connected, silent (for TLS: a handshake never started)
        for partial in PARTIALS.values():
            s = connect(port)
            s.sendall(partial)
            held.append(s)
    if tls:
        hello = _client_hello()
        for _ in range(SLOW_PER_KIND):
            s = _tcp(port)
            s.sendall(hello[: len(hello) // 2])  # a handshake begun and never finished
            held.append(s)
    for _ in range(SLOW_PER_KIND):  # kept alive after one request, then idle
        held.append(_kept_alive(connect(port)))
    loris = Slowloris([connect(port) for _ in range(SLOW_PER_KIND)])
    held.extend(loris.socks)
    return held, loris


def _timed(call) -> tuple[float, object]:
    started = time.monotonic()
    try:
        result = call()
    except requests.RequestException as exc:
        result = exc
    return time.monotonic() - started, result


def measure(s: Served, verify, label: str) -> None:
    """Fresh connections for /healthz and /admit while the slow clients hang on; print the figures."""
    health, admits = [], []
    for _ in range(20):
        health.append(_timed(lambda: requests.get(s.base + "/healthz", timeout=BOUND, verify=verify)))
    body = example("deployment-mirror.json")
    for _ in range(5):
        admits.append(
            _timed(lambda: requests.post(s.base + "/admit", json=body, timeout=BOUND, verify=verify))
        )
    for name, runs in (("/healthz", health), ("/admit", admits)):
        seconds = [t for t, _ in runs]
        failed = sum(1 for _, r in runs if not isinstance(r, requests.Response) or r.status_code != 200)
        print(
            f"\n{label}: {name} with {_slow_count(label)} slow clients open: "
            f"median {statistics.median(seconds) * 1000:.1f} ms, max {max(seconds) * 1000:.1f} ms "
            f"over {len(seconds)} requests, {failed} failed or timed out (bound {BOUND:.0f}s)"
        )
    for t, r in health:
        assert isinstance(r, requests.Response) and r.status_code == 200, f"/healthz: {r!r} after {t:.2f}s"
        assert t < BOUND
    for t, r in admits:
        assert isinstance(r, requests.Response) and r.status_code == 200, f"/admit: {r!r} after {t:.2f}s"
        assert r.json()["response"]["allowed"] is True
        assert t < BOUND


def _slow_count(label: str) -> int:
    kinds = 1 + len(PARTIALS) + 2 + (1 if "TLS" in label else 0)
    return kinds * SLOW_PER_KIND


def _close(held: list, loris: Slowloris) -> None:
    loris.stop.set()
    for s in held:
        try:
            s.close()
        except OSError:
            pass


def test_slow_plain_clients_do_not_delay_anyone(tmp_path):
    s = drain(Served("--policy-dir", str(EXAMPLES / "policies")))
    try:
        s.wait_ready()
        held, loris = open_slow_clients(s.port, tls=False)
        try:
            time.sleep(0.5)
            measure(s, True, "plain HTTP")
        finally:
            _close(held, loris)
    finally:
        s.stop()


def test_slow_tls_clients_do_not_delay_anyone(tmp_path):
    _cert(tmp_path, "ostiary", 1)
    verify = str(tmp_path / "tls.crt")
    s = drain(
        Served(
            "--policy-dir",
            str(EXAMPLES / "policies"),
            "--tls-cert",
            verify,
            "--tls-key",
            str(tmp_path / "tls.key"),
            scheme="https",
            verify=verify,
        )
    )
    try:
        s.wait_ready()
        held, loris = open_slow_clients(s.port, tls=True)
        try:
            time.sleep(0.5)
            measure(s, verify, "TLS")
        finally:
            _close(held, loris)
    finally:
        s.stop()


def _served_with(monkeypatch, gunicorn_args: str, *extra, **kw) -> Served:
    monkeypatch.setenv("GUNICORN_CMD_ARGS", gunicorn_args)
    s = Served("--policy-dir", str(EXAMPLES / "policies"), *extra, **kw)
    monkeypatch.delenv("GUNICORN_CMD_ARGS")
    return drain(s)


def _closed_within(sock, seconds: float) -> tuple[bool, bytes]:
    """Read until the server closes; (closed in time, what it said)."""
    sock.settimeout(0.2)
    said = b""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            chunk = sock.recv(4096)
        except (TimeoutError, ssl.SSLWantReadError):
            continue
        except OSError:
            return True, said
        if not chunk:
            return True, said
        said += chunk
    return False, said


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_slow_clients_are_cut_off_at_their_deadlines(monkeypatch, tmp_path, tls):
    """Even a client that keeps trickling bytes is closed when its head deadline passes."""
    extra, kw = (), {}
    if tls:
        _cert(tmp_path, "ostiary", 1)
        extra = ("--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key"))
        kw = {"scheme": "https", "verify": str(tmp_path / "tls.crt")}
    s = _served_with(
        monkeypatch,
        "--tls-handshake-timeout 1 --header-timeout 2 --body-timeout 2 --keep-alive 2",
        *extra,
        **kw,
    )
    try:
        s.wait_ready()
        held, loris = open_slow_clients(s.port, tls=tls)
        started = time.monotonic()
        try:
            for sock in held:
                closed, said = _closed_within(sock, 6.0 - (time.monotonic() - started))
                assert closed, f"a slow client {sock!r} is still open after 6s (deadlines 1-2s)"
                assert not said or said.startswith(b"HTTP/1.1 408 "), said
            print(
                f"\n{'TLS' if tls else 'plain'}: {len(held)} slow clients closed by the server "
                f"within {time.monotonic() - started:.1f}s (deadlines: handshake 1s, head 2s, body 2s, keep-alive 2s)"
            )
        finally:
            _close(held, loris)
    finally:
        s.stop()


def test_the_connection_cap_answers_at_once_and_a_retry_succeeds(monkeypatch):
    """At worker_connections, a newcomer is told 503 + Retry-After at once (not left hanging);
    idle kept-alive connections make room; once slow ones time out, the retry is served."""
    s = _served_with(monkeypatch, "--worker-connections 40 --header-timeout 3")
    try:
        s.wait_ready()
        kept = []
        for _ in range(40):  # kept alive and idle: these are closed to make room, oldest first
            kept.append(_kept_alive(_tcp(s.port)))
        assert requests.get(s.base + "/healthz", timeout=BOUND).status_code == 200
        assert _closed_within(kept[0], 1.0)[0], "the oldest idle connection was not closed to make room"
        time.sleep(0.3)
        filling = time.monotonic()
        silent = [_tcp(s.port) for _ in range(50)]  # silent new connections fill the cap (and more)
        time.sleep(0.3)
        started = time.monotonic()
        r = requests.get(s.base + "/healthz", timeout=BOUND)
        refused_after = time.monotonic() - started
        assert r.status_code == 503, (
            f"{r.status_code} {started - filling:.2f}s after filling the cap; " + "".join(s.log_lines[-30:])
        )
        assert r.headers["Retry-After"] == "1" and r.headers["Connection"] == "close"
        assert refused_after < BOUND
        body = example("deployment-mirror.json")
        deadline = time.monotonic() + 10
        while True:  # what the API server does with a 503 that suggests a delay
            r = requests.post(s.base + "/admit", json=body, timeout=BOUND)
            if r.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(int(r.headers["Retry-After"]))
        print(
            f"\nconnection cap 40: refused in {refused_after * 1000:.1f} ms with 503 Retry-After: 1; "
            f"the retried /admit was served once the silent clients timed out"
        )
        assert r.status_code == 200 and r.json()["response"]["allowed"] is True
        for k in kept + silent:
            k.close()
    finally:
        s.stop()


def _exchange(port: int, data: bytes, expect_responses: int = 1, wait_continue: bool = False) -> bytes:
    sock = _tcp(port)
    with sock:
        if wait_continue:
            head, body = data.split(b"\r\n\r\n", 1)
            sock.sendall(head + b"\r\n\r\n")
            assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue"), "no 100 Continue"
            sock.sendall(body)
        else:
            sock.sendall(data)
        said = b""
        sock.settimeout(5)
        while said.count(b"HTTP/1.1 ") < expect_responses or not said.rstrip().endswith(
            (b"}", b"\n", b"}\n")
        ):
            chunk = sock.recv(65536)
            if not chunk:
                break
            said += chunk
        return said


def test_requests_framed_on_the_loop_reach_the_app_intact(served):  # noqa: F811 - the fixture
    """Pipelining, Expect: 100-continue, the body cap and ambiguous framing (all on raw sockets)."""
    s = drain(served("--policy-dir", str(EXAMPLES / "policies")))
    s.wait_ready()
    body = (EXAMPLES / "reviews" / "deployment-mirror.json").read_bytes()
    post = (
        b"POST /admit HTTP/1.1\r\nHost: ostiary\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body)
    ) + body
    two = _exchange(s.port, post + b"GET /healthz HTTP/1.1\r\nHost: ostiary\r\n\r\n", expect_responses=2)
    assert (
        two.count(b"HTTP/1.1 200 ") == 2
        and b'"allowed":true' in two.replace(b" ", b"")
        and b'"status":"ok"' in two.replace(b" ", b"")
    )
    continued = _exchange(
        s.port,
        post.replace(b"Host: ostiary\r\n", b"Host: ostiary\r\nExpect: 100-continue\r\n"),
        wait_continue=True,
    )
    assert b"HTTP/1.1 200 " in continued and b"100 Continue" not in continued
    from app.server import MAX_BODY

    too_big = _exchange(
        s.port, b"POST /admit HTTP/1.1\r\nHost: o\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)
    )
    assert too_big.startswith(b"HTTP/1.1 413 ")
    chunked = _exchange(
        s.port,
        b"POST /admit HTTP/1.1\r\nHost: o\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    assert chunked.startswith(b"HTTP/1.1 411 ")
    twice = _exchange(
        s.port, b"POST /admit HTTP/1.1\r\nHost: o\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    )
    assert twice.startswith(b"HTTP/1.1 400 ")
    # a large body within the cap arrives whole (a Deployment with many containers)
    big = requests.post(
        s.base + "/admit",
        data=b'{"padding": "' + b"x" * (2 * 1024 * 1024) + b'"}',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert big.status_code == 400 and "AdmissionReview" in big.json()["error"]


def test_busy_kept_alive_clients_are_all_served(served):  # noqa: F811 - the fixture
    """The API server's pattern: a few clients, each reusing kept-alive connections, concurrently
    (more of them than threads). Every request answered, over the same connections."""
    from concurrent.futures import ThreadPoolExecutor

    s = served("--policy-dir", str(EXAMPLES / "policies"))
    drain(s)
    s.wait_ready()
    body = example("deployment-mirror.json")

    def client(_):
        with requests.Session() as session:
            answers = [session.post(s.base + "/admit", json=body, timeout=10) for _ in range(25)]
            return [(a.status_code, a.json()["response"]["allowed"]) for a in answers]

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        results = [r for batch in pool.map(client, range(16)) for r in batch]
    seconds = time.monotonic() - started
    print(
        f"\n16 kept-alive clients x 25 /admit: {len(results)} answers in {seconds:.2f}s "
        f"({len(results) / seconds:.0f}/s)"
    )
    assert results == [(200, True)] * 400
    s.proc.send_signal(__import__("signal").SIGTERM)
    assert s.proc.wait(15) == 0, "SIGTERM must stop the server cleanly"
