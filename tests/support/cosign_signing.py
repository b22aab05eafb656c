"""cosign signatures made in Python, in the exact shapes cosign v2 writes (compare the captured real
ones in ../shared/fixtures/signatures/registry), pushed into a test registry through the v2 API.

    push = Pusher(registry_url)
    digest = push.image("made/app", "v1")                       # a small new OCI image
    key = new_key("p256")                                       # or "ed25519", "rsa3072"
    push.legacy_signature("made/app", digest, [legacy_layer(key, payload(f"{host}/made/app", digest))])
    push.bundle_signature("made/app", digest, bundle(key, statement(digest)))

Every variant a test needs (another digest, another identity, an attestation, tampered bytes) is
made by changing one argument; the pushes never validate what they push.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
LEGACY_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY = "application/vnd.oci.empty.v1+json"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"


def _bytes(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- keys --------------------------------------------------------------------------------------------


def new_key(kind: str = "p256") -> Any:
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    raise ValueError(kind)


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def sign(key: Any, message: bytes) -> bytes:
    """As cosign signs with a key: ECDSA / RSA PKCS#1 v1.5 over SHA-256, Ed25519 over the message."""
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(message, ec.ECDSA(hashes.SHA256()))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(message)


# ---- signed documents ------------------------------------------------------------------------------


def payload(identity: str, digest: str, **critical_extra: Any) -> bytes:
    """A legacy payload as cosign writes it (docker-reference: the repository, no tag)."""
    critical = {
        "identity": {"docker-reference": identity},
        "image": {"docker-manifest-digest": digest},
        "type": "cosign container image signature",
        **critical_extra,
    }
    return _bytes({"critical": critical, "optional": None})


def legacy_layer(key: Any, data: bytes, signature: bytes | None = None) -> tuple[bytes, str]:
    """(payload bytes, base64 signature) of one legacy signature layer."""
    sig = signature if signature is not None else sign(key, data)
    return data, base64.b64encode(sig).decode()


def statement(digest: str, predicate_type: str = SIGN_PREDICATE) -> bytes:
    return _bytes(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"digest": {"sha256": digest.split(":", 1)[1]}}],
            "predicateType": predicate_type,
        }
    )


def pae(payload_type: str, body: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(body), body)


def bundle(key: Any, body: bytes) -> bytes:
    """A sigstore bundle v0.3 holding a DSSE envelope of `body`, as `cosign sign --new-bundle-format`."""
    sig = sign(key, pae("application/vnd.in-toto+json", body))
    return _bytes(
        {
            "mediaType": BUNDLE,
            "verificationMaterial": {"publicKey": {"hint": "made-in-python"}},
            "dsseEnvelope": {
                "payload": base64.b64encode(body).decode(),
                "payloadType": "application/vnd.in-toto+json",
                "signatures": [{"sig": base64.b64encode(sig).decode()}],
            },
        }
    )


# ---- the registry ------------------------------------------------------------------------------------


class Pusher:
    def __init__(self, registry_url: str):
        self.url = registry_url.rstrip("/")
        self._serial = 0

    def blob(self, repo: str, data: bytes) -> dict:
        digest = sha256(data)
        start = requests.post(f"{self.url}/v2/{repo}/blobs/uploads/", timeout=10)
        start.raise_for_status()
        location = start.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        done = requests.put(
            f"{location}{sep}digest={digest}",
            data=data,
            headers={"Content-Type": "application/octet-stream"},
            timeout=10,
        )
        done.raise_for_status()
        return {"digest": digest, "size": len(data)}

    def manifest(self, repo: str, reference: str | None, body: bytes, media_type: str = OCI_MANIFEST) -> str:
        """PUT `body` at `reference` (a tag), or by its digest when reference is None; its digest."""
        digest = sha256(body)
        answer = requests.put(
            f"{self.url}/v2/{repo}/manifests/{reference or digest}",
            data=body,
            headers={"Content-Type": media_type},
            timeout=10,
        )
        if answer.status_code >= 300:
            raise RuntimeError(f"PUT manifest {repo}:{reference}: {answer.status_code} {answer.text[:300]}")
        return digest

    def image(self, repo: str, tag: str) -> str:
        """A new small OCI image (one config, one layer) at repo:tag; its digest."""
        self._serial += 1
        layer = self.blob(repo, f"layer {repo}:{tag} {self._serial}".encode())
        config = self.blob(
            repo,
            _bytes(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
                }
            ),
        )
        body = _bytes(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
            }
        )
        return self.manifest(repo, tag, body)

    def legacy_signature(
        self, repo: str, digest: str, layers: list[tuple[bytes, str]], tag_of: str | None = None
    ) -> str:
        """The `.sig` manifest of `digest` (tag `sha256-<hex>.sig`, or that of `tag_of`) with these
        (payload, base64 signature) layers."""
        descriptors = []
        for data, signature in layers:
            descriptors.append(
                {
                    "mediaType": LEGACY_LAYER,
                    **self.blob(repo, data),
                    "annotations": {"dev.cosignproject.cosign/signature": signature},
                }
            )
        config = self.blob(
            repo, _bytes({"architecture": "", "os": "", "rootfs": {"type": "layers", "diff_ids": []}})
        )
        body = _bytes(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
                "layers": descriptors,
            }
        )
        return self.manifest(repo, (tag_of or digest).replace(":", "-") + ".sig", body)

    def bundle_signature(
        self,
        repo: str,
        digest: str,
        data: bytes,
        subject: str | None = None,
        artifact_type: str = BUNDLE,
        fallback: bool = True,
    ) -> str:
        """A referrer manifest holding bundle `data` with subject `digest` (or `subject`), pushed by
        digest, and (with `fallback`) listed in the fallback index tag `sha256-<hex>` of the subject
        (entries say `oci.empty`, as cosign writes them). The referrer's digest."""
        subject = subject or digest
        empty = self.blob(repo, b"{}")
        layer = self.blob(repo, data)
        body = _bytes(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "artifactType": artifact_type,
                "config": {"mediaType": EMPTY, **empty},
                "layers": [{"mediaType": BUNDLE, **layer}],
                "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 0},
                "annotations": {"dev.sigstore.bundle.content": "dsse-envelope"},
            }
        )
        referrer = self.manifest(repo, None, body)
        if not fallback:  # a registry with the referrers API lists it by its subject
            return referrer
        tag = subject.replace(":", "-")
        existing = requests.get(
            f"{self.url}/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_INDEX}, timeout=10
        )
        manifests = existing.json()["manifests"] if existing.status_code == 200 else []
        manifests.append(
            {"mediaType": OCI_MANIFEST, "digest": referrer, "size": len(body), "artifactType": EMPTY}
        )
        index = _bytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})
        self.manifest(repo, tag, index, OCI_INDEX)
        return referrer
