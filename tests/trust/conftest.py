"""Fixtures for the trust tests: a throwaway CA and server certificate, and local Notary-like servers.

The CA is made once per session with `cryptography` (ECDSA P-256, like notary-server's own test PKI);
the server certificate names localhost and 127.0.0.1 so the client verifies it for real (no
`verify=False` anywhere: a test that turned TLS checking off would prove nothing).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # `pytest` run without `python -m`: make `tests.trust` importable
    sys.path.insert(0, _ROOT)

from tests.trust.https_server import NotaryTestServer, ServerKnobs, SilentServer

FIXTURES = Path("/work/shared/fixtures/notary/dockerhub-captured")


@dataclass(frozen=True)
class TestPKI:
    ca_file: str
    cert_file: str
    key_file: str


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPKI:
    directory = tmp_path_factory.mktemp("pki")
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ostiary trust tests CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.crt"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_file = directory / "server.crt"
    cert_file.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_file = directory / "server.key"
    _write_key(server_key, key_file)
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
