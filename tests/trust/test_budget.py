"""Memory a hostile trust server can make Ostiary hold is bounded in bytes (app/notary/budget.py).

From the attacker's side: a repository within every count limit but large (20,000 targets in each of
four roles, 9 MB of trust data), served over HTTPS to the real TrustService, is denied with a reason,
is not cached, and a normal repository of the same server is verified meanwhile. The budgets
themselves are tested directly sized: the cache's byte budget per server and overall, the in-flight
budget per server, and what a verified repository keeps (measured with tracemalloc, never more
than kept_bytes says).
"""

from __future__ import annotations

import gc
import threading
import time
import tracemalloc
from datetime import UTC, datetime

import pytest

from app.images import parse_image
from app.notary.budget import IN_FLIGHT_WEIGHT, ByteBudget, WalkBytes
from app.notary.cache import CachedRepository, TrustCache
from app.notary.errors import LimitExceeded
from app.notary.service import TrustRequest, TrustService
from tests.trust.forge import GUN, NOW, ForgedRepo, ecdsa_key, load
from tests.trust.https_server import NotaryTestServer

BIG_GUN = "docker.io/attacker/huge"


def big_repo(gun: str, targets: int, delegations: int) -> ForgedRepo:
    repo = ForgedRepo(gun=gun, targets={f"tag-{i:06d}-{'x' * 24}": f"{i:064x}" for i in range(targets)})
    for d in range(delegations):
        role = repo.add_delegation(f"targets/r{d}", [ecdsa_key()])
        role.targets = {f"tag-{i:06d}-{'y' * 24}": f"{i:064x}" for i in range(targets)}
    return repo


def serve_forged(server: NotaryTestServer, gun: str, repo: ForgedRepo) -> int:
    files = repo.build()
    for role, data in files.items():
        server.knobs.overrides[(gun, role)] = data
    return sum(len(data) for data in files.values())


def test_a_huge_repository_is_denied_and_not_cached_while_others_are_admitted(notary_server, pki):
    size = serve_forged(notary_server, BIG_GUN, big_repo(BIG_GUN, 20_000, 3))
    serve_forged(notary_server, GUN, ForgedRepo())
    assert size > 8 << 20  # over the default budget of one repository
    service = TrustService(ca_file=pki.ca_file, clock=lambda: NOW)
    hostile: list[dict] = []

    def attack() -> None:
        hostile.extend(
            service.gather(
                [TrustRequest(parse_image(f"{BIG_GUN}:latest"), notary_server.url)], time.monotonic() + 60
            )
        )

    attacker = threading.Thread(target=attack)
    attacker.start()
    [good] = service.gather(
        [TrustRequest(parse_image(f"{GUN}:latest"), notary_server.url)], time.monotonic() + 30
    )
    assert good["verified"] is True, good["error"]
    attacker.join(90)
    assert not attacker.is_alive()
    [facts] = hostile
    assert facts["verified"] is False
    assert f"trust data for {BIG_GUN} is more than 8 MiB" in facts["error"], facts["error"]
    assert "not verified or cached" in facts["error"]
    stats = service.stats()
    assert stats["cached_repositories"] == 1  # only the good one
    assert 0 < stats["cached_bytes"] < 1 << 20
    assert stats["in_flight_bytes"] == 0  # everything the walk held was given back


def test_a_verified_repository_keeps_no_more_than_kept_bytes_says():
    files = big_repo(GUN, 5_000, 1).build()
    received = sum(len(data) for data in files.values())
    gc.collect()
    tracemalloc.start()
    try:
        repository = load(files)
        gc.collect()
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert kept <= repository.kept_bytes(), (kept, repository.kept_bytes())
    # The documents are dropped once verified: what is kept is about twice what was received, not
    # the seven times the parsed documents cost, and the walk's peak stays within the weight the
    # in-flight budget charges per byte received.
    assert kept < 2.5 * received, (kept, received)
    assert peak < IN_FLIGHT_WEIGHT * received, (peak, received)


def entry(size: int) -> CachedRepository:
    return CachedRepository(
        repository=None,
        timestamp_bytes=b"",
        expires=datetime.max.replace(tzinfo=UTC),
        checked_at=0.0,
        size=size,
    )  # type: ignore[arg-type]


def test_the_cache_stays_within_its_byte_budgets():
    cache = TrustCache(ttl=60, entries=100, max_bytes=1000, max_bytes_per_server=600)
    assert cache.store(("https://a", "a/1"), entry(300))
    assert cache.store(("https://b", "b/1"), entry(300))
    assert cache.store(("https://a", "a/2"), entry(300))
    # a's third entry pushes a's own oldest out (per-server budget), never b's
    assert cache.store(("https://a", "a/3"), entry(300))
    assert cache.lookup(("https://a", "a/1"))[0] is None
    assert cache.lookup(("https://b", "b/1"))[0] is not None
    assert cache.held_bytes <= 1000
    # over the overall budget: the least recently used go first
    assert cache.store(("https://c", "c/1"), entry(400))
    assert cache.held_bytes <= 1000 and len(cache) == 3
    # one repository over the per-server budget is not cached at all; the rest stay
    before = cache.held_bytes
    assert not cache.store(("https://d", "d/1"), entry(601))
    assert cache.lookup(("https://d", "d/1"))[0] is None and cache.held_bytes == before
    cache.discard(("https://c", "c/1"))
    assert cache.held_bytes == before - 400


def test_one_server_cannot_take_the_in_flight_budget_of_another():
    budget = ByteBudget(total=1000 * IN_FLIGHT_WEIGHT, per_server=400 * IN_FLIGHT_WEIGHT)
    with WalkBytes(budget, "https://evil", "evil/a", max_repository_bytes=10_000) as first:
        first.account("targets", 300)
        with WalkBytes(budget, "https://evil", "evil/b", max_repository_bytes=10_000) as second:
            with pytest.raises(LimitExceeded, match="in flight from https://evil"):
                second.account("targets", 200)
        with WalkBytes(budget, "https://good", "good/a", max_repository_bytes=10_000) as other:
            other.account("targets", 400)  # another server still gets its share
    assert budget.held == 0
    with WalkBytes(budget, "https://evil", "evil/c", max_repository_bytes=500) as walk:
        walk.account("root", 400)
        with pytest.raises(LimitExceeded, match="is more than 500 bytes"):
            walk.account("targets", 200)
    assert budget.held == 0
    # a download the walk abandoned cannot take budget after the walk ended
    with pytest.raises(LimitExceeded, match="has ended"):
        walk.account("targets/late", 10)
    assert budget.held == 0


def test_walks_queue_for_the_budget_instead_of_starving_each_other():
    """After snapshot.json a walk reserves all it will download, waiting for others to finish; a
    repository listing more than one may hold is refused before any of it is downloaded."""
    budget = ByteBudget(total=1000 * IN_FLIGHT_WEIGHT, per_server=600 * IN_FLIGHT_WEIGHT)
    first = WalkBytes(budget, "https://a", "a/1", max_repository_bytes=10_000)
    first.reserve("targets", 500, wait=0)
    outcome: list[str] = []

    def second_walk() -> None:
        with WalkBytes(budget, "https://a", "a/2", max_repository_bytes=10_000) as second:
            second.reserve("targets", 500, wait=30)  # waits for the first walk, then has it all
            second.account("targets", 500)
            outcome.append("reserved")

    waiter = threading.Thread(target=second_walk)
    waiter.start()
    time.sleep(0.2)
    assert not outcome  # still waiting: 500 + 500 is over the per-server budget
    first.account("targets", 500)  # covered by its reservation: nothing more taken
    assert budget.held == 500 * IN_FLIGHT_WEIGHT
    first.__exit__(None, None, None)
    waiter.join(30)
    assert outcome == ["reserved"] and budget.held == 0
    with WalkBytes(budget, "https://a", "a/3", max_repository_bytes=10_000) as huge:
        with pytest.raises(LimitExceeded, match="is more than 10000 bytes"):
            huge.reserve("targets", 20_000, wait=30)  # at once, not after waiting
    assert budget.held == 0
