"""A registry that cannot answer is told from one that answers "no": facts carry `unavailable`
(not part of what OPA sees), so the audit reports `error` instead of a policy `fail`. Admission
denies either way."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

import pytest

from app.audit.engine import _Capturing
from app.images import parse_image
from app.notary import clock as clocks
from app.signatures.cosign import CosignVerifier
from app.signatures.port import SignatureRequest
from app.signatures.registry import RegistryReader
from app.signatures.service import SignatureService
from app.signatures.simple import SimpleVerifier
from tests.support import cosign_signing as cs

GPG_KEY = (
    Path(__file__).resolve().parents[3]
    / "shared"
    / "fixtures"
    / "signatures"
    / "keys"
    / "public"
    / "gpg"
    / "ed25519.pub.asc"
)


def answering(status: int):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gather(port: int, fmt: str) -> dict:
    reader = RegistryReader(endpoints={"registry.example.com": f"http://127.0.0.1:{port}"})
    service = SignatureService([CosignVerifier(reader), SimpleVerifier(reader)])
    requirement = {"format": fmt, "index": 0}
    if fmt == "simple":
        requirement["store"] = {"url": f"http://127.0.0.1:{port}/store"}
    request = SignatureRequest(
        image=parse_image("registry.example.com/team/app:1.0"),
        requirement=requirement,
        keys=(
            ("ns/k", GPG_KEY.read_bytes() if fmt == "simple" else cs.public_pem(cs.new_key("p256")).encode()),
        ),
    )
    try:
        (facts,) = service.gather([request], clocks.monotonic() + 5.0)
    finally:
        service.close()
    return facts


@pytest.mark.parametrize("fmt", ["cosign", "simple"])
@pytest.mark.parametrize(
    ("status", "unavailable"), [(None, True), (503, True), (429, True), (404, False), (403, False)]
)
def test_unavailable_only_when_nothing_could_be_learnt(fmt, status, unavailable):
    server = answering(status) if status is not None else None
    try:
        port = server.server_address[1] if server is not None else closed_port()
        facts = gather(port, fmt)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    assert facts["verified"] is False, facts
    assert getattr(facts, "unavailable", False) is unavailable, (status, facts["error"])
    assert "unavailable" not in json.loads(json.dumps(facts))  # OPA's input is unchanged


def test_the_audit_sees_which_images_could_not_be_checked():
    class Inner:
        def gather(self, requests, deadline):
            return [gather(closed_port(), "cosign") for _ in requests]

    capture = _Capturing(Inner())
    capture.local.seen = seen = {}
    request = SignatureRequest(
        image=parse_image("registry.example.com/team/app:1.0"), requirement={"format": "cosign"}
    )
    capture.gather([request], clocks.monotonic() + 5.0)
    assert list(seen) == ["registry.example.com/team/app:1.0"], seen
    assert "cannot connect to registry registry.example.com" in seen["registry.example.com/team/app:1.0"], (
        seen
    )
