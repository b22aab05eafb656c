"""Fixtures for the trust tests: a throwaway CA and server certificate, and local Notary-like servers.

The CA is made once per session with `cryptography` (ECDSA P-256, like notary-server's own test PKI);
the server certificate names localhost and 127.0.0.1 so the client verifies it for real (no
`verify=False` anywhere: a test that turned TLS checking off would prove nothing).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # `pytest` run without `python -m`: make `tests.trust` importable
    sys.path.insert(0, _ROOT)

from cryptography.hazmat.primitives import serialization

from tests.support.pki import CA, private_key_pem, write
from tests.trust.https_server import NotaryTestServer, ServerKnobs, SilentServer

# ../shared beside the project's root (read-only, present in CI too)
FIXTURES = (
    Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "notary" / "dockerhub-captured"
)


@dataclass(frozen=True)
class TestPKI:
    ca_file: str
    cert_file: str
    key_file: str


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    directory = tmp_path_factory.mktemp("pki")
    ca = CA.create("ostiary trust tests CA")
    server_key, server_cert = ca.issue_server()
    ca_file = write(directory / "ca.crt", ca.cert.public_bytes(serialization.Encoding.PEM), 0o644)
    cert_file = write(directory / "server.crt", server_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    key_file = write(directory / "server.key", private_key_pem(server_key))
    return TestPKI(str(ca_file), str(cert_file), str(key_file))


@pytest.fixture
def notary_server(pki: TestPKI) -> Iterator[NotaryTestServer]:
    server = NotaryTestServer(pki.cert_file, pki.key_file, ServerKnobs()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def plain_http_server() -> Iterator[NotaryTestServer]:
    """The same server over plain HTTP (for a token realm that is not https)."""
    server = NotaryTestServer(None, None, ServerKnobs()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def fixture_cases() -> dict:
    import json

    return json.loads((FIXTURES / "expected.json").read_text())["cases"]


@pytest.fixture(scope="session")
def signer_pems() -> dict[str, str]:
    return {path.stem: path.read_text() for path in sorted((FIXTURES / "signer-keys").glob("*.pub"))}
