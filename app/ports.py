"""The interfaces between Ostiary's parts, in one place (imported at module level, never duck-typed).

The admission path (app.admission.review.Reviewer) depends only on these; app/runtime.py, the
composition root, picks the implementation for each mode:

| port            | directory mode (`--policy-dir`)      | cluster mode (`--kube`)              | CLI (`apply`, `explain`)   |
|-----------------|--------------------------------------|--------------------------------------|----------------------------|
| ObjectStore     | app.policies.directory.DirectoryStore | app.kube.store.KubeObjectStore       | DirectoryStore             |
| TrustGatherer   | app.notary.service.TrustService       | TrustService                         | TrustService (live/replay) |
| SignatureGatherer | app.signatures.service.SignatureService | SignatureService                  | SignatureService (replay) |
| OwnerVerifier   | none                                  | app.kube.owners.OwnerVerifier        | none                       |
| PolicyQuery     | app.opa.client.OpaClient              | OpaClient                            | OpaClient                  |
| PolicySink      | app.policies.sync.PolicySync          | PolicySync (fed by the cluster source) | PolicySync               |
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from app.notary.requests import TrustRequest
from app.policies.model import RegoModule
from app.signatures.port import SignatureRequest


class ObjectStore(Protocol):
    """Secrets (signer keys, pull secrets, root pins) and service accounts, by namespace and name."""

    def get_secret(self, namespace: str, name: str) -> dict | None: ...

    def get_service_account(self, namespace: str, name: str) -> dict | None: ...


class TrustGatherer(Protocol):
    """Verified trust facts (docs/rego-input.md), one document per request, in order."""

    def gather(self, requests: Sequence[TrustRequest], deadline: float) -> list[dict]: ...


class SignatureGatherer(Protocol):
    """Verified signature facts beyond Notary v1 (docs/rego-input.md, `images[i].signatures`), one
    document per request (one signature requirement of one image), in order."""

    def gather(self, requests: Sequence[SignatureRequest], deadline: float) -> list[dict]: ...


class OwnerVerifier(Protocol):
    """Why an object's images may take verified trust data from the cache past its freshness time
    because a real owner's template carries them (a reason), or None. Never spares the decision."""

    def approved_by_owner(
        self, obj: dict, namespace: str, images: list[tuple[str, str, str]]
    ) -> str | None: ...


class PolicyQuery(Protocol):
    """A query of the decision engine under a deadline (JSON in, JSON out)."""

    def query(self, path: str, input: dict, deadline: float) -> Any: ...


class PolicySink(Protocol):
    """Where policy modules go: OPA made to hold exactly what is asked for (app.policies.sync)."""

    def set_base(self, modules: Iterable[RegoModule]) -> None: ...

    def replace_all(self, modules: Iterable[RegoModule]) -> None: ...

    def upsert(self, module: RegoModule) -> None: ...

    def remove(self, module_id: str) -> None: ...
