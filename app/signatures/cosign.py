"""cosign key-based signatures (Ostiary's `policy.cosign`): one key requirement of one image.

What is checked here, in Python (the facts say what each signature proves; the Rego library decides
keys, digest and identity, rego/ostiary/signatures.rego):

1. The requirement's key Secret holds PEM public keys of a type cosign signs with: ECDSA P-256
   (cosign generate-key-pair), P-384 or P-521 (SHA-256, as `cosign verify --key`), RSA of 2048 bits
   or more (PKCS#1 v1.5, SHA-256) and Ed25519. Anything else in the Secret fails the requirement.
2. The digest the reference resolves to: the sha256 of the manifest bytes the registry serves now
   for a tag; the digest itself for a digest reference. Signatures are looked up for that digest
   only, so a tag moved to an unsigned digest finds none.
3. Legacy signatures: the manifest at tag `sha256-<hex>.sig`, one layer per signature
   (`application/vnd.dev.cosign.simplesigning.v1+json`), its blob the signed payload
   `{"critical": {"identity": {"docker-reference"}, "image": {"docker-manifest-digest"},
   "type": "cosign container image signature"}, "optional": …}`, the signature (base64) in the
   layer's `dev.cosignproject.cosign/signature` annotation, over the payload bytes.
4. Bundles (`cosign sign --new-bundle-format`): referrers of the digest, from the OCI 1.1
   referrers API and from the fallback tag `sha256-<hex>` (both are read; the listing's
   `artifactType` may say `oci.empty`, so each manifest's own artifact type decides). A
   referrer counts when it is a sigstore bundle holding a DSSE envelope of an in-toto statement
   whose predicateType is cosign's signature type `https://sigstore.dev/cosign/sign/v1`: an
   attestation is not a signature. The statement's subject names the digest it signs.

Every document is bounded (sizes, counts), every read is one bounded GET under the deadline
(registry.py), and JSON is parsed strictly (no duplicate keys, no floats). Rekor and timestamp
entries are not read: key-based verification as `cosign verify --key … --insecure-ignore-tlog`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from app.errors import VerificationError
from app.images import ImageRef
from app.lru import TTLCache
from app.notary import clock as clocks
from app.signatures import keyless
from app.signatures.cache import SignatureCache, fingerprint, no_cache
from app.signatures.facts import failure_facts, signature_entry, verified_facts
from app.signatures.material import b64_text, exact_object, load_material, pem_blocks, strict_json
from app.signatures.port import SignatureRequest
from app.signatures.referrers import EMPTY_TYPE, is_digest, read_referrers
from app.signatures.registry import Manifest, ReadError, RegistryUnavailable, SignatureReads

FORMAT = "cosign"
MAX_KEYS = 16  # public keys in one Secret
MAX_KEY_MATERIAL = 64 * 1024
MAX_LEGACY_LAYERS = 32  # signatures in one `.sig` manifest
MAX_PAYLOAD_BYTES = 64 * 1024  # a legacy payload or a DSSE payload
MAX_BUNDLE_BYTES = 256 * 1024
MAX_SIGNATURE_CHARS = 4096  # one base64 signature
MAX_DSSE_SIGNATURES = 8
MAX_SUBJECTS = 16

LEGACY_LAYER = "application/vnd.dev.cosign.simplesigning.v1+json"
LEGACY_ANNOTATION = "dev.cosignproject.cosign/signature"
LEGACY_TYPE = "cosign container image signature"
BUNDLE_TYPES = frozenset(
    {
        "application/vnd.dev.sigstore.bundle.v0.3+json",
        "application/vnd.dev.sigstore.bundle+json;version=0.3",
    }
)
IN_TOTO = "application/vnd.in-toto+json"
STATEMENT_TYPES = frozenset({"https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"})
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"


class CosignError(VerificationError, ValueError):
    """A key, payload, envelope or manifest Ostiary does not accept; the message says why."""


# ---- keys ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicKey:
    fingerprint: str  # sha256 of the DER SubjectPublicKeyInfo, "sha256:<hex>"
    kind: str  # "ecdsa-p256", "rsa-3072", "ed25519", ...
    key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

    def verifies(self, message: bytes, signature: bytes) -> bool:
        try:
            if isinstance(self.key, ec.EllipticCurvePublicKey):
                self.key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
            elif isinstance(self.key, rsa.RSAPublicKey):
                self.key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
            elif isinstance(self.key, ed25519.Ed25519PublicKey):
                self.key.verify(signature, message)
            else:  # pragma: no cover - read_public_keys admits no other type
                return False
        except (InvalidSignature, ValueError):
            return False
        return True


_CURVES = {"secp256r1": "ecdsa-p256", "secp384r1": "ecdsa-p384", "secp521r1": "ecdsa-p521"}


def _bundle_type(value: object) -> bool:
    """A bundle's media type; any other JSON value (a list, an object: unhashable) is simply not one."""
    return isinstance(value, str) and value in BUNDLE_TYPES


def read_public_keys(material: bytes) -> list[PublicKey]:
    """The cosign public keys in PEM `material` (one or more `PUBLIC KEY` blocks); raises
    CosignError naming the first block Ostiary does not accept."""
    if len(material) > MAX_KEY_MATERIAL:
        raise CosignError(f"key material larger than {MAX_KEY_MATERIAL} bytes")
    blocks = pem_blocks(material, "PUBLIC KEY", MAX_KEYS, CosignError, f"more than {MAX_KEYS} public keys")
    if not blocks:
        raise CosignError("no PEM `PUBLIC KEY` block (cosign.pub) found")
    keys = []
    for n, block in enumerate(blocks, 1):
        try:
            key = serialization.load_pem_public_key(block)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise CosignError(f"public key {n} is not a readable PEM public key ({exc})") from None
        if isinstance(key, ec.EllipticCurvePublicKey):
            kind = _CURVES.get(key.curve.name)
            if kind is None:
                raise CosignError(f"public key {n} is on curve {key.curve.name}, not P-256, P-384 or P-521")
        elif isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise CosignError(f"public key {n} is RSA of {key.key_size} bits; at least 2048 are needed")
            kind = f"rsa-{key.key_size}"
        elif isinstance(key, ed25519.Ed25519PublicKey):
            kind = "ed25519"
        else:
            raise CosignError(f"public key {n} is a {type(key).__name__}, not a key type cosign signs with")
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        keys.append(PublicKey("sha256:" + hashlib.sha256(der).hexdigest(), kind, key))
    return keys


def load_keys(request: SignatureRequest) -> tuple[list[PublicKey], list[str]]:
    """The usable keys of the requirement's Secrets, and why a Secret gave none."""
    return load_material(request, lambda _secret, material: read_public_keys(material), CosignError)


def _b64(text: object, what: str, limit: int) -> bytes:
    return b64_text(text, what, limit, CosignError)


# ---- payloads -------------------------------------------------------------------------------------------


def _object(value: object, required: set[str], optional: set[str], where: str) -> dict:
    return exact_object(value, required, optional, where, CosignError)


def _json(data: bytes, what: str) -> object:
    return strict_json(data, what, CosignError)


def parse_legacy_payload(payload: bytes) -> tuple[str, str]:
    """(docker-reference, docker-manifest-digest) of a legacy cosign payload, strictly."""
    top = _object(_json(payload, "the signed payload"), {"critical"}, {"optional"}, "the signed payload")
    critical = _object(top["critical"], {"identity", "image", "type"}, set(), "critical")
    if critical["type"] != LEGACY_TYPE:
        raise CosignError(f"critical.type is {critical['type']!r}, not {LEGACY_TYPE!r}")
    identity = _object(critical["identity"], {"docker-reference"}, set(), "critical.identity")
    image = _object(critical["image"], {"docker-manifest-digest"}, set(), "critical.image")
    reference, digest = identity["docker-reference"], image["docker-manifest-digest"]
    if not isinstance(reference, str) or not reference:
        raise CosignError("critical.identity.docker-reference is not a string")
    if not is_digest(digest):
        raise CosignError("critical.image.docker-manifest-digest is not a sha256 digest")
    if top.get("optional") is not None and not isinstance(top["optional"], dict):
        raise CosignError("optional is neither an object nor null")
    return reference, digest


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class Bundle:
    payload: bytes  # the in-toto statement
    signatures: tuple[bytes, ...]


def parse_bundle(data: bytes) -> Bundle:
    """The DSSE envelope of a sigstore bundle (v0.3), strictly; raises CosignError."""
    bundle = _json(data, "the bundle")
    if not isinstance(bundle, dict):
        raise CosignError("the bundle is not a JSON object")
    if not _bundle_type(bundle.get("mediaType")):
        raise CosignError(
            f"bundle mediaType {str(bundle.get('mediaType'))[:80]!r} is not a sigstore bundle v0.3"
        )
    if "dsseEnvelope" not in bundle:
        raise CosignError("the bundle holds no DSSE envelope (cosign signs images with one)")
    envelope = _object(
        bundle["dsseEnvelope"], {"payload", "payloadType", "signatures"}, set(), "dsseEnvelope"
    )
    if envelope["payloadType"] != IN_TOTO:
        raise CosignError(f"DSSE payloadType is {str(envelope['payloadType'])[:80]!r}, not {IN_TOTO}")
    payload = _b64(envelope["payload"], "the DSSE payload", MAX_PAYLOAD_BYTES * 4 // 3 + 4)
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or not 1 <= len(signatures) <= MAX_DSSE_SIGNATURES:
        raise CosignError(f"the DSSE envelope must hold 1 to {MAX_DSSE_SIGNATURES} signatures")
    sigs = []
    for item in signatures:
        item = _object(item, {"sig"}, {"keyid"}, "a DSSE signature")
        sigs.append(_b64(item["sig"], "a DSSE signature", MAX_SIGNATURE_CHARS))
    return Bundle(payload, tuple(sigs))


def parse_statement(payload: bytes, image_digest: str) -> str:
    """The digest an in-toto statement of cosign's signature type signs (the image's, when it is
    among its subjects); raises CosignError, naming an attestation as not a signature."""
    statement = _object(
        _json(payload, "the in-toto statement"),
        {"_type", "subject", "predicateType"},
        {"predicate"},
        "the statement",
    )
    if statement["_type"] not in STATEMENT_TYPES:
        raise CosignError(f"statement _type {str(statement['_type'])[:80]!r} is not in-toto's")
    if statement["predicateType"] != SIGN_PREDICATE:
        raise CosignError(
            f"an attestation (predicateType {str(statement['predicateType'])[:120]!r}), not a cosign "
            f"signature ({SIGN_PREDICATE})"
        )
    subjects = statement["subject"]
    if not isinstance(subjects, list) or not 1 <= len(subjects) <= MAX_SUBJECTS:
        raise CosignError(f"the statement must name 1 to {MAX_SUBJECTS} subjects")
    digests = []
    for subject in subjects:
        subject = _object(subject, {"digest"}, {"name", "uri", "annotations"}, "a statement subject")
        digest = subject["digest"]
        if not isinstance(digest, dict) or not is_digest("sha256:" + str(digest.get("sha256"))):
            raise CosignError("a statement subject has no sha256 digest")
        digests.append("sha256:" + digest["sha256"])
    return image_digest if image_digest in digests else digests[0]


# ---- the verifier -----------------------------------------------------------------------------------


class CosignVerifier:
    format = FORMAT

    def __init__(
        self,
        reader: SignatureReads,
        *,
        cache_entries: int = 4096,
        trusted_root: keyless.TrustedRoot | None = None,
        now: Callable[[], datetime] = clocks.utcnow,
        cache: SignatureCache | None = None,
    ):
        self.reader = reader
        self.cache = cache or no_cache()  # verified facts and tag resolutions (cache.py)
        # keyless requirements: the Sigstore trusted root (serve --sigstore-trusted-root, else the
        # public-good root Ostiary ships), read on first use; `now` only bounds the integrated time
        self._root = trusted_root
        self._root_error: str | None = None
        self._now = now
        # verified signatures: (key fingerprint, sha256 of the signed bytes, sha256 of the signature)
        # -> verified. Keyed by exactly what was verified, so an entry never answers for other bytes
        # or keys; bounded in count and, by hashing, in size.
        self._verified: TTLCache[tuple[str, str, str], bool] = TTLCache(float("inf"), cache_entries)

    @SignatureCache.single_flight
    def verify(self, request: SignatureRequest, deadline: float) -> dict:
        requirement = request.requirement
        if isinstance(requirement.get("error"), str):
            return failure_facts(FORMAT, requirement, requirement["error"])
        if requirement.get("type") == "keyless":
            return self._verify_keyless(request, deadline)
        keys, key_errors = load_keys(request)
        if key_errors or not keys:
            return failure_facts(FORMAT, requirement, "; ".join(key_errors) or "the requirement names no key")
        try:
            material = fingerprint(k.fingerprint for k in keys)
            digest, key, cached = self.cache.lookup(self.reader, request, deadline, FORMAT, material)
            if cached is not None:
                return cached
            signatures = self._legacy(request, digest, keys, deadline)
            signatures += self._bundles(request, digest, keys, deadline)
        except ReadError as exc:
            return failure_facts(
                FORMAT, requirement, str(exc), unavailable=isinstance(exc, RegistryUnavailable)
            )
        facts = verified_facts(FORMAT, requirement, digest, [k.fingerprint for k in keys], signatures)
        return self.cache.put(key, facts)

    def trusted_root(self) -> keyless.TrustedRoot:
        """The trusted root of keyless requirements; raises KeylessError when it cannot be read."""
        if self._root is None:
            if self._root_error is not None:
                raise keyless.KeylessError(self._root_error)
            try:
                self._root = keyless.load_trusted_root()
            except keyless.KeylessError as exc:
                self._root_error = str(exc)
                raise
        return self._root

    def _verify_keyless(self, request: SignatureRequest, deadline: float) -> dict:
        requirement = request.requirement
        try:
            root = self.trusted_root()
        except keyless.KeylessError as exc:
            return failure_facts(FORMAT, requirement, f"no Sigstore trusted root: {exc}")
        try:
            material = fingerprint(["keyless", root.digest])
            digest, key, cached = self.cache.lookup(self.reader, request, deadline, FORMAT, material)
            if cached is not None:
                return cached
            signatures = self._legacy_keyless(request, digest, deadline)
            signatures += self._bundles(request, digest, [], deadline, root=root)
        except ReadError as exc:
            return failure_facts(
                FORMAT, requirement, str(exc), unavailable=isinstance(exc, RegistryUnavailable)
            )
        facts = verified_facts(FORMAT, requirement, digest, [], signatures)
        facts["trusted_root"] = {"name": root.name, "digest": root.digest}
        return self.cache.put(key, facts)

    def _legacy_keyless(self, request: SignatureRequest, digest: str, deadline: float) -> list[dict]:
        """Legacy `.sig` signatures are refused for keyless requirements, with the reason."""
        image = request.image
        tag = digest.replace(":", "-", 1) + ".sig"
        if self.reader.manifest(image, tag, deadline, request.credentials) is None:
            return []
        return [
            signature_entry(
                f"{image.name}:{tag}",
                error="legacy `.sig` signatures are not read for keyless requirements (their Rekor bundle "
                "in an annotation proves no inclusion offline and no public one could be tested); sign "
                "with the bundle format (cosign v3's default, `--new-bundle-format` in v2)",
            )
        ]

    def discover(
        self, image: ImageRef, credentials: tuple[tuple[str, str], ...], deadline: float
    ) -> tuple[str, int]:
        """Every read `verify` makes for `image`, with no key (for `ostiary trust capture`): the digest
        and how many signatures were found. Raises ReadError."""
        request = SignatureRequest(image=image, requirement={"format": FORMAT}, credentials=credentials)
        digest = no_cache().resolve(self.reader, request, deadline)
        found = self._legacy(request, digest, [], deadline) + self._bundles(request, digest, [], deadline)
        return digest, len(found)

    def _signer(self, keys: Sequence[PublicKey], message: bytes, signature: bytes) -> PublicKey | None:
        digest = hashlib.sha256(message).hexdigest()
        signed = hashlib.sha256(signature).hexdigest()
        for key in keys:
            cache_key = (key.fingerprint, digest, signed)
            hit, verified = self._verified.get(cache_key)
            if not hit:
                verified = key.verifies(message, signature)
                self._verified.put(cache_key, verified)
            if verified:
                return key
        return None

    # -- legacy `.sig` tag --------------------------------------------------------------------------------

    def _legacy(
        self, request: SignatureRequest, digest: str, keys: Sequence[PublicKey], deadline: float
    ) -> list[dict]:
        image = request.image
        tag = digest.replace(":", "-", 1) + ".sig"
        manifest = self.reader.manifest(image, tag, deadline, request.credentials)
        if manifest is None:
            return []
        source = f"{image.name}:{tag}"
        try:
            layers = _manifest_layers(manifest)
        except CosignError as exc:
            return [signature_entry(source, error=str(exc))]
        found = []
        payloads: dict[str, bytes] = {}
        for n, layer in enumerate(layers):
            where = f"{source} layer {n}"
            if n >= MAX_LEGACY_LAYERS:
                found.append(
                    signature_entry(
                        where, error=f"more than {MAX_LEGACY_LAYERS} signatures; the rest are not read"
                    )
                )
                break
            found.append(self._legacy_one(request, where, layer, keys, payloads, deadline))
        return found

    def _legacy_one(
        self,
        request: SignatureRequest,
        where: str,
        layer: object,
        keys: Sequence[PublicKey],
        payloads: dict[str, bytes],
        deadline: float,
    ) -> dict:
        try:
            if not isinstance(layer, dict) or layer.get("mediaType") != LEGACY_LAYER:
                raise CosignError(f"the layer is not a cosign signature ({LEGACY_LAYER})")
            annotations = layer.get("annotations")
            if not isinstance(annotations, dict) or LEGACY_ANNOTATION not in annotations:
                raise CosignError(f"the layer has no {LEGACY_ANNOTATION} annotation")
            signature = _b64(annotations[LEGACY_ANNOTATION], "the signature annotation", MAX_SIGNATURE_CHARS)
            blob = layer.get("digest")
            size = layer.get("size")
            if not is_digest(blob) or not isinstance(size, int) or not 0 < size <= MAX_PAYLOAD_BYTES:
                raise CosignError(
                    f"the layer's payload descriptor is not a sha256 blob of at most {MAX_PAYLOAD_BYTES} bytes"
                )
        except CosignError as exc:
            return signature_entry(where, error=str(exc))
        if blob not in payloads:
            try:
                payloads[blob] = self.reader.blob(
                    request.image, blob, deadline, request.credentials, limit=MAX_PAYLOAD_BYTES
                )
            except ReadError as exc:  # this signature proves nothing; another may
                return signature_entry(where, error=str(exc))
        payload = payloads[blob]
        signer = self._signer(keys, payload, signature)
        if signer is None:
            return signature_entry(
                where, error="the signature does not verify with any key of the key secret"
            )
        try:
            reference, signed = parse_legacy_payload(payload)
        except CosignError as exc:
            return signature_entry(where, key_id=signer.fingerprint, error=str(exc))
        return signature_entry(where, key_id=signer.fingerprint, identity=reference, digest=signed)

    # -- bundles: referrers API and fallback tag ----------------------------------------------------------

    def _bundles(
        self,
        request: SignatureRequest,
        digest: str,
        keys: Sequence[PublicKey],
        deadline: float,
        *,
        root: keyless.TrustedRoot | None = None,
    ) -> list[dict]:
        return read_referrers(
            self.reader,
            request,
            digest,
            deadline,
            kinds=BUNDLE_TYPES | {EMPTY_TYPE},
            error=CosignError,
            read_one=lambda ref, where: self._bundle_one(request, where, ref, digest, keys, deadline, root),
        )

    def _bundle_one(
        self,
        request: SignatureRequest,
        where: str,
        ref: str,
        digest: str,
        keys: Sequence[PublicKey],
        deadline: float,
        root: keyless.TrustedRoot | None = None,
    ) -> dict | None:
        """The signature a referrer manifest holds; None when it is not a sigstore bundle at all.
        With `root`, the bundle is verified as a keyless one (keyless.py) instead of with `keys`."""
        manifest = self.reader.manifest(request.image, ref, deadline, request.credentials)
        if manifest is None:
            return signature_entry(where, error="the registry lists this referrer but has no such manifest")
        try:
            blob = _bundle_layer(manifest.body, digest)
        except CosignError as exc:
            return signature_entry(where, error=str(exc))
        if blob is None:
            return None
        try:
            data = self.reader.blob(
                request.image, blob, deadline, request.credentials, limit=MAX_BUNDLE_BYTES
            )
            if root is not None:
                return self._keyless_one(where, data, digest, root)
            bundle = parse_bundle(data)
        except (ReadError, CosignError) as exc:
            return signature_entry(where, error=str(exc))
        return self._keyed_one(where, bundle, digest, keys)

    def _keyed_one(self, where: str, bundle: Bundle, digest: str, keys: Sequence[PublicKey]) -> dict:
        """One bundle signed with a key: the first key of the Secret its signature verifies with."""
        message = pae(IN_TOTO, bundle.payload)
        signer = next(
            (k for sig in bundle.signatures if (k := self._signer(keys, message, sig)) is not None), None
        )
        if signer is None:
            return signature_entry(
                where, error="the bundle's signature does not verify with any key of the key secret"
            )
        try:
            signed = parse_statement(bundle.payload, digest)
        except CosignError as exc:
            return signature_entry(where, key_id=signer.fingerprint, error=str(exc))
        return signature_entry(where, key_id=signer.fingerprint, digest=signed)

    def _keyless_one(self, where: str, data: bytes, digest: str, root: keyless.TrustedRoot) -> dict:
        """One keyless bundle: verified offline against `root`; the certificate's identity in the facts
        (with the reason when the bundle proves nothing, so a denial can say whose it was)."""
        document = _json(data, "the bundle")
        if not isinstance(document, dict) or not _bundle_type(document.get("mediaType")):
            raise CosignError("the bundle is not a sigstore bundle v0.3")
        try:
            verified = keyless.verify_bundle(document, root, self._now())
        except keyless.KeylessError as exc:
            return signature_entry(where, error=str(exc))
        proved = {"certificate": verified.certificate, "log_entry": verified.log_entry()}
        try:
            signed = parse_statement(verified.payload, digest)
        except CosignError as exc:
            return {**signature_entry(where, error=str(exc)), **proved}
        return {**signature_entry(where, digest=signed), **proved}


def _bundle_layer(body: bytes, digest: str) -> str | None:
    """The digest of the one sigstore bundle a referrer manifest for `digest` holds; None when the
    referrer is not a bundle at all. Raises CosignError for a bundle referrer that is malformed."""
    document = _json(body, "the referrer manifest")
    if not isinstance(document, dict):
        raise CosignError("the referrer manifest is not a JSON object")
    config = document.get("config")
    artifact = document.get("artifactType") or (config.get("mediaType") if isinstance(config, dict) else None)
    if artifact not in BUNDLE_TYPES:
        return None
    subject = document.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != digest:
        raise CosignError(f"the referrer's subject is not {digest}")
    layers = document.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        raise CosignError("a bundle referrer must have exactly one layer")
    layer = layers[0]
    blob, size = layer.get("digest"), layer.get("size")
    if not _bundle_type(layer.get("mediaType")) or not is_digest(blob):
        raise CosignError("the referrer's layer is not a sigstore bundle")
    if not isinstance(size, int) or not 0 < size <= MAX_BUNDLE_BYTES:
        raise CosignError(f"the bundle is larger than {MAX_BUNDLE_BYTES} bytes")
    return blob


def _manifest_layers(manifest: Manifest) -> list:
    document = _json(manifest.body, "the signature manifest")
    if not isinstance(document, dict) or not isinstance(document.get("layers"), list):
        raise CosignError("the signature manifest has no layers")
    return document["layers"]
