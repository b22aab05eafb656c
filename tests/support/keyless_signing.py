"""A test Sigstore made in Python: a Fulcio-like CA (root -> intermediate -> short-lived leaf with
the OIDC issuer and GitHub workflow extensions and the code-signing usage), a Rekor-like log key,
its `trusted_root.json`, and keyless bundles (v0.3: certificate, DSSE envelope, a Rekor `dsse`
0.0.1 entry with a signed entry timestamp, an inclusion proof in a one-leaf tree and a signed
checkpoint), in the shape cosign writes them.

    world = TestSigstore()
    data = world.bundle(cs.statement(digest), subject="dev@example.com", issuer="https://issuer.example")
    push.bundle_signature("made/app", digest, data)
    Path("root.json").write_bytes(world.trusted_root())

Every hostile variant is one argument (another issuer, subject, expired certificate at the
integrated time, a log entry of other bytes, a forged SET, no log entry ...).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from tests.support import cosign_signing as cs

FULCIO = "1.3.6.1.4.1.57264.1."
SIGNED_AT = datetime(2026, 12, 6, 20, 0, 0, tzinfo=UTC)
IN_TOTO = "application/vnd.in-toto+json"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _der_utf8(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 128
    return bytes([0x0C, len(raw)]) + raw


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ostiary.test"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


class TestSigstore:
    __test__ = False  # not a pytest class

    def __init__(self, name: str = "ostiary-test"):
        self.name = name
        start = datetime(2026, 1, 1, tzinfo=UTC)
        self.root_key = ec.generate_private_key(ec.SECP384R1())
        self.inter_key = ec.generate_private_key(ec.SECP384R1())
        self.log_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._ca(_name(f"{name} root"), self.root_key, self.root_key, None, start)
        self.intermediate = self._ca(
            _name(f"{name} intermediate"), self.inter_key, self.root_key, self.root, start
        )
        der = self.log_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.log_der = der
        self.log_id = hashlib.sha256(der).digest()

    @staticmethod
    def _ca(subject: x509.Name, key, signer, issuer_cert, start: datetime) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(start + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        )
        return builder.sign(signer, hashes.SHA384())

    def trusted_root(
        self, *, ca_start: str = "2026-01-01T00:00:00Z", log_start: str = "2026-01-01T00:00:00Z"
    ) -> bytes:
        return json.dumps(
            {
                "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
                "tlogs": [
                    {
                        "baseUrl": "https://rekor.ostiary.test",
                        "hashAlgorithm": "SHA2_256",
                        "publicKey": {
                            "rawBytes": _b64(self.log_der),
                            "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                            "validFor": {"start": log_start},
                        },
                        "logId": {"keyId": _b64(self.log_id)},
                    }
                ],
                "certificateAuthorities": [
                    {
                        "subject": {"organization": "ostiary.test", "commonName": self.name},
                        "uri": "https://fulcio.ostiary.test",
                        "certChain": {
                            "certificates": [
                                {"rawBytes": _b64(c.public_bytes(serialization.Encoding.DER))}
                                for c in (self.intermediate, self.root)
                            ]
                        },
                        "validFor": {"start": ca_start},
                    }
                ],
                "ctlogs": [],
                "timestampAuthorities": [],
            },
            indent=1,
        ).encode()

    def leaf(
        self,
        key,
        *,
        subject: str,
        issuer: str,
        extensions: dict[str, str] | None = None,
        not_before: datetime = SIGNED_AT - timedelta(minutes=1),
        lifetime: timedelta = timedelta(minutes=10),
        code_signing: bool = True,
        signer=None,
    ) -> x509.Certificate:
        san: x509.GeneralName = (
            x509.RFC822Name(subject)
            if "@" in subject and "/" not in subject
            else x509.UniformResourceIdentifier(subject)
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(self.intermediate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_before + lifetime)
            .add_extension(
                x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
            )
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CODE_SIGNING if code_signing else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                critical=False,
            )
            .add_extension(x509.SubjectAlternativeName([san]), critical=True)
            .add_extension(
                x509.UnrecognizedExtension(ObjectIdentifier(FULCIO + "1"), issuer.encode()), critical=False
            )
            .add_extension(
                x509.UnrecognizedExtension(ObjectIdentifier(FULCIO + "8"), _der_utf8(issuer)), critical=False
            )
        )
        raw_oids = {"githubWorkflowTrigger": "2", "githubWorkflowSha": "3", "githubWorkflowName": "4",
                    "githubWorkflowRepository": "5", "githubWorkflowRef": "6"}  # fmt: skip
        for field, value in (extensions or {}).items():
            builder = builder.add_extension(
                x509.UnrecognizedExtension(ObjectIdentifier(FULCIO + raw_oids[field]), value.encode()),
                critical=False,
            )
        return builder.sign(signer or self.inter_key, hashes.SHA384())

    def bundle(
        self,
        statement: bytes,
        *,
        subject: str = "release@example.com",
        issuer: str = "https://issuer.ostiary.test",
        extensions: dict[str, str] | None = None,
        integrated: datetime = SIGNED_AT,
        logged_statement: bytes | None = None,  # the log entry names another payload
        set_key=None,  # sign the SET with another key
        leaf: x509.Certificate | None = None,
        leaf_key=None,
        tlog: bool = True,
        tamper_proof: bool = False,
        key_based: bool = False,
    ) -> bytes:
        key = leaf_key or ec.generate_private_key(ec.SECP256R1())
        cert = leaf or self.leaf(key, subject=subject, issuer=issuer, extensions=extensions)
        signature = key.sign(cs.pae(IN_TOTO, statement), ec.ECDSA(hashes.SHA256()))
        sig_b64 = _b64(signature)
        pem = cert.public_bytes(serialization.Encoding.PEM)
        logged = logged_statement if logged_statement is not None else statement
        body = _canonical(
            {
                "apiVersion": "0.0.1",
                "kind": "dsse",
                "spec": {
                    "envelopeHash": {"algorithm": "sha256", "value": hashlib.sha256(b"envelope").hexdigest()},
                    "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(logged).hexdigest()},
                    "signatures": [{"signature": sig_b64, "verifier": _b64(pem)}],
                },
            }
        )
        body_b64 = _b64(body)
        when = int(integrated.timestamp())
        set_payload = _canonical(
            {"body": body_b64, "integratedTime": when, "logID": self.log_id.hex(), "logIndex": 7}
        )
        set_signature = (set_key or self.log_key).sign(set_payload, ec.ECDSA(hashes.SHA256()))
        root_hash = hashlib.sha256(b"\x00" + body).digest()
        if tamper_proof:
            root_hash = hashlib.sha256(b"other").digest()
        note = f"rekor.ostiary.test - 1\n1\n{_b64(root_hash)}\n"
        note_sig = self.log_key.sign(note.encode(), ec.ECDSA(hashes.SHA256()))
        checkpoint = note + "\n\u2014 rekor.ostiary.test " + _b64(self.log_id[:4] + note_sig) + "\n"
        entry = {
            "logIndex": "7",
            "logId": {"keyId": _b64(self.log_id)},
            "kindVersion": {"kind": "dsse", "version": "0.0.1"},
            "integratedTime": str(when),
            "inclusionPromise": {"signedEntryTimestamp": _b64(set_signature)},
            "inclusionProof": {
                "logIndex": "0",
                "rootHash": _b64(root_hash),
                "treeSize": "1",
                "hashes": [],
                "checkpoint": {"envelope": checkpoint},
            },
            "canonicalizedBody": body_b64,
        }
        material: dict[str, Any] = (
            {"publicKey": {"hint": "k"}}
            if key_based
            else {"certificate": {"rawBytes": _b64(cert.public_bytes(serialization.Encoding.DER))}}
        )
        material["tlogEntries"] = [entry] if tlog else []
        return json.dumps(
            {
                "mediaType": cs.BUNDLE,
                "verificationMaterial": material,
                "dsseEnvelope": {
                    "payload": _b64(statement),
                    "payloadType": IN_TOTO,
                    "signatures": [{"sig": sig_b64}],
                },
            },
            separators=(",", ":"),
        ).encode()
