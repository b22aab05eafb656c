"""Captured signatures (cosign, simple signing) for the offline commands: record what registries and
signature stores serve, byte for byte, and answer the verifiers from those bytes later.

Why a replaying *reader* and not canned facts: the verifiers (cosign.py, simple.py) read everything
through RegistryReader's four calls (manifest, blob, referrers, store_get). A reader answering those
calls from a capture keeps every check of the webhook (digests recomputed from bytes, signatures,
payloads, bounds, identity rules in Rego) for `ostiary apply/explain/test --trust-data`. A capture is
made by running the same reads against the live registry through a recording reader, so it holds
exactly what a verifier reads, including the answers that were 404.

Layout: DIR/ostiary-signatures.json and DIR/blobs/sha256/<hex> (manifests, blobs, referrers
listings and store files, by the sha256 of their bytes):

    {"format": "ostiary.dev/signature-capture/v1",
     "registries": {"<registry host>": {"<repository>": {
         "tags": {"<tag>": "sha256:…"}, "manifests": {"sha256:…": "<media type>"},
         "absent": ["<tag or digest answered 404>"],
         "referrers": {"sha256:<subject>": "sha256:<listing>" | null (no referrers API)}}}},
     "stores": {"<storeURL>": {"<path under it>": "sha256:…" | null (404)}}}

A read the capture did not record is an error naming the image and how to capture it, never a 404.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from app.errors import InputError
from app.images import ImageRef, InvalidImageReference, parse_image
from app.notary import clock as clocks
from app.notary.client import NotaryClient
from app.registry.token import HttpAnswer
from app.signatures import inspect, keyless
from app.signatures.cosign import CosignVerifier
from app.signatures.facts import failure_facts
from app.signatures.notation import NotationVerifier
from app.signatures.port import SignatureRequest, SignatureVerifier
from app.signatures.registry import Manifest, ReadError, RegistryReader, SignatureReads
from app.signatures.service import SignatureService
from app.signatures.simple import SimpleVerifier

INDEX_NAME = "ostiary-signatures.json"
INDEX_FORMAT = "ostiary.dev/signature-capture/v1"
CAPTURE_FORMATS = ("cosign", "simple")


class SignatureDataError(InputError):
    """A signature capture cannot be used; the message says which and why."""


def is_capture(directory: str | Path) -> bool:
    return (Path(directory) / INDEX_NAME).is_file()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Capture:
    """One capture in memory: the index and where its blobs are."""

    root: Path
    registries: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    stores: dict[str, dict[str, str | None]] = field(default_factory=dict)
    _new: dict[str, bytes] = field(default_factory=dict)  # blobs recorded, not yet written

    # -- reading --------------------------------------------------------------------------------------

    @classmethod
    def load(cls, directory: str | Path) -> Capture:
        root = Path(directory)
        try:
            index = json.loads((root / INDEX_NAME).read_text())
        except (OSError, ValueError) as exc:
            raise SignatureDataError(f"{root / INDEX_NAME}: {exc}") from None
        if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
            raise SignatureDataError(f"{root / INDEX_NAME}: not a signature capture ({INDEX_FORMAT})")
        registries, stores = index.get("registries") or {}, index.get("stores") or {}
        if not isinstance(registries, dict) or not isinstance(stores, dict):
            raise SignatureDataError(f"{root / INDEX_NAME}: registries and stores must be mappings")
        return cls(root, registries, stores)

    def bytes_of(self, digest: str, what: str) -> bytes:
        if digest in self._new:
            return self._new[digest]
        hexdigest = digest.split(":", 1)[-1]
        if not digest.startswith("sha256:") or len(hexdigest) != 64 or not hexdigest.isalnum():
            raise ReadError(f"captured {what}: {digest!r} is not a sha256 digest")
        path = self.root / "blobs" / "sha256" / hexdigest
        try:
            data = path.read_bytes()
        except OSError:
            raise ReadError(
                f"captured {what} {digest} is missing from {self.root}: capture it again"
            ) from None
        if _sha(data) != digest:
            raise ReadError(f"captured {what} {digest} in {self.root} does not hash to its name")
        return data

    def repository(self, image: ImageRef) -> dict[str, Any] | None:
        repo = (self.registries.get(image.registry) or {}).get(image.repository)
        return repo if isinstance(repo, dict) else None

    # -- writing --------------------------------------------------------------------------------------

    def put(self, data: bytes) -> str:
        digest = _sha(data)
        self._new[digest] = data
        return digest

    def record_repository(self, image: ImageRef) -> dict[str, Any]:
        repos = self.registries.setdefault(image.registry, {})
        return repos.setdefault(
            image.repository, {"tags": {}, "manifests": {}, "absent": [], "referrers": {}}
        )

    def write(self) -> None:
        blobs = self.root / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        for digest, data in self._new.items():
            (blobs / digest.split(":", 1)[1]).write_bytes(data)
        self._new.clear()
        index = {"format": INDEX_FORMAT, "registries": self.registries, "stores": self.stores}
        (self.root / INDEX_NAME).write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


class ReplayReader:
    """RegistryReader's reads, answered from captures. Nothing goes to the network."""

    def __init__(self, captures: Sequence[Capture]):
        self.captures = list(captures)

    def _repo(self, image: ImageRef) -> tuple[Capture, dict[str, Any]]:
        for capture in self.captures:
            repo = capture.repository(image)
            if repo is not None:
                return capture, repo
        raise ReadError(
            f"no captured signature data for {image.name}; record it with "
            f"`ostiary trust capture --format cosign|simple|notation {image.normalized} --out DIR`"
        )

    def manifest(
        self, image: ImageRef, reference: str, deadline: float, credentials: Sequence[tuple[str, str]] = ()
    ) -> Manifest | None:
        capture, repo = self._repo(image)
        digest = reference if reference.startswith("sha256:") else (repo.get("tags") or {}).get(reference)
        if reference in (repo.get("absent") or []) or digest in (repo.get("absent") or []):
            return None
        media = (repo.get("manifests") or {}).get(digest) if isinstance(digest, str) else None
        if not isinstance(digest, str) or not isinstance(media, str):
            raise ReadError(f"the capture of {image.name} has no manifest {reference}: capture it again")
        return Manifest(digest, media, capture.bytes_of(digest, f"manifest of {image.name}"))

    def blob(
        self,
        image: ImageRef,
        digest: str,
        deadline: float,
        credentials: Sequence[tuple[str, str]] = (),
        limit: int = 1 << 20,
    ) -> bytes:
        capture, _ = self._repo(image)
        data = capture.bytes_of(digest, f"blob of {image.name}")
        if len(data) > limit:
            raise ReadError(f"captured blob {digest} of {image.name} is larger than {limit} bytes")
        return data

    def referrers(
        self, image: ImageRef, digest: str, deadline: float, credentials: Sequence[tuple[str, str]] = ()
    ) -> bytes | None:
        capture, repo = self._repo(image)
        listings = repo.get("referrers") or {}
        if digest not in listings:
            raise ReadError(f"the capture of {image.name} has no referrers of {digest}: capture it again")
        listing = listings[digest]
        return None if listing is None else capture.bytes_of(listing, f"referrers of {image.name}")

    def store_get(
        self, url: str, deadline: float, credentials: Sequence[tuple[str, str]] = (), limit: int = 64 * 1024
    ) -> HttpAnswer:
        for capture in self.captures:
            for base, files in capture.stores.items():
                if not url.startswith(base.rstrip("/") + "/") or not isinstance(files, dict):
                    continue
                path = url[len(base.rstrip("/")) + 1 :]
                if path in files:
                    digest = files[path]
                    if digest is None:
                        return HttpAnswer(404, {}, b"")
                    return HttpAnswer(200, {}, capture.bytes_of(digest, f"signature {url}"))
        raise ReadError(f"no captured signature store file {url}: capture it with --store-url")


class RecordingReader:
    """A live RegistryReader whose answers are also written into a Capture."""

    def __init__(self, inner: RegistryReader, capture: Capture, store_urls: Sequence[str] = ()):
        self.inner, self.capture = inner, capture
        self.store_urls = [u.rstrip("/") for u in store_urls]
        self._lock = threading.Lock()

    def manifest(
        self, image: ImageRef, reference: str, deadline: float, credentials: Sequence[tuple[str, str]] = ()
    ) -> Manifest | None:
        manifest = self.inner.manifest(image, reference, deadline, credentials)
        with self._lock:
            repo = self.capture.record_repository(image)
            if manifest is None:
                if reference not in repo["absent"]:
                    repo["absent"].append(reference)
                return None
            self.capture.put(manifest.body)
            repo["manifests"][manifest.digest] = manifest.media_type
            if not reference.startswith("sha256:"):
                repo["tags"][reference] = manifest.digest
        return manifest

    def blob(
        self,
        image: ImageRef,
        digest: str,
        deadline: float,
        credentials: Sequence[tuple[str, str]] = (),
        limit: int = 1 << 20,
    ) -> bytes:
        data = self.inner.blob(image, digest, deadline, credentials, limit)
        with self._lock:
            self.capture.record_repository(image)
            self.capture.put(data)
        return data

    def referrers(
        self, image: ImageRef, digest: str, deadline: float, credentials: Sequence[tuple[str, str]] = ()
    ) -> bytes | None:
        listing = self.inner.referrers(image, digest, deadline, credentials)
        with self._lock:
            repo = self.capture.record_repository(image)
            repo["referrers"][digest] = None if listing is None else self.capture.put(listing)
        return listing

    def store_get(
        self, url: str, deadline: float, credentials: Sequence[tuple[str, str]] = (), limit: int = 64 * 1024
    ) -> HttpAnswer:
        answer = self.inner.store_get(url, deadline, credentials, limit)
        base = next((b for b in self.store_urls if url.startswith(b + "/")), None)
        if base is not None and answer.status in (200, 404):
            with self._lock:
                files = self.capture.stores.setdefault(base, {})
                files[url[len(base) + 1 :]] = self.capture.put(answer.body) if answer.status == 200 else None
        return answer


# ---- the offline service and the capture command ---------------------------------------------------------


def _verifiers(
    reader: SignatureReads, at: datetime | None = None, trusted_root: keyless.TrustedRoot | None = None
) -> list[SignatureVerifier]:
    """The verifiers of an offline run, at `at` when given (OpenPGP and Notation validity, a keyless log
    entry's integrated time), keyless requirements against `trusted_root` (else the public-good root)."""
    if at is not None:
        clock = at.timestamp
        return [
            SimpleVerifier(reader, clock=clock),
            CosignVerifier(reader, trusted_root=trusted_root, now=lambda: at),
            NotationVerifier(reader, clock=clock),
        ]
    return [
        SimpleVerifier(reader),
        CosignVerifier(reader, trusted_root=trusted_root),
        NotationVerifier(reader),
    ]


def offline_trusted_root(path: str | Path | None) -> keyless.TrustedRoot | None:
    """The operator's Sigstore trusted root of an offline run (--sigstore-trusted-root, a test file's
    sigstoreTrustedRoot), read now; None: the public-good root. Raises SignatureDataError."""
    if path is None:
        return None
    try:
        return keyless.load_trusted_root(path)
    except keyless.KeylessError as exc:
        raise SignatureDataError(str(exc)) from None


def signature_service(
    trust_data: Sequence[str],
    at: datetime | None = None,
    ca_file: str | None = None,
    endpoints: Mapping[str, str] | None = None,
    trusted_root: str | Path | None = None,
) -> SignatureService:
    """The SignatureService of an offline run: replaying the signature captures among `trust_data`
    when any is given (directories without one are Notary captures), else reading registries live;
    keyless requirements verified against the trusted root file `trusted_root` (as serve
    --sigstore-trusted-root), else the public-good root. Raises SignatureDataError."""
    root = offline_trusted_root(trusted_root)
    if trust_data:
        captures = [Capture.load(d) for d in trust_data if is_capture(d)]
        return SignatureService(_verifiers(ReplayReader(captures), at, root), workers=4)
    reader = RegistryReader(NotaryClient(ca_file=ca_file), endpoints=endpoints)
    return SignatureService(_verifiers(reader, at, root), workers=4)


@dataclass
class SignatureCaptureResult:
    image: str
    format: str
    digest: str | None = None
    signatures: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def describe(self) -> str:
        if self.error:
            return f"{self.image}: {self.format} signatures not captured: {self.error}"
        return f"{self.image}: captured {self.signatures} {self.format} signature(s) of {self.digest}"


def capture_signatures(
    images: Sequence[str],
    out: Path,
    formats: Sequence[str],
    *,
    store_url: str | None = None,
    ca_file: str | None = None,
    endpoints: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    credentials: tuple[tuple[str, str], ...] = (),
) -> list[SignatureCaptureResult]:
    """Record, for each image and format, every read its verifier makes (the manifest the reference
    resolves to, the `.sig` manifest and payloads, referrers listings, manifests and bundles, the
    lookaside files under `store_url`), into `out` (merged with what is there). Nothing is judged
    while capturing: the keys are the policy's, applied when the capture is replayed."""
    out.mkdir(parents=True, exist_ok=True)
    capture = Capture.load(out) if is_capture(out) else Capture(out)
    live = RegistryReader(NotaryClient(ca_file=ca_file), endpoints=endpoints)
    reader = RecordingReader(live, capture, [store_url] if store_url else [])
    cosign, simple = CosignVerifier(reader), SimpleVerifier(reader)
    notation = NotationVerifier(reader)
    results = []
    try:
        for image in images:
            try:
                ref = parse_image(image)
            except InvalidImageReference as exc:
                results.append(SignatureCaptureResult(image, ",".join(formats), error=str(exc)))
                continue
            for fmt in formats:
                result = SignatureCaptureResult(image, fmt)
                deadline = clocks.monotonic() + timeout
                try:
                    if fmt == "cosign":
                        result.digest, found = cosign.discover(ref, credentials, deadline)
                    elif fmt == "notation":
                        result.digest, found = notation.discover(ref, credentials, deadline)
                    elif store_url:
                        result.digest, found = simple.discover(ref, store_url, credentials, deadline)
                    else:
                        raise ReadError("capturing simple signatures needs --store-url (the lookaside store)")
                    result.signatures = found
                except ReadError as exc:
                    result.error = str(exc)
                results.append(result)
    finally:
        live.http.close()
    capture.write()
    return results


def inspect_signatures(
    image: str,
    fmt: str,
    keys: Sequence[tuple[str, bytes]],
    *,
    store_url: str | None = None,
    trust_data: Sequence[str] = (),
    ca_file: str | None = None,
    endpoints: Mapping[str, str] | None = None,
    at: datetime | None = None,
    timeout: float = 30.0,
    trusted_root: str | Path | None = None,
) -> tuple[dict, bool]:
    """(facts, ok) of `image` for one format (`ostiary trust inspect --format cosign|simple|notation`):
    the facts a verifier gives for a requirement with `keys` ((where, PEM or armoured bytes) pairs) —
    for cosign without keys, a keyless requirement verified against `trusted_root` (else the
    public-good root) — from the captures in `trust_data` or live. `ok` when a signature verified
    (app/signatures/inspect.py `ok`) and signs the digest the reference resolves to; identity rules
    are the policy's (Rego) and are not applied here, the signed identities are in the facts.
    Raises SignatureDataError."""
    requirement: dict[str, Any] = {"format": fmt, "index": 0, "type": "signedBy", "error": None}
    if fmt == "simple":
        requirement["store"] = {"url": store_url, "secret": None}
    if fmt == "cosign" and not keys:
        requirement = {"format": fmt, "index": 0, "type": "keyless", "identities": [], "error": None}
    try:
        ref = parse_image(image)
    except InvalidImageReference as exc:
        return failure_facts(fmt, requirement, str(exc)), False
    service = signature_service(trust_data, at, ca_file, endpoints, trusted_root)
    try:
        request = SignatureRequest(image=ref, requirement=requirement, keys=tuple(keys))
        (facts,) = service.gather([request], clocks.monotonic() + timeout)
    finally:
        service.close()
    return facts, inspect.ok(facts)


def signature_problems(facts: Mapping[str, Any]) -> list[str]:
    """Why each signature of `facts` proves nothing (`ostiary trust inspect`): its error, the digest it
    signs, a Notation validation that failed (inspect applies none of a policy's levels: every one
    counts, as strict), or the key it verified with not being one of those given."""
    problems = []
    for s in facts.get("signatures") or []:
        failed = [f"{name}: {why}" for name, why in (s.get("failures") or {}).items() if why]
        if s.get("error"):
            problems.append(f"{s.get('source')}: {s['error']}")
        elif s.get("digest") != facts.get("digest"):
            problems.append(f"{s.get('source')}: signs {s.get('digest')}, not {facts.get('digest')}")
        elif failed:
            problems.append(f"{s.get('source')}: {'; '.join(failed)}")
        elif s.get("key_id") not in (facts.get("keys") or []):
            problems.append(f"{s.get('source')}: signed by {s.get('key_id')}, not one of the given keys")
    return problems


def why_not_verified(facts: Mapping[str, Any]) -> str:
    """Why `inspect_signatures` said not ok, in one line for a terminal."""
    reasons = signature_problems(facts)
    return str(facts.get("error") or "; ".join(reasons) or f"no signature found for {facts.get('digest')}")
