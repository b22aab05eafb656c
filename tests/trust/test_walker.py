"""The one walk over a repository (app/notary/walker.py): order, roles not served, levels, the bound.

Pure: forged bytes at hand, no server. The service's use of the walk over the network is covered by
test_client.py, test_service_*.py and the world tests.
"""

from __future__ import annotations

import pytest

from app.notary.errors import LimitExceeded, MissingRole, RoleNotServed
from app.notary.trusted import TrustedRepository
from app.notary.walker import walk
from tests.trust.forge import DIGEST_A, DIGEST_B, GUN, NOW, ForgedRepo


def nested() -> dict[str, bytes]:
    repo = ForgedRepo()
    repo.add_delegation("targets/releases", targets={"v1": DIGEST_A})
    repo.add_delegation("targets/team", targets={"v1": DIGEST_A})
    repo.add_delegation("targets/team/ci", paths=["v"], targets={"v1": DIGEST_B})
    return repo.build()


def test_roles_are_fetched_in_tuf_order_level_by_level() -> None:
    files = nested()
    asked: list[str] = []

    def fetch(role: str) -> bytes | None:
        asked.append(role)
        return files.get(role)

    done = walk(TrustedRepository(GUN, NOW), fetch)
    assert asked == [
        "root",
        "timestamp",
        "snapshot",
        "targets",
        "targets/releases",
        "targets/team",
        "targets/team/ci",
    ]
    assert done.timestamp == files["timestamp"]
    assert done.documents == [files[role] for role in asked]
    assert done.repository.docker_release("v1") == ("sha256:" + DIGEST_A, None)


def test_progress_names_each_role_fetched_then_verified() -> None:
    files = nested()
    seen: list[tuple[str, bool]] = []
    walk(
        TrustedRepository(GUN, NOW),
        files.get,
        progress=lambda role, verifying: seen.append((role, verifying)),
    )
    assert seen[:3] == [("root", False), ("root", True), ("root", False)]
    assert ("targets/team/ci", True) in seen
    assert seen[-1] == ("targets/team/ci", False)


def test_a_timestamp_at_hand_is_not_fetched_again() -> None:
    files = nested()
    asked: list[str] = []

    def fetch(role: str) -> bytes | None:
        asked.append(role)
        return files.get(role)

    done = walk(TrustedRepository(GUN, NOW), fetch, timestamp=files["timestamp"])
    assert "timestamp" not in asked
    assert done.timestamp == files["timestamp"]


def test_a_top_level_role_not_available_is_missing() -> None:
    files = nested()
    del files["snapshot"]
    with pytest.raises(MissingRole) as raised:
        walk(TrustedRepository(GUN, NOW), files.get)
    assert str(raised.value) == "snapshot: not available"


def test_a_listed_delegation_nobody_serves_fails_the_walk() -> None:
    files = nested()
    del files["targets/team/ci"]
    with pytest.raises(MissingRole) as raised:
        walk(TrustedRepository(GUN, NOW), files.get)
    assert str(raised.value) == "targets/team/ci: listed in snapshot.json but the server does not serve it"


def test_a_level_fetched_at_once_is_verified_in_order_and_an_error_raised_in_its_turn() -> None:
    files = nested()
    levels: list[list[str]] = []
    refused = RoleNotServed("targets/team", "made up for the test")

    def fetch_level(roles: list[str]) -> list[bytes | BaseException | None]:
        levels.append(list(roles))
        return [refused if role == "targets/team" else files[role] for role in roles]

    repository = TrustedRepository(GUN, NOW)
    with pytest.raises(RoleNotServed) as raised:
        walk(repository, files.get, fetch_level=fetch_level)
    assert raised.value is refused
    assert levels == [["targets/releases", "targets/team"]]
    assert repository.loaded_roles == ["targets", "targets/releases"]  # the sibling before it verified


def test_delegations_beyond_the_bound_are_refused_before_they_are_asked_for() -> None:
    files = nested()
    asked: list[str] = []

    def fetch(role: str) -> bytes | None:
        asked.append(role)
        return files.get(role)

    with pytest.raises(LimitExceeded) as raised:
        walk(TrustedRepository(GUN, NOW), fetch, max_delegations=2)
    assert str(raised.value) == (
        f"targets/team/ci: trust data for {GUN} delegates to more than 2 roles, exceeding the limit"
    )
    assert "targets/team/ci" not in asked
