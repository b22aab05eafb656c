"""The push guard (app/policies/pushguard.py): budget, deaths, the last set that fitted, retry."""

from __future__ import annotations

from app.policies.bounds import Bounds, parse_quantity, push_budget_for, total_bytes_for
from app.policies.model import RegoModule
from app.policies.pushguard import PushGuard, set_bytes


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def modules(text: str, size: int = 10) -> dict[str, RegoModule]:
    return {"m": RegoModule("m", "p", text + "x" * (size - len(text)))}


def test_a_set_over_the_budget_is_refused_with_its_size_and_the_flag():
    guard = PushGuard(100)
    assert guard.refusal(modules("a", 100)) is None
    why = guard.refusal(modules("a", 101))
    assert (
        why is not None and "101 bytes" in why and "budget of 100 bytes" in why and "--opa-push-budget" in why
    )


def test_two_deaths_soon_after_pushing_a_set_hold_it_back_until_its_retry_time():
    clock, deaths = Clock(), []
    guard = PushGuard(10_000, window=30, retry_after=600, clock=clock, on_death=lambda: deaths.append(1))
    good, big = modules("good"), modules("big")
    guard.attempted(good)
    clock.now += 31
    assert guard.lost_everything() is None and deaths == []  # a restart long after a push blames nothing
    guard.attempted(big)
    clock.now += 5
    assert guard.lost_everything() is None and guard.refusal(big) is None  # once may be anything
    guard.attempted(big)
    clock.now += 5
    assert guard.lost_everything() is not None and guard.killed(big) and len(deaths) == 2
    why = guard.refusal(big)
    assert why is not None and "OPA died 2 times" in why and "until the policies change" in why
    assert guard.refusal(good) is None  # another set is pushed at once
    clock.now += 601
    assert guard.refusal(big) is None  # tried once more after the wait...
    guard.attempted(big)
    clock.now += 1
    guard.lost_everything()
    clock.now += 601
    assert guard.refusal(big) is not None  # ...and the wait doubles after each further death


def test_a_set_held_long_enough_is_the_last_that_fitted():
    clock = Clock()
    guard = PushGuard(10_000, window=30, clock=clock)
    good = modules("good")
    guard.attempted(good)
    guard.settled(good)
    clock.now += 31
    guard.settled(good)
    assert guard.last_good == good
    assert guard.lost_everything() is None  # the push that put it there is no longer blamed


def test_the_byte_bounds_derive_from_opas_memory_limit():
    assert parse_quantity("256Mi") == 256 * 2**20 and parse_quantity("1Gi") == 2**30
    assert parse_quantity("300M") == 300_000_000 and parse_quantity("1048576") == 2**20
    default = Bounds()
    assert Bounds.for_opa_memory(parse_quantity("256Mi")) == default
    assert (default.max_total_bytes, default.max_scope_bytes, default.max_push_bytes) == (
        2432 * 2**10,
        1216 * 2**10,
        2560 * 2**10,
    )
    # the push budget keeps OPA's peak (64 MiB base + 50 bytes per byte pushed: the worst measured
    # write of policy data under their own root is 36) within 3/4 of the limit
    for limit in ("128Mi", "256Mi", "512Mi", "2Gi"):
        memory = parse_quantity(limit)
        budget = push_budget_for(memory)
        assert 64 * 2**20 + 50 * budget <= 0.75 * memory
        assert total_bytes_for(memory) < budget
    assert Bounds.for_opa_memory(parse_quantity("512Mi")).max_total_bytes > default.max_total_bytes
    assert set_bytes(modules("é", 3)) == 4  # bytes, not characters
