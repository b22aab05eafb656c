"""A pod's author chooses the registry host and port of its image, so under `ostiary serve` a signature
read that got no HTTP answer must not say what happened there: a closed port, one that accepts and
closes, one that keeps silent and one that answers without TLS all give the same denial, "registry
HOST could not be reached (details in Ostiary's log)", for cosign, Notation and simple signing alike;
what happened is in Ostiary's log. The offline commands an operator runs keep the details.

From the attacker's side: real sockets on loopback, the real `ostiary serve --policy-dir` (its own
OPA), admission reviews through POST /admit, and `ostiary apply` for the offline side."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator

import pytest

from app.images import parse_image
from app.notary import clock as clocks
from app.signatures.cosign import CosignVerifier
from app.signatures.port import SignatureRequest
from app.signatures.registry import RegistryReader
from app.signatures.service import SignatureService
from tests.signatures.test_registry_unavailable import GPG_KEY, answering, closed_port
from tests.support import cosign_signing as cs
from tests.support.serve import OSTIARY, deployment_review, message
from tests.support.simple_signing import FIXTURES, serve_policies

BUDGET = "2"  # seconds per admission: the silent port costs three quarters of it
NOTATION_CA = FIXTURES / "keys" / "public" / "notation" / "trusted-root.crt"
FORMATS = ("cosign", "notation", "simple")
HIDDEN = "could not be reached (details in Ostiary's log)"


class Listener:
    """A loopback TCP port that does `behaviour` with each connection, until closed."""

    def __init__(self, behaviour: Callable[[socket.socket], None]):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.behaviour = behaviour
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            with contextlib.suppress(OSError):
                self.behaviour(conn)

    def close(self) -> None:
        for conn in [self.sock, *self.held]:
            with contextlib.suppress(OSError):
                conn.close()


def close_at_once(conn: socket.socket) -> None:
    conn.close()


def keep_silent(conn: socket.socket) -> None:
    """Accept and never answer (the connection stays open until the test ends)."""


def plain_http(conn: socket.socket) -> None:
    """Answer whatever came (a TLS ClientHello) in plain HTTP, then close."""
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
    conn.close()


def garbage(conn: socket.socket) -> None:
    conn.recv(4096)
    conn.sendall(b"\x00\xffnot a protocol at all\r\n" * 8)
    conn.close()


@contextlib.contextmanager
def targets() -> Iterator[dict[str, int]]:
    """Ports that give no HTTP answer, each in its own way."""
    listeners = {
        "accepts and closes": Listener(close_at_once),
        "accepts and keeps silent": Listener(keep_silent),
        "answers plain HTTP": Listener(plain_http),
        "answers garbage": Listener(garbage),
    }
    try:
        yield {"refuses": closed_port(), **{what: lst.port for what, lst in listeners.items()}}
    finally:
        for listener in listeners.values():
            listener.close()


def secret(name: str, namespace: str, **data: bytes) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def requiring(fmt: str, store_port: int) -> list[dict]:
    """Namespace `fmt`'s ImagePolicy: every image needs a signature of that format, and its Secret."""
    if fmt == "cosign":
        material = secret("k", fmt, key=cs.public_pem(cs.new_key("p256")).encode())
        policy: dict = {"cosign": {"keys": [{"keySecret": "k"}]}}
    elif fmt == "notation":
        material = secret("k", fmt, **{"ca.crt": NOTATION_CA.read_bytes()})
        policy = {"notation": {"caSecret": "k", "trustedIdentities": ["*"]}}
    else:
        material = secret("k", fmt, key=GPG_KEY.read_bytes())
        requirements = [{"type": "signedBy", "keySecret": "k"}]
        policy = {"simple": {"requirements": requirements, "storeURL": f"https://127.0.0.1:{store_port}"}}
    image_policy = {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ImagePolicy",
        "metadata": {"name": "signed", "namespace": fmt},
        "spec": {"repositories": [{"name": "*", "policy": policy}]},
    }
    return [material, image_policy]


def as_template(text: str, port: int) -> str:
    return text.replace(f"127.0.0.1:{port}", "HOST")


def test_serve_says_only_could_not_be_reached_whatever_the_port_does(tmp_path):
    with targets() as ports:
        documents = [d for fmt in FORMATS for d in requiring(fmt, ports["refuses"])]
        with serve_policies(tmp_path, documents, "--budget", BUDGET) as ostiary:
            denials: dict[str, dict[str, str]] = {fmt: {} for fmt in FORMATS}
            for fmt in FORMATS:
                for what, port in ports.items():
                    image = f"127.0.0.1:{port}/team/app:1.0"
                    response = ostiary.admit(deployment_review(image, namespace=fmt))["response"]
                    assert response["allowed"] is False, (fmt, what, response)  # fail closed
                    denials[fmt][what] = as_template(message(response), port)
            log = ostiary.log.read_text(errors="replace")
    for fmt, by_target in denials.items():
        texts = set(by_target.values())
        assert len(texts) == 1, f"{fmt}: the denial tells the ports apart:\n" + "\n".join(
            f"  {what}: {text}" for what, text in by_target.items()
        )
        (text,) = texts
        assert f"registry HOST {HIDDEN}" in text, text
        assert not re.search(r"refused|TLS|SSL|timed out|did not answer|reset|Errno", text, re.I), text
    # what happened is in the log, once per read, at WARNING, naming the image and the host
    for what, port in ports.items():
        lines = [
            line
            for line in log.splitlines()
            if "WARNING" in line
            and f"127.0.0.1:{port}/team/app:1.0" in line
            and "could not be reached" in line
        ]
        assert lines, f"{what}: no WARNING in the log:\n{log[-3000:]}"
    refused = next(line for line in log.splitlines() if f"127.0.0.1:{ports['refuses']}/team/app" in line)
    assert "refused" in refused.lower(), refused


class ManifestHandler(http.server.BaseHTTPRequestHandler):
    """A plain-HTTP registry (behind --registry-endpoint) that serves one manifest for any reference."""

    BODY = json.dumps({"schemaVersion": 2, "mediaType": cs.OCI_MANIFEST, "layers": []}).encode()

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Type", cs.OCI_MANIFEST)
        self.send_header("Content-Length", str(len(self.BODY)))
        self.end_headers()
        self.wfile.write(self.BODY)

    def log_message(self, *args) -> None:
        pass


def test_a_signature_store_is_said_the_same_way(tmp_path):
    """simple signing's storeURL is a namespace policy's choice: the registry answers, the store
    does not, and the denial says only that the store could not be reached."""
    registry = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ManifestHandler)
    threading.Thread(target=registry.serve_forever, daemon=True).start()
    endpoint = f"registry.example.com=http://127.0.0.1:{registry.server_address[1]}"
    try:
        with targets() as ports:
            documents = []
            for what, port in ports.items():
                namespace = "store-" + what.replace(" ", "-").lower()
                for doc in requiring("simple", port):
                    doc["metadata"]["namespace"] = namespace
                    documents.append(doc)
            denials = {}
            with serve_policies(
                tmp_path, documents, "--budget", BUDGET, "--registry-endpoint", endpoint
            ) as ostiary:
                for what, port in ports.items():
                    review = deployment_review(
                        "registry.example.com/team/app:1.0",
                        namespace="store-" + what.replace(" ", "-").lower(),
                    )
                    response = ostiary.admit(review)["response"]
                    assert response["allowed"] is False, (what, response)
                    denials[what] = as_template(message(response), port)
    finally:
        registry.shutdown()
        registry.server_close()
    texts = set(denials.values())
    assert len(texts) == 1, "the denial tells the stores apart:\n" + "\n".join(
        f"  {what}: {text}" for what, text in denials.items()
    )
    assert f"signature store HOST {HIDDEN}" in texts.pop()


def test_busy_workers_do_not_tell_a_silent_port_from_a_closed_one():
    """The one worker is held by reads of silent ports until the verifiers' deadline; the images
    behind them then have no time left, or a refusal: every one reads the same. The service as
    serve builds it (app/runtime.py: a RegistryReader and a SignatureService hiding connection
    failures)."""
    with targets() as ports:
        reader = RegistryReader(hide_connection_errors=True)
        service = SignatureService([CosignVerifier(reader)], workers=1, hide_connection_errors=True)
        order = ["accepts and keeps silent", "accepts and keeps silent", "refuses", "refuses"]
        key = cs.public_pem(cs.new_key("p256")).encode()
        requests = [
            SignatureRequest(
                image=parse_image(f"127.0.0.1:{ports[what]}/team/app:{n}"),
                requirement={"format": "cosign", "index": 0},
                keys=(("cosign/k", key),),
            )
            for n, what in enumerate(order)
        ]
        try:
            facts = service.gather(requests, clocks.monotonic() + 1.5)
        finally:
            service.close()
    shown = {as_template(f["error"], ports[what]) for f, what in zip(facts, order, strict=True)}
    assert shown == {f"registry HOST {HIDDEN}"}, [f["error"] for f in facts]
    assert all(f["verified"] is False for f in facts)


class Stuck:
    """A verifier still at work when the deadline comes (a machine too busy to run it in time)."""

    format = "cosign"

    def __init__(self) -> None:
        self.release = threading.Event()

    def verify(self, request: SignatureRequest, deadline: float) -> dict:
        self.release.wait(10)
        return {}


@pytest.mark.parametrize("hide", [True, False])
def test_a_verifier_late_or_never_started_reads_as_not_reached_under_serve(hide):
    """The reads end before the service stops waiting (service.SETTLE), so a silent port is reported
    by its read; should a verifier still be running, or not have started, at the deadline, serve
    says the same as for a registry not reached. Offline, what happened."""
    stuck = Stuck()
    service = SignatureService([stuck], workers=1, hide_connection_errors=hide)
    requests = [
        SignatureRequest(
            image=parse_image(f"127.0.0.1:{port}/team/app:1.0"), requirement={"format": "cosign"}
        )
        for port in (1001, 1002)
    ]
    try:
        facts = service.gather(requests, clocks.monotonic() + 0.5)
    finally:
        stuck.release.set()
        service.close()
    if hide:
        assert [f["error"] for f in facts] == [f"registry 127.0.0.1:{p} {HIDDEN}" for p in (1001, 1002)]
        assert all(getattr(f, "unavailable", False) for f in facts)
    else:
        assert all("were not verified before the deadline" in f["error"] for f in facts), facts


@pytest.mark.parametrize(
    ("status", "meaning"),
    [(404, "registry registry.example.com has no manifest for"), (503, "answered HTTP 503")],
)
def test_an_http_answer_keeps_its_meaning_under_serve(tmp_path, status, meaning):
    """What a registry really answered is no connection failure: it is said as it is (the registry is
    a plain-HTTP one on loopback, through --registry-endpoint)."""
    server = answering(status)
    try:
        endpoint = f"registry.example.com=http://127.0.0.1:{server.server_address[1]}"
        documents = requiring("cosign", closed_port())
        with serve_policies(tmp_path, documents, "--registry-endpoint", endpoint) as ostiary:
            review = deployment_review("registry.example.com/team/app:1.0", namespace="cosign")
            response = ostiary.admit(review)["response"]
    finally:
        server.shutdown()
        server.server_close()
    assert response["allowed"] is False
    assert meaning in message(response) and HIDDEN not in message(response), message(response)


def test_apply_words_as_serve_and_trust_inspect_keeps_the_details(tmp_path):
    """`ostiary apply` (no captures: the network) decides as the webhook does, with its words (as for
    Notary failures: docs/trust.md); `ostiary trust inspect` is the operator's diagnosis and says why."""
    port = closed_port()
    policies = tmp_path / "policies"
    policies.mkdir()
    for i, doc in enumerate(requiring("cosign", port)):
        (policies / f"{i}.json").write_text(json.dumps(doc))
    pod = tmp_path / "pod.json"
    image = f"127.0.0.1:{port}/team/app:1.0"
    pod.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "p", "namespace": "cosign"},
                "spec": {"containers": [{"name": "c", "image": image}]},
            }
        )
    )
    result = subprocess.run(
        [str(OSTIARY), "apply", str(pod), "--policy-dir", str(policies)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, (result.stdout, result.stderr)  # denied
    assert f"registry 127.0.0.1:{port} {HIDDEN}" in result.stdout, result.stdout
    assert "refused" not in result.stdout.lower(), result.stdout
    key = tmp_path / "cosign.pub"
    key.write_text(cs.public_pem(cs.new_key("p256")))
    inspected = subprocess.run(
        [str(OSTIARY), "trust", "inspect", image, "--format", "cosign", "--key", str(key), "--timeout", "10"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = inspected.stdout + inspected.stderr
    assert inspected.returncode != 0, output
    assert f"cannot connect to registry 127.0.0.1:{port}" in output and "refused" in output.lower(), output
    assert HIDDEN not in output, output
