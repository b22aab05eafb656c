"""Single flight in the signature cache (app/signatures/cache.py): concurrent first admissions of one
image read the registry and verify its signatures once, from the attacker's side (a burst of the
same uncached image), with the real verifiers reading Debian's docker-registry.

The reader is the real RegistryReader, counting the GETs it sends; it can hold (or break) the first
GET of the signature manifest (`sha256-<hex>.sig`), so that the first admission is still verifying
while the others arrive — the registry itself answers every read.

- K concurrent gathers of one uncached image: the signature manifest is read once, every admission
  gets the verified facts (before: K reads);
- a waiter whose deadline passes behind a slow leader fails by its deadline, while the leader is
  still held: not a hang, not a success (before: it read and verified on its own);
- a leader whose read fails (the registry is gone) releases every waiter with that failure, and the
  failure is not kept (the registry refused: no waiter reads again); a leader that raises releases
  them with a failure of their own, and the next admission verifies afresh (nothing left hanging);
- a leader that ran out of its own, earlier deadline is no answer for a waiter with time to spare:
  the waiter verifies again (as a Notary walk does);
- admissions with other pull credentials never wait for a leader's answer (a refusal of its
  credentials is not theirs).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import pytest

from app.images import parse_image
from app.notary.client import NotaryClient
from app.signatures.cache import SignatureCache
from app.signatures.cosign import CosignVerifier
from app.signatures.port import SignatureRequest
from app.signatures.registry import RegistryReader
from app.signatures.service import SignatureService
from tests.support import cosign_signing as cs
from tests.support.simple_signing import SigningWorld

K = 8
TTL = 60.0
REQUIREMENT = {"format": "cosign", "index": 0, "type": "key", "error": None, "secrets": ["app/k"]}
HOLD_LIMIT = 30.0  # a held GET goes on after this long at the latest (no test hangs on a mistake)


class GatedReader(RegistryReader):
    """The real reader, counting its GETs by URL; `hold` GETs whose URL contains `gate` wait for
    `release` (at most HOLD_LIMIT s), then `fault` (if any) runs instead of the GET, or the GET is sent."""

    def __init__(self, *args, gate: str = ".sig", hold: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.gate, self.hold = gate, hold
        self.release = threading.Event()
        self.fault: Callable[[], None] | None = None
        self.gets: list[str] = []
        self.held = 0
        self._lock = threading.Lock()

    def _get(self, url, **kwargs):  # type: ignore[no-untyped-def, override]
        with self._lock:
            self.gets.append(url)
            gated = self.gate in url and self.held < self.hold
            self.held += gated
        if gated:
            self.release.wait(HOLD_LIMIT)
            if self.fault is not None:
                self.fault()
        return super()._get(url, **kwargs)

    def count(self, part: str) -> int:
        with self._lock:
            return sum(part in url for url in self.gets)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with SigningWorld(tmp_path_factory.mktemp("signature-flights") / "w") as w:
        w.push = cs.Pusher(w.registry_url)  # type: ignore[attr-defined]
        yield w


def reader(w: SigningWorld, **kwargs) -> GatedReader:
    return GatedReader(NotaryClient(ca_file=w.ca_file), endpoints={w.registry_host: w.registry_url}, **kwargs)


def signed(w: SigningWorld, repo: str, key) -> tuple[str, SignatureRequest]:
    """An image signed (legacy `.sig`) with `key`, and a requirement of that key for its tag."""
    push = w.push  # type: ignore[attr-defined]
    digest = push.image(repo, "v1")
    push.legacy_signature(
        repo, digest, [cs.legacy_layer(key, cs.payload(f"{w.registry_host}/{repo}", digest))]
    )
    request = SignatureRequest(
        image=parse_image(f"{w.registry_host}/{repo}:v1"),
        requirement=REQUIREMENT,
        keys=(("app/k", cs.public_pem(key).encode()),),
    )
    return digest, request


def proves(facts: dict, digest: str) -> bool:
    return (
        facts["verified"] is True
        and facts["digest"] == digest
        and any(
            s["error"] is None and s["key_id"] in facts["keys"] and s["digest"] == digest
            for s in facts["signatures"]
        )
    )


def deadline(seconds: float = 30.0) -> float:
    return time.monotonic() + seconds


def in_threads(n: int, work: Callable[[int], dict]) -> tuple[list[dict | None], list[threading.Thread]]:
    results: list[dict | None] = [None] * n

    def run(i: int) -> None:
        results[i] = work(i)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    return results, threads


def wait_for(condition: Callable[[], bool], seconds: float = 20.0) -> bool:
    limit = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > limit:
            return False
        time.sleep(0.01)
    return True


def joined(r: GatedReader, cache: SignatureCache, n: int) -> Callable[[], bool]:
    """Every one of `n` admissions is either held in its signature read or waiting for another's."""
    return lambda: r.held + cache.stats().get("shared_verifications", 0) >= n


def finish(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(HOLD_LIMIT + 30)
    assert not any(t.is_alive() for t in threads), "an admission is still waiting"


# ---- K at once ------------------------------------------------------------------------------------------


def test_k_concurrent_gathers_of_one_uncached_image_read_its_signatures_once(world):
    key = cs.new_key()
    digest, request = signed(world, "flights/burst", key)
    # what one verification reads, alone
    alone = reader(world)
    assert proves(CosignVerifier(alone, cache=SignatureCache(TTL)).verify(request, deadline()), digest)
    one = len(alone.gets)

    r = reader(world, hold=K)  # every `.sig` read waits until all K admissions have arrived
    cache = SignatureCache(TTL)
    service = SignatureService([CosignVerifier(r, cache=cache)], workers=K)
    try:
        results, threads = in_threads(K, lambda _: service.gather([request], deadline())[0])
        arrived = wait_for(joined(r, cache, K))
        r.release.set()
        finish(threads)
        assert arrived, f"the admissions did not all arrive: {r.held} held, {cache.stats()}"
        for facts in results:
            assert facts is not None and proves(facts, digest), facts
        reads = r.count(".sig")
        assert reads == 1, f"the signature manifest was read {reads} times for {K} admissions"
        assert len(r.gets) == one, (len(r.gets), one)
        stats = cache.stats()
        assert stats["shared_verifications"] == K - 1 and stats["misses"] == 1 and stats["stored"] == 1, stats
        # the next admission: from the cache, no read
        assert proves(service.gather([request], deadline())[0], digest) and len(r.gets) == one
    finally:
        service.close()


# ---- a waiter's own deadline ----------------------------------------------------------------------------


def test_a_waiter_behind_a_slow_leader_fails_by_its_own_deadline(world):
    digest, request = signed(world, "flights/slow", cs.new_key())
    r = reader(world, hold=1)  # the first `.sig` read (the leader's) waits; any other goes through
    cache = SignatureCache(TTL)
    verifier = CosignVerifier(r, cache=cache)
    leader, leaders = in_threads(1, lambda _: verifier.verify(request, deadline()))
    assert wait_for(lambda: r.held == 1), "the leader did not start its read"
    started = time.monotonic()
    waiter, waiters = in_threads(1, lambda _: verifier.verify(request, deadline(1.0)))
    waiters[0].join(20)
    elapsed = time.monotonic() - started
    still_held = not r.release.is_set() and leaders[0].is_alive()
    r.release.set()
    finish(leaders + waiters)
    facts = waiter[0]
    assert facts is not None and still_held and elapsed < 15, (facts, still_held, elapsed)
    assert facts["verified"] is False, f"the waiter did not wait for the leader: {facts}"
    assert "did not finish before this admission's deadline" in facts["error"], facts
    assert facts.unavailable is True  # type: ignore[attr-defined]  # FailureFacts: nothing was learnt
    assert proves(leader[0] or {}, digest), leader[0]  # the leader, released, verified
    assert r.count(".sig") == 1
    # the waiter's failure was not kept; the leader's success was
    before = len(r.gets)
    assert proves(verifier.verify(request, deadline()), digest) and len(r.gets) == before


def test_a_waiter_verifies_again_when_the_leader_ran_out_of_its_own_earlier_deadline(world):
    """A leader that started with little time left (late in its admission) and ran out of it is no
    answer for a waiter with time to spare: the waiter verifies again (before: it took the leader's
    timeout, and an image that verifies was denied)."""
    digest, request = signed(world, "flights/late-leader", cs.new_key())
    r = reader(world, hold=1)  # the leader's `.sig` read waits past the leader's deadline
    cache = SignatureCache(TTL)
    verifier = CosignVerifier(r, cache=cache)
    leader, leaders = in_threads(1, lambda _: verifier.verify(request, deadline(1.0)))
    assert wait_for(lambda: r.held == 1), "the leader did not start its read"
    waiter, waiters = in_threads(1, lambda _: verifier.verify(request, deadline(30.0)))
    assert wait_for(lambda: cache.stats()["shared_verifications"] >= 1), "the waiter did not join"
    time.sleep(1.2)  # past the leader's deadline
    r.release.set()
    finish(leaders + waiters)
    assert leader[0] is not None and leader[0]["verified"] is False, leader[0]
    assert leader[0].unavailable is True, leader[0]  # type: ignore[attr-defined]  # it ran out of time
    assert proves(waiter[0] or {}, digest), waiter[0]
    assert r.count(".sig") == 2  # the leader's read, then the waiter's own


# ---- a leader that fails -----------------------------------------------------------------------------------


def test_a_leader_whose_read_fails_releases_every_waiter_with_the_failure(tmp_path):
    with SigningWorld(tmp_path / "w") as w:
        w.push = cs.Pusher(w.registry_url)  # type: ignore[attr-defined]
        _, request = signed(w, "flights/gone", cs.new_key())
        r = reader(w, hold=1)
        cache = SignatureCache(TTL)
        verifier = CosignVerifier(r, cache=cache)
        results, threads = in_threads(K, lambda _: verifier.verify(request, deadline()))
        arrived = wait_for(joined(r, cache, K), 10)
        registry = w.procs[0]  # the registry goes away while the leader's read is held
        os.killpg(registry.pid, signal.SIGKILL)
        registry.wait(10)
        r.release.set()
        finish(threads)
    assert arrived, f"the admissions did not all arrive: {r.held} held, {cache.stats()}"
    for facts in results:
        assert facts is not None and facts["verified"] is False, facts
        assert facts.unavailable is True, facts  # type: ignore[attr-defined]
        assert facts["error"] == results[0]["error"], facts  # type: ignore[index]  # the leader's own failure
    assert r.count(".sig") == 1
    stats = cache.stats()
    assert stats["shared_verifications"] == K - 1 and stats["entries"] == 0, stats  # the failure is not kept


def test_a_leader_that_raises_releases_its_waiters_and_leaves_no_flight_behind(world):
    digest, request = signed(world, "flights/raises", cs.new_key())
    r = reader(world, hold=1)

    def bug() -> None:
        raise RuntimeError("a bug in the leader")

    r.fault = bug
    cache = SignatureCache(TTL)
    service = SignatureService([CosignVerifier(r, cache=cache)], workers=K)
    try:
        results, threads = in_threads(K, lambda _: service.gather([request], deadline())[0])
        arrived = wait_for(joined(r, cache, K), 10)
        r.release.set()
        finish(threads)
        assert arrived, f"the admissions did not all arrive: {r.held} held, {cache.stats()}"
        errors = sorted(str(f["error"]) for f in results if f is not None)
        assert len(errors) == K and all(f is not None and f["verified"] is False for f in results), results
        assert sum("RuntimeError: a bug in the leader" in e for e in errors) == 1, errors  # the leader's
        waited = [
            e for e in errors if "for a concurrent admission, which this admission waited for, failed" in e
        ]
        assert len(waited) == K - 1, errors
        # nothing hangs on the failed flight, and nothing of it was kept: the next admission verifies
        assert proves(service.gather([request], deadline())[0], digest)
        assert r.count(".sig") == 2
    finally:
        service.close()


# ---- credentials ------------------------------------------------------------------------------------------


def test_an_admission_with_other_pull_credentials_never_waits_for_the_leader(world):
    digest, request = signed(world, "flights/credentials", cs.new_key())
    theirs = SignatureRequest(
        image=request.image,
        requirement=request.requirement,
        keys=request.keys,
        credentials=(("team-b", "pw"),),
    )
    r = reader(world, hold=1)
    cache = SignatureCache(TTL)
    verifier = CosignVerifier(r, cache=cache)
    _, leaders = in_threads(1, lambda _: verifier.verify(request, deadline()))
    assert wait_for(lambda: r.held == 1)
    other, others = in_threads(1, lambda _: verifier.verify(theirs, deadline(20)))
    others[0].join(20)
    done_while_held = not others[0].is_alive()
    r.release.set()
    finish(leaders + others)
    assert done_while_held and proves(other[0] or {}, digest), other[0]
    assert cache.stats().get("shared_verifications", 0) == 0
