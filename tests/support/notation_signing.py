"""Notation signatures made in Python, in the shapes notation v1.3.2 writes (compare the captured real
ones in ../shared/fixtures/signatures/registry): a test CA chain, JWS and COSE envelopes, and the
referrer manifest + fallback index pushed into a test registry.

    pki = Chain.create()                                    # root -> intermediate -> leaf (RSA-2048)
    digest = push.image("made/app", "v1")
    envelope = jws(pki, target(push, "made/app", digest))   # or cose(...)
    push_signature(push, "made/app", digest, envelope, JWS)

Every variant a test needs (another target, an unknown critical header, a leaf without codeSigning,
an expired signature) is made by changing one argument; nothing here validates what it makes.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import cbor2
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.cosign_signing import OCI_INDEX, OCI_MANIFEST, Pusher

JWS = "application/jose+json"
COSE = "application/cose"
ARTIFACT = "application/vnd.cncf.notary.signature"
PAYLOAD_TYPE = "application/vnd.cncf.notary.payload.v1+json"
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def name(cn: str, org: str = "Ostiary Made", **extra: str) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
        x509.NameAttribute(NameOID.LOCALITY_NAME, "Seattle"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
        x509.NameAttribute(NameOID.COMMON_NAME, cn),
    ]
    return x509.Name(attrs)


def _key(kind: str) -> Any:
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    return ec.generate_private_key({"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}[kind])


def certificate(
    subject: x509.Name,
    key: Any,
    issuer: x509.Name,
    issuer_key: Any,
    *,
    ca: bool,
    eku: Any = None,  # a list of OIDs; None: codeSigning; False: no extension
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    digital_signature: bool = True,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature or ca,
                content_commitment=False,
                key_encipherment=not digital_signature and not ca,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    if not ca and eku is not False:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(eku if eku is not None else [ExtendedKeyUsageOID.CODE_SIGNING]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass
class Chain:
    root: x509.Certificate
    leaf_key: Any
    certs: list[x509.Certificate] = field(default_factory=list)  # leaf first, root last

    @classmethod
    def create(
        cls,
        leaf_kind: str = "rsa2048",
        org: str = "Ostiary Made",
        *,
        root: tuple[x509.Certificate, Any] | None = None,
        leaf_subject: x509.Name | None = None,
        **leaf: Any,
    ) -> Chain:
        """root -> leaf; root given as (cert, key) to issue another leaf of the same root."""
        if root is None:
            root_key = _key("p256")
            root_name = name("Made Root", org)
            root_cert = certificate(root_name, root_key, root_name, root_key, ca=True)
        else:
            root_cert, root_key = root
        leaf_key = _key(leaf_kind)
        leaf_cert = certificate(
            leaf_subject or name("Made Signer", org),
            leaf_key,
            root_cert.subject,
            root_key,
            ca=leaf.pop("ca", False),
            **leaf,
        )
        chain = cls(root_cert, leaf_key, [leaf_cert, root_cert])
        chain.root_key = root_key  # type: ignore[attr-defined]
        return chain

    def root_pem(self) -> str:
        return self.root.public_bytes(serialization.Encoding.PEM).decode()


def target(push: Pusher, repo: str, digest: str) -> dict:
    body = requests.get(
        f"{push.url}/v2/{repo}/manifests/{digest}", headers={"Accept": OCI_MANIFEST}, timeout=10
    ).content
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body)}


def _algorithm(key: Any) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return {2048: "PS256", 3072: "PS384", 4096: "PS512"}[key.key_size]
    return {"secp256r1": "ES256", "secp384r1": "ES384"}[key.curve.name]


def _sign(key: Any, algorithm: str, data: bytes) -> bytes:
    h = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[algorithm[2:]]
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(h)))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def payload(descriptor: dict) -> bytes:
    return json.dumps({"targetArtifact": descriptor}, separators=(",", ":")).encode()


def jws(
    chain: Chain,
    descriptor: dict,
    *,
    algorithm: str | None = None,
    expiry: dt.datetime | None = None,
    extra_protected: dict | None = None,
    crit: list | None = None,
    signed_payload: bytes | None = None,
    timestamper: Any = None,
    signing_time: dt.datetime | None = None,
    authority: dt.datetime | None = None,
) -> bytes:
    """A Notation JWS envelope; `signed_payload` signs other bytes than those carried (tampering);
    `timestamper(signature) -> token` adds an RFC 3161 timestamp (TSA.stamp); `authority` makes it a
    notary.x509.signingAuthority signature with that authentic signing time."""
    alg = algorithm or _algorithm(chain.leaf_key)
    protected: dict = {
        "alg": alg,
        "crit": crit
        or ["io.cncf.notary.signingScheme"]
        + (["io.cncf.notary.expiry"] if expiry else [])
        + (["io.cncf.notary.authenticSigningTime"] if authority else []),
        "cty": PAYLOAD_TYPE,
        "io.cncf.notary.signingScheme": "notary.x509.signingAuthority" if authority else "notary.x509",
    }
    if authority is not None:
        protected["io.cncf.notary.authenticSigningTime"] = authority.strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        protected["io.cncf.notary.signingTime"] = (signing_time or NOW).strftime("%Y-%m-%dT%H:%M:%SZ")
    if expiry is not None:
        protected["io.cncf.notary.expiry"] = expiry.strftime("%Y-%m-%dT%H:%M:%SZ")
    protected.update(extra_protected or {})
    head = _b64url(json.dumps(protected, separators=(",", ":")).encode())
    body = payload(descriptor)
    signing_input = f"{head}.{_b64url(signed_payload or body)}".encode()
    signature = _sign(chain.leaf_key, alg, signing_input)
    header: dict = {
        "x5c": [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode() for c in chain.certs],
        "io.cncf.notary.signingAgent": "ostiary-tests",
    }
    if timestamper is not None:  # notation-go: []byte in JSON, standard base64
        header["io.cncf.notary.timestampSignature"] = base64.b64encode(timestamper(signature)).decode()
    return json.dumps(
        {"payload": _b64url(body), "protected": head, "header": header, "signature": _b64url(signature)}
    ).encode()


def cose(
    chain: Chain,
    descriptor: dict,
    *,
    crit: list | None = None,
    extra_protected: dict | None = None,
    timestamper: Any = None,
) -> bytes:
    alg = _algorithm(chain.leaf_key)
    number = {"PS256": -37, "PS384": -38, "PS512": -39, "ES256": -7, "ES384": -35}[alg]
    protected = {
        1: number,
        2: crit or ["io.cncf.notary.signingScheme"],
        3: PAYLOAD_TYPE,
        "io.cncf.notary.signingScheme": "notary.x509",
        "io.cncf.notary.signingTime": cbor2.CBORTag(1, int(NOW.timestamp())),
        **(extra_protected or {}),
    }
    raw = cbor2.dumps(protected)
    body = payload(descriptor)
    signature = _sign(chain.leaf_key, alg, cbor2.dumps(["Signature1", raw, b"", body]))
    unprotected = {
        33: [c.public_bytes(serialization.Encoding.DER) for c in chain.certs],
        "io.cncf.notary.signingAgent": "ostiary-tests",
    }
    if timestamper is not None:
        unprotected["io.cncf.notary.timestampSignature"] = timestamper(signature)
    return cbor2.dumps(cbor2.CBORTag(18, [raw, unprotected, body, signature]))


def push_signature(
    push: Pusher, repo: str, digest: str, envelope: bytes, media_type: str = JWS, *, fallback: bool = True
) -> str:
    """The referrer manifest notation writes (config = the signature type, one envelope layer, subject),
    pushed by digest and (with `fallback`) listed in the fallback index `sha256-<hex>`."""
    config = push.blob(repo, b"{}")
    layer = push.blob(repo, envelope)
    subject = target(push, repo, digest)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": ARTIFACT, **config},
            "layers": [{"mediaType": media_type, **layer}],
            "subject": subject,
        },
        separators=(",", ":"),
    ).encode()
    referrer = push.manifest(repo, None, body)
    if fallback:
        tag = digest.replace(":", "-")
        existing = requests.get(
            f"{push.url}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_INDEX}, timeout=10
        )
        manifests = existing.json()["manifests"] if existing.status_code == 200 else []
        manifests.append(
            {"mediaType": OCI_MANIFEST, "digest": referrer, "size": len(body), "artifactType": ARTIFACT}
        )
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}).encode()
        push.manifest(repo, tag, index, OCI_INDEX)
    return referrer


# ---- a test timestamping authority (RFC 3161 tokens built with asn1crypto) -------------------------------


@dataclass
class TSA:
    """root -> TSA certificate (RSA-2048, extendedKeyUsage timeStamping, critical), and tokens it signs:
    real CMS SignedData over a TSTInfo, as a TSA answers notation (the token of the response)."""

    root: x509.Certificate
    root_key: Any
    cert: x509.Certificate
    key: Any

    @classmethod
    def create(
        cls,
        *,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        org: str = "Made TSA",
    ) -> TSA:
        root_key = _key("p256")
        root_name = name("Made TSA Root", org)
        root = certificate(root_name, root_key, root_name, root_key, ca=True, not_before=not_before)
        key = _key("rsa2048")
        cert = certificate(
            name("Made Timestamper", org),
            key,
            root_name,
            root_key,
            ca=False,
            eku=False,
            not_before=not_before,
            not_after=not_after,
        )
        # certificate() marks EKU non-critical; RFC 3161 wants timeStamping alone, critical
        cert = (
            x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(cert.issuer)
            .public_key(key.public_key())
            .serial_number(cert.serial_number)
            .not_valid_before(cert.not_valid_before_utc)
            .not_valid_after(cert.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
            .sign(root_key, hashes.SHA256())
        )
        return cls(root, root_key, cert, key)

    def root_pem(self) -> str:
        return self.root.public_bytes(serialization.Encoding.PEM).decode()

    def stamp(
        self,
        data: bytes,
        gen_time: dt.datetime | None = None,
        *,
        accuracy: int | None = 1,
        cert_hash: bytes | None = None,
        tamper_tst: bool = False,
    ) -> bytes:
        """A timestamp token over `data` (the envelope's signature) at `gen_time` (default now)."""
        import hashlib

        from asn1crypto import cms, tsp
        from asn1crypto import x509 as ax509

        fields: dict = {
            "version": "v1",
            "policy": "1.3.6.1.4.1.57264.2",
            "message_imprint": {
                "hash_algorithm": {"algorithm": "sha256"},
                "hashed_message": hashlib.sha256(data).digest(),
            },
            "serial_number": x509.random_serial_number(),
            "gen_time": (gen_time or dt.datetime.now(dt.UTC)).replace(microsecond=0),
        }
        if accuracy is not None:
            fields["accuracy"] = {"seconds": accuracy}
        tst_der = tsp.TSTInfo(fields).dump()
        cert_der = self.cert.public_bytes(serialization.Encoding.DER)
        cert = ax509.Certificate.load(cert_der)
        attrs = cms.CMSAttributes(
            [
                {"type": "content_type", "values": ["tst_info"]},
                {"type": "message_digest", "values": [hashlib.sha256(tst_der).digest()]},
                {
                    "type": "signing_certificate_v2",
                    "values": [{"certs": [{"cert_hash": cert_hash or hashlib.sha256(cert_der).digest()}]}],
                },
            ]
        )
        signature = self.key.sign(attrs.dump(), padding.PKCS1v15(), hashes.SHA256())
        if tamper_tst:  # the signed attributes stay, the TSTInfo carried is another
            fields["serial_number"] += 1
            tst_der = tsp.TSTInfo(fields).dump()
        signer = cms.SignerInfo(
            {
                "version": "v1",
                "sid": cms.SignerIdentifier(
                    {"issuer_and_serial_number": {"issuer": cert.issuer, "serial_number": cert.serial_number}}
                ),
                "digest_algorithm": {"algorithm": "sha256"},
                "signed_attrs": attrs,
                "signature_algorithm": {"algorithm": "sha256_rsa"},
                "signature": signature,
            }
        )
        signed = cms.SignedData(
            {
                "version": "v3",
                "digest_algorithms": [{"algorithm": "sha256"}],
                "encap_content_info": {
                    "content_type": "tst_info",
                    "content": cms.ParsableOctetString(tst_der),
                },
                "certificates": [
                    cert,
                    ax509.Certificate.load(self.root.public_bytes(serialization.Encoding.DER)),
                ],
                "signer_infos": [signer],
            }
        )
        return cms.ContentInfo({"content_type": "signed_data", "content": signed}).dump()
