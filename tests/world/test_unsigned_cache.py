"""The negative cache of the trust service (issue 26 item 4), against the real notary-server.

A repository without trust data (HTTP 404 for root.json) was fetched again on every admission.
Now the 404 is remembered like a verified repository is: for the cache TTL, counted from the answer,
bounded in number. Seen from the attacker's side: a remembered 404 only ever denies; a repository
signed after its 404 was remembered is admitted at the latest when that TTL ends; a 404 remembered
for one server, pins or credentials says nothing about another.
"""

from __future__ import annotations

import time
import uuid

import pytest

from app.images import parse_image
from app.notary import service as service_module
from app.notary.service import TrustRequest, TrustService
from app.notary.settings import TrustSettings

pytestmark = pytest.mark.world

TTL = 30.0


class Ticker:
    """The trust service's monotonic clock, moved by the test."""

    def __init__(self) -> None:
        self.value = time.monotonic()

    def __call__(self) -> float:
        return self.value


def gather(service: TrustService, image: str, server: str, credentials: tuple = ()) -> dict:
    request = TrustRequest(parse_image(image), server, credentials=credentials)
    [facts] = service.gather([request], deadline=time.monotonic() + 20.0)
    return facts


def test_a_remembered_404_only_denies_and_a_repository_signed_meanwhile_is_admitted_by_the_ttls_end(
    world,
) -> None:
    repo = f"unsigned-cache/{uuid.uuid4().hex[:8]}"
    pushed = world.world.push(repo, "v1", seed=repo)
    image = f"{world.registry_host}/{repo}:v1"
    ticker = Ticker()
    service = TrustService(TrustSettings(cache_ttl=TTL), ca_file=world.world.ca_file, monotonic=ticker)
    try:
        first = gather(service, image, world.notary_url)
        assert first["verified"] is False and first["error_role"] == "root"
        assert "404" in first["error"], first
        walks = service.stats()["walks"]

        # Within the TTL: denied again without asking the server.
        ticker.value += TTL / 3
        second = gather(service, image, world.notary_url)
        assert second["verified"] is False and "404" in second["error"] and "asked again" in second["error"]
        assert service.stats()["walks"] == walks and service.stats()["unsigned_cache_hits"] == 1

        # The repository is signed now. The remembered 404 may still deny (a stale negative costs a
        # denial, never an admission) ...
        world.world.sign(repo, "v1", pushed.digest, pushed.size)
        ticker.value += TTL / 3
        still = gather(service, image, world.notary_url)
        assert still["verified"] is False

        # ... but only until the TTL counted from the 404 ends: then the server is asked again.
        ticker.value += TTL / 3 + 0.1
        signed = gather(service, image, world.notary_url)
        assert signed["verified"] is True, signed
        assert signed["targets"]["v1"]["released"] == pushed.digest
        assert service.stats()["walks"] == walks + 1
    finally:
        service.close()


def test_a_404_remembered_for_one_server_or_credentials_is_not_used_for_another(world) -> None:
    repo = f"unsigned-cache/{uuid.uuid4().hex[:8]}"
    world.world.push(repo, "v1", seed=repo)
    image = f"{world.registry_host}/{repo}:v1"
    service = TrustService(TrustSettings(cache_ttl=TTL), ca_file=world.world.ca_file)
    try:
        assert gather(service, image, world.notary_url)["verified"] is False
        hits = service.stats()["unsigned_cache_hits"]
        # other credentials: asked again (the 404 may have been what anonymous callers see)
        other = gather(service, image, world.notary_url, credentials=(("someone", "secret"),))
        assert other["verified"] is False
        assert service.stats()["unsigned_cache_hits"] == hits
    finally:
        service.close()


def test_the_memory_of_404s_is_bounded(world, monkeypatch) -> None:
    monkeypatch.setattr(service_module, "UNSIGNED_ENTRIES", 2)
    service = TrustService(TrustSettings(cache_ttl=TTL), ca_file=world.world.ca_file)
    try:
        repos = [f"unsigned-cache/{uuid.uuid4().hex[:8]}" for _ in range(3)]
        for repo in repos:
            gather(service, f"{world.registry_host}/{repo}:v1", world.notary_url)
        assert len(service._unsigned) == 2
        # the oldest is forgotten: asked again, not answered from memory
        gather(service, f"{world.registry_host}/{repos[0]}:v1", world.notary_url)
        assert service.stats()["unsigned_cache_hits"] == 0
    finally:
        service.close()
