"""The one walk over a repository's trust data: root -> timestamp -> snapshot -> targets -> delegations.

Why one: the order, the handling of roles that are not served and the bound on delegations are facts
about Notary, not about where the bytes come from. The trust service (network, with deadlines and
parallel sibling fetches), `ostiary trust inspect` and offline replays (both through the service), the
tests, tests/unit/gen_rego_testdata.py and scripts/bench.py (documents at hand) all walk through
`walk`; only the fetch function differs.

The fetch contract: `fetch(role)` returns the role's bytes, or None when the role is not served (a
404). A top-level role that is not served raises MissingRole(role, "not available") unless the fetch
raises its own, better error first (the service does: "the repository is not signed there"); a
delegation the snapshot lists but nobody serves is reported to the state machine (`missing`), which
raises MissingRole. `fetch_level(roles)`, when given, fetches the sibling delegations of one level at
once (in parallel) and returns, in the order asked, bytes, None or the exception that fetch raised;
they are verified in that order, and an exception is raised when its turn comes.

    repo = walk(TrustedRepository(gun, now), files.get).repository
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from app.notary.errors import LimitExceeded, MissingRole
from app.notary.trusted import TrustedRepository

# The service's bound: a walk asks for at most this many delegations, so a hostile snapshot cannot keep
# a worker busy forever (the state machine's own MAX_ROLES bounds what is loaded).
MAX_DELEGATIONS = 256

Fetch = Callable[[str], bytes | None]
FetchLevel = Callable[[Sequence[str]], Sequence[bytes | BaseException | None]]


def _quiet(role: str, verifying: bool) -> None:
    """The default progress report: none."""


@dataclass
class Walk:
    """What a walk loaded: the repository, the timestamp bytes used and every document verified."""

    repository: TrustedRepository
    timestamp: bytes | None = None
    documents: list[bytes] = field(default_factory=list)


def walk(
    repository: TrustedRepository,
    fetch: Fetch,
    *,
    fetch_level: FetchLevel | None = None,
    timestamp: bytes | None = None,
    progress: Callable[[str, bool], None] = _quiet,
    max_delegations: int | None = None,
    after_snapshot: Callable[[], None] | None = None,
) -> Walk:
    """Load every role into `repository`, in TUF order; raises the first TrustError.

    `timestamp`: timestamp.json already fetched (the service's refresh), used instead of fetching it.
    `progress(role, verifying)` is told which role is being fetched (verifying False) and verified
    (True), so a caller that gives up can say which role was in flight. `max_delegations`: refuse
    (LimitExceeded) before asking for more delegations than that. `after_snapshot()` is called once
    snapshot.json verified, before any targets role is fetched (the service reserves memory for
    what the snapshot lists).
    """
    result = Walk(repository)

    def load(role: str, update: Callable[[bytes], None], data: bytes | None) -> bytes:
        progress(role, False)
        if data is None:
            data = fetch(role)
            if data is None:
                raise MissingRole(role, "not available")
        progress(role, True)
        update(data)
        progress(role, False)
        result.documents.append(data)
        return data

    load("root", repository.update_root, None)
    result.timestamp = load("timestamp", repository.update_timestamp, timestamp)
    load("snapshot", repository.update_snapshot, None)
    if after_snapshot is not None:
        after_snapshot()
    load("targets", repository.update_targets, None)
    asked: set[str] = set()
    while pending := [role for role in repository.pending_delegations() if role not in asked]:
        if max_delegations is not None and len(asked) + len(pending) > max_delegations:
            raise LimitExceeded(
                pending[0],
                f"trust data for {repository.gun} delegates to more than {max_delegations} roles, "
                "exceeding the limit",
            )
        asked.update(pending)
        progress(pending[0], False)
        for role, fetched in _level(pending, fetch, fetch_level):
            if isinstance(fetched, BaseException):
                raise fetched
            if fetched is None:
                repository.missing(role)  # raises MissingRole: the snapshot lists it
            load(role, functools.partial(repository.update_delegation, role), fetched)
    return result


def _level(
    roles: Sequence[str], fetch: Fetch, fetch_level: FetchLevel | None
) -> Iterator[tuple[str, bytes | BaseException | None]]:
    """The roles of one level with what fetching each gave: one at a time, each fetched just before it
    is verified (documents at hand need no parallelism), or all at once by `fetch_level`."""
    if fetch_level is None:
        for role in roles:
            yield role, fetch(role)
    else:
        yield from zip(roles, fetch_level(roles), strict=True)


def load_all(repo: TrustedRepository, role_bytes: Fetch) -> TrustedRepository:
    """`walk` for documents already at hand (fixtures, archives, benchmarks): the loaded repository."""
    return walk(repo, role_bytes).repository
