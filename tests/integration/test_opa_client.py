"""The OPA client's own HTTP (one kept-alive connection per thread): answers from the real OPA,
and every way the peer can fail ends in an OpaError that says what happened, within the time
given, never a hang or a wrong answer."""

from __future__ import annotations

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.opa.client import OpaClient, OpaError, OpaUndefined
from app.policies.model import RegoModule
from app.policies.sync import PolicySync
from tests.support.http import read_head

ECHO = RegoModule(
    id="test/echo", package="echo", source="package echo\n\nimport rego.v1\n\nanswer := input.n\n", origin="t"
)


@pytest.fixture()
def opa(local_opa):
    client = OpaClient(local_opa.url)
    sync = PolicySync(client)
    sync.resync()
    sync.set_base([ECHO])
    return client


def test_answers_over_kept_alive_connections_from_many_threads(opa):
    def ask(n: int) -> int:
        return opa.query("echo/answer", {"n": n}, time.monotonic() + 5)

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(ask, range(400))) == list(range(400))
    with pytest.raises(OpaUndefined):
        opa.query("echo/missing", {}, time.monotonic() + 5)


class Peer:
    """A TCP server on loopback that answers each connection with `behave(conn, index)`."""

    def __init__(self, behave):
        self.behave = behave
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self.requests = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.behave, args=(self, conn, self.connections), daemon=True).start()

    def read_request(self, conn) -> bool:
        data = read_head(conn)
        if data is None:
            return False
        head, _, rest = data.partition(b"\r\n\r\n")
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        while len(rest) < length:
            rest += conn.recv(65536)
        self.requests += 1
        return True

    def close(self):
        self.sock.close()


def answer(body: bytes, close: bool = False) -> bytes:
    extra = b"Connection: close\r\n" if close else b""
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        + extra
        + (b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    )


def test_a_connection_closed_while_idle_is_replaced_and_the_query_sent_once_more():
    def once_then_close(peer, conn, _index):
        if peer.read_request(conn):
            conn.sendall(answer(b'{"result": 1}'))
        time.sleep(0.1)
        conn.close()  # as a restarted or idle-timing-out OPA does

    peer = Peer(once_then_close)
    client = OpaClient(peer.url)
    assert client.query("x", {}, time.monotonic() + 2) == 1
    time.sleep(0.3)
    assert client.query("x", {}, time.monotonic() + 2) == 1
    assert peer.connections == 2 and peer.requests == 2
    peer.close()


def test_a_peer_that_never_answers_times_out_within_the_deadline():
    def silent(peer, conn, _index):
        peer.read_request(conn)
        time.sleep(10)

    peer = Peer(silent)
    client = OpaClient(peer.url)
    started = time.monotonic()
    with pytest.raises(OpaError, match="did not answer within"):
        client.query("x", {}, time.monotonic() + 0.5)
    assert (
        time.monotonic() - started < 3.5
    )  # the deadline plus slack for a loaded machine; the peer sleeps 10 s
    assert peer.requests == 1  # not sent again: it may have been evaluated
    peer.close()


def test_a_peer_that_closes_mid_answer_is_an_error_not_an_answer():
    def truncated(peer, conn, _index):
        if peer.read_request(conn):
            conn.sendall(answer(b'{"result": {"allowed": true}}')[:-8])
        conn.close()

    peer = Peer(truncated)
    client = OpaClient(peer.url)
    with pytest.raises(OpaError, match="unreachable: IncompleteRead"):
        client.query("x", {}, time.monotonic() + 2)
    peer.close()


def test_garbage_and_unreachable_peers_are_errors():
    def garbage(peer, conn, _index):
        if peer.read_request(conn):
            conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")
        conn.close()

    peer = Peer(garbage)
    with pytest.raises(OpaError, match="unreachable"):
        OpaClient(peer.url).query("x", {}, time.monotonic() + 2)
    peer.close()

    def not_json(peer, conn, _index):
        if peer.read_request(conn):
            conn.sendall(answer(b"<html>", close=True))
        conn.close()

    peer = Peer(not_json)
    with pytest.raises(OpaError, match="not JSON"):
        OpaClient(peer.url).query("x", {}, time.monotonic() + 2)
    peer.close()

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(OpaError, match="unreachable: ConnectionRefusedError"):
        OpaClient(f"http://127.0.0.1:{port}").query("x", {}, time.monotonic() + 2)
    with pytest.raises(OpaError, match="must be http:// or https://"):
        OpaClient("unix:///var/run/opa.sock").query("x", {}, time.monotonic() + 2)
    with pytest.raises(OpaError, match="deadline passed"):
        OpaClient(f"http://127.0.0.1:{port}").query("x", {}, time.monotonic() - 1)


def test_a_new_url_gets_a_new_connection(local_opa, opa):
    client = OpaClient("http://127.0.0.1:1")
    with pytest.raises(OpaError):
        client.query("echo/answer", {"n": 1}, time.monotonic() + 1)
    client.url = local_opa.url  # as the runtime does when it restarts its OPA on a new port
    assert client.query("echo/answer", {"n": 7}, time.monotonic() + 2) == 7
