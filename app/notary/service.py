"""TrustService: Notary v1 trust facts for every image of an admission, in parallel, under one deadline.

Why this module exists: the state machine (app/notary/trusted.py) is pure, the walker (walker.py) only
orders the loading and the client (client.py) only fetches; something has to feed the walker from the
network under a deadline, remember what was trusted before, cache, run images in parallel, and turn
*every* failure into facts the policy can deny on. That is this.

Rules it keeps:

- Order (walker.walk): root -> timestamp -> snapshot -> targets -> the delegations the verifier asks
  for (those of one level fetched in parallel, verified in order). A top-level role the server does not have (404)
  fails the image (no root.json: the repository is not signed there); a delegation the snapshot lists
  but the server does not serve is reported to the verifier (`missing`), which fails it too.
- Trust on first use per (server, GUN): the first verified root and the versions of every role are
  recorded (durably in `records`, app/notary/state.py, when given; else in memory, app/notary/cache.py)
  and handed to the next verification as `trusted_root` and `seen_versions`, so later roots must be
  rotations signed by the recorded one and versions never go back. After a walk the record is updated
  under the store's lock; a root another process recorded meanwhile must be this one or related to it
  by a valid rotation, else the image is denied. Versions are merged as maxima (never lowered).
- Pinned roots (`TrustRequest.root_pins`, policy `rootSecrets`): root.json must be signed by the pins;
  no record is read or written, and the walk and cache key include the pins' fingerprint.
- Cache: a verified repository is served from memory for `settings.cache_ttl` seconds, and never once one of
  its roles has expired by the injected clock. After the TTL, timestamp.json is fetched again: the
  same bytes (still unexpired) renew the entry; different bytes mean a full, rollback-checked walk.
- Fail closed: a fetch error, an HTTP error, a timeout or a verification error gives facts with
  `verified: false` and a reason naming the role and the server. In particular a failed refresh after
  the TTL is a denial, not the cached success: the TTL is the freshness Ostiary promises, and serving
  old trust data while the server is unreachable would let whoever blocks the server freeze a revoked
  signature in place. The cached entry and the TOFU anchor are kept, so the next successful refresh
  needs no new first use.
- One deadline (a value of the injected `deadline_clock`, by default app/notary/clock.py's monotonic
  clock, as are `clock` and `monotonic`: this module reads no clock itself) for the whole gather. Images of
  one request are fetched in
  parallel; images sharing (server, GUN) are fetched once, and concurrent admissions that miss the
  cache for the same repository wait for one walk instead of each repeating it. `gather` returns by
  the deadline even if a worker thread is stuck in the network; that image gets a timeout reason
  naming the role in flight.
- `gather` never raises for a per-image failure.

    service = TrustService(TrustSettings(cache_ttl=30.0), ca_file="/etc/ostiary/notary-ca.pem")
    facts = service.gather([TrustRequest(parse_image("nginx:1.25"), "https://notary.docker.io")],
                           deadline=clock.monotonic() + 4.0)
"""

from __future__ import annotations

import collections
import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import replace
from datetime import UTC, datetime

from app.notary import budget
from app.notary import clock as clocks
from app.notary.cache import CachedRepository, Key, TrustCache
from app.notary.client import NotaryClient
from app.notary.errors import (
    AuthorizationFailed,
    BadRootRotation,
    DeadlineExceeded,
    FetchError,
    FetchTimeout,
    InternalError,
    RecordConflict,
    RecordUnavailable,
    RememberedFailure,
    RoleNotServed,
    RollbackAttack,
    ServerNotAllowed,
    ServerUnreachable,
    TrustError,
    UnusableRootPins,
    WorkersBusy,
)
from app.notary.facts import failure_facts
from app.notary.metadata import parse_time
from app.notary.pins import RootPin
from app.notary.requests import RoleFetcher, Signer, TrustRequest
from app.notary.servers import (
    DEFAULT_TRUST_SERVERS,
    TrustServerAllowList,
    normalize_trust_server,
    trust_server_for,
)
from app.notary.settings import TrustSettings
from app.notary.state import RecordStore, StateError, TrustRecord, this_process, utc_text
from app.notary.trusted import TrustedRepository, check_rotation
from app.notary.walker import MAX_DELEGATIONS, walk

log = logging.getLogger(__name__)

# Re-exported: callers have imported these from here (their homes are servers.py and walker.py).
__all__ = [
    "DEFAULT_TRUST_SERVERS",
    "MAX_DELEGATIONS",
    "ROOT_TRUST_STATS",
    "STAT_NAMES",
    "Signer",
    "TrustRequest",
    "TrustService",
    "trust_server_for",
]

# Counters of TrustService.stats(): served from memory within the TTL; timestamp.json unchanged after
# the TTL; full walks (root -> ... -> delegations); admissions that waited for another's walk; images
# whose facts say verified False; network failures remembered; refreshes done ahead of expiry; ...;
# denials answered from the memory of a recent 404 for root.json (UNSIGNED_ENTRIES).
STAT_NAMES = (
    "cache_hits",
    "refreshed_unchanged",
    "walks",
    "shared_walks",
    "not_verified",
    "recent_failures",
    "refreshed_ahead",
    "owner_cache_hits",
    "records_refused",
    "unsigned_cache_hits",
)
# At most this many repositories without trust data (a 404 for root.json) are remembered; the oldest
# is forgotten first. Each is remembered for the positive cache's TTL (cache_ttl), counted from the
# 404, so a repository signed meanwhile is admitted at the latest one TTL after the 404 was seen.
UNSIGNED_ENTRIES = 1024
# How old the count of records in the store may be before a first use counts them again.
RECOUNT_SECONDS = 30.0
# A cached repository is refreshed in the background once this share of the TTL has passed, so the
# admissions that follow find it fresh instead of each waiting for timestamp.json at expiry. Within
# the TTL the cached repository is served meanwhile, as it would be anyway; a refresh that fails
# changes nothing, and at expiry the admission's own refresh decides (and denies if it fails).
REFRESH_AHEAD = 0.75
# Verified images by how their root was trusted (facts' `root_trust`): exported as one labelled counter.
ROOT_TRUST_STATS = {"pinned": "roots_pinned", "recorded": "roots_recorded", "first-use": "roots_first_use"}


def _pins_key(gun: str, pins: Sequence[RootPin]) -> str:
    """The cache and walk key's second part: the GUN, and for a pinned entry the pinned material, so a
    repository verified under one policy's pins never answers for another's (or for TOFU)."""
    if not pins:
        return gun
    digest = hashlib.sha256("\n".join(sorted(p.fingerprint for p in pins)).encode()).hexdigest()[:32]
    return f"{gun}\x00pinned:{digest}"


class _Progress:
    """What a worker is doing, so a gather that times out can say which role was in flight and
    whether the server was slow to answer or the verification itself took the time."""

    def __init__(self) -> None:
        self.role = "root"
        self.verifying = False


class _Group:
    """Requests sharing (server, GUN): fetched and verified once."""

    def __init__(self, server: str, gun: str, budget: float):
        self.server = server
        self.gun = gun
        self.budget = budget
        self.credentials: list[tuple[str, str]] = []
        self.progress = _Progress()
        self.future: Future[TrustedRepository] | None = None
        self.error: TrustError | None = None
        self.pins: tuple[RootPin, ...] = ()
        self.owner_proved = True  # every request of the group is (see TrustRequest.owner_proved)
        self.dry_run = True  # every request of the group is a dry run: nothing durable is written

    def join(self, request: TrustRequest) -> None:
        """One more request for this repository: its credentials are tried too, in order."""
        self.owner_proved = self.owner_proved and request.owner_proved
        self.dry_run = self.dry_run and request.dry_run
        for credential in request.credentials:
            pair = (credential[0], credential[1])
            if pair not in self.credentials:
                self.credentials.append(pair)

    @property
    def key(self) -> Key:
        return (self.server, _pins_key(self.gun, self.pins))

    @property
    def flight_key(self) -> Key:
        """The key concurrent walks share: a dry run's walk never answers for one that records."""
        server, rest = self.key
        return (server, f"{rest}\x00dry-run") if self.dry_run else (server, rest)


class _Flight:
    """A walk in progress for one (server, GUN), which concurrent admissions wait for instead of repeating."""

    def __init__(self, progress: _Progress):
        self.progress = progress
        self.done = threading.Event()
        self.result: TrustedRepository | None = None
        self.error: BaseException | None = None


def _fresh_copy(error: BaseException) -> BaseException:
    """The same failure for another waiting thread, without sharing one traceback between threads."""
    if isinstance(error, TrustError):
        return type(error)(error.role, error.reason)
    return error


def _timeout(group: _Group) -> TrustError:
    if group.progress.verifying:
        return DeadlineExceeded(
            group.progress.role,
            f"verification of the trust data for {group.gun} from {group.server} ran past the deadline "
            f"({group.budget:.1f}s)",
        )
    return FetchTimeout(
        group.progress.role, f"notary server {group.server} did not answer within {group.budget:.1f}s"
    )


def _unreachable(error: TrustError) -> bool:
    """A connection failure: refused, TLS failed, no answer in time (not Ostiary's own busy workers)."""
    if isinstance(error, RememberedFailure):
        return error.unreachable
    return isinstance(error, (ServerUnreachable, FetchTimeout)) and not isinstance(error, WorkersBusy)


def shown_error(error: TrustError, server: str | None) -> TrustError:
    """The failure as the facts (and so the denial a policy author reads) state it. A connection
    failure says only that the server could not be reached: whether the address refused, failed
    TLS or kept silent would let a policy author map what the webhook pod can reach. The full
    reason is in Ostiary's log (TrustService._facts_for)."""
    if not _unreachable(error):
        return error
    return ServerUnreachable(
        error.role, f"notary server {server or '-'} could not be reached (details in Ostiary's log)"
    )


def _against_record(error: TrustError, record: TrustRecord, records: RecordStore | None) -> TrustError:
    """The same failure, saying which record it contradicts and how an operator accepts a re-key."""
    where = records.description if records is not None else "memory"
    keyids = ", ".join(k[:12] for k in record.root_keyids)
    if isinstance(error, BadRootRotation):
        reason = (
            f"the root of {record.gun} served by {record.server} is not the recorded root (root keys {keyids}, "
            f"version {record.root_version}, first seen {record.first_seen_at} by {record.first_seen_by}, "
            f"in {where}) nor a rotation signed by it ({error.reason}); if the repository was re-keyed on "
            f"purpose, review the new root and remove the record (`ostiary trust unpin {record.gun}`)"
        )
        return RecordConflict("root", reason)
    return type(error)(
        error.role,
        f"{error.reason}: rollback of {record.gun} below the versions recorded in {where} "
        f"(first seen {record.first_seen_at} by {record.first_seen_by})",
    )


def _earliest_expiry(documents: Sequence[bytes]) -> datetime:
    """The earliest `signed.expires` among role documents the verifier has already accepted."""
    earliest: datetime | None = None
    for data in documents:
        try:
            moment = parse_time("cache", json.loads(data)["signed"]["expires"])
        except (TrustError, ValueError, KeyError, TypeError):
            # The verifier accepted it, so this should not happen; treat it as already expired.
            return datetime.min.replace(tzinfo=UTC)
        if earliest is None or moment < earliest:
            earliest = moment
    return earliest or datetime.min.replace(tzinfo=UTC)


class TrustService:
    """Gathers verified trust facts. Thread-safe; one per process (it owns the caches and the pool)."""

    def __init__(
        self,
        settings: TrustSettings | None = None,
        *,
        client: RoleFetcher | None = None,
        ca_file: str | None = None,
        records: RecordStore | None = None,
        default_pins: Mapping[str, Sequence[RootPin]] | None = None,
        allow: TrustServerAllowList | None = None,
        clock: Callable[[], datetime] = clocks.utcnow,
        monotonic: Callable[[], float] = clocks.monotonic,
        deadline_clock: Callable[[], float] = clocks.monotonic,
    ):
        """`settings`: every tunable (app/notary/settings.py; its defaults when None). Beside it what
        the service works with: `client` fetches the roles (a NotaryClient trusting `ca_file` when
        None); `records` is the durable trust-on-first-use store (app/notary/state.py): when given it
        is the only anchor of unpinned repositories (memory anchors are not used), so a record removed
        by an operator takes effect at the next walk, and every replica sharing it trusts the same
        root; `default_pins`: roots pinned per trust server (serve --root-pins), used by entries
        without their own pins; `allow`: the servers Ostiary may contact (serve
        --trust-server-allow), None: any (offline commands); the three clocks: the wall clock
        expiries are judged by, the cache's and failure memory's, and gather's `deadline`'s."""
        self.settings = settings = settings if settings is not None else TrustSettings()
        self.client: RoleFetcher = client or NotaryClient(
            ca_file=ca_file, max_response_bytes=settings.max_response_bytes
        )
        self.records = records
        self._record_count: int | None = None  # records in the store, as last counted (+ ours since)
        self._record_counted_at = 0.0
        self.allow = allow
        self.default_pins: dict[str, tuple[RootPin, ...]] = {
            normalize_trust_server(server)[0]: tuple(pins) for server, pins in (default_pins or {}).items()
        }
        self.cache = TrustCache(
            ttl=settings.cache_ttl,
            entries=settings.cache_entries,
            monotonic=monotonic,
            max_bytes=settings.cache_bytes,
            max_bytes_per_server=settings.cache_bytes_per_server,
        )
        # Bytes of trust data the walks in progress hold (app/notary/budget.py).
        self.in_flight = budget.ByteBudget(settings.in_flight_bytes, settings.in_flight_bytes_per_server)
        self._clock = clock
        self._monotonic = monotonic  # the cache's and the failure memory's clock
        self._deadline_clock = deadline_clock  # the clock of gather's `deadline`
        self._max_workers = settings.max_workers
        self._flights: dict[Key, _Flight] = {}
        self._ahead: set[Key] = set()  # keys being refreshed ahead of expiry
        self._flights_lock = threading.Lock()
        self._stats: dict[str, int] = dict.fromkeys((*STAT_NAMES, *ROOT_TRUST_STATS.values()), 0)
        # A server that is down or timing out answers every admission only after the whole trust
        # deadline. Remember such network failures briefly (settings.failure_ttl, per server, GUN and
        # credentials) and deny at once while they last; verification results are never remembered
        # here. A timeout is remembered as the server's failure only when the request gave the server
        # at least settings.server_patience: a caller with a small remaining budget must not deny
        # everybody else.
        self._failures: dict[tuple, tuple[float, TrustError]] = {}
        # The negative cache: (key, credentials) of a repository the server has no trust data for
        # (HTTP 404 for root.json) -> (monotonic time of the 404, the error). It only ever denies, and
        # only within the TTL of the positive cache (cache_ttl), counted from the 404.
        self._unsigned: collections.OrderedDict[tuple, tuple[float, RoleNotServed]] = (
            collections.OrderedDict()
        )
        # One bounded pool per service (not per admission): repositories are walked here, their
        # sibling delegations fetched in the second pool (a walk waits on it, so it must be another).
        self._pool = ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="ostiary-trust")
        # One request's repositories in the pool at once (the rest queue behind them, not in front of
        # others): half the pool, so a Pod of up to 16 new images is walked in one round (one Notary
        # round-trip chain) while another request always finds the other half.
        self._fair_share = max(1, self._max_workers // 2)
        self._delegation_pool = ThreadPoolExecutor(
            max_workers=self._max_workers, thread_name_prefix="ostiary-delegations"
        )

    def stats(self) -> dict[str, int]:
        """Counters since start, for metrics: see STAT_NAMES."""
        with self._flights_lock:
            result = dict(self._stats)
        result["token_requests"] = self.client.tokens.requests_made
        result["cached_repositories"] = len(self.cache)
        result["records"] = self._record_count or 0
        result["cached_bytes"] = self.cache.held_bytes
        result["in_flight_bytes"] = self.in_flight.held
        return result

    def _count(self, name: str) -> None:
        with self._flights_lock:
            self._stats[name] += 1

    def close(self) -> None:
        """Close pooled connections (a later gather opens new ones). The worker pools stay."""
        self.client.close()

    # -- the public operation -----------------------------------------------------------------------

    def gather(self, requests: Sequence[TrustRequest], deadline: float) -> list[dict]:
        """Facts for each request, same order. deadline = absolute value of `deadline_clock`
        (clock.monotonic(), i.e. time.monotonic(), unless injected).

        Never raises for a per-image failure: the failure is in the facts (verified=False).
        """
        budget = max(0.0, deadline - self._deadline_clock())
        groups: dict[Key, _Group] = {}
        assignment: list[_Group] = []
        for request in requests:
            server, error = normalize_trust_server(request.server)
            pins = tuple(request.root_pins) or self.default_pins.get(server, ())
            key = (server, _pins_key(request.image.name, pins))
            group = groups.get(key)
            if group is None:
                group = groups[key] = self._new_group(server, error, pins, request.image.name, budget)
            group.join(request)
            assignment.append(group)
        runnable = [
            group for group in groups.values() if group.error is None and not self._answer_at_hand(group)
        ]
        if runnable:
            self._run_fairly(runnable, deadline)
        return [
            self._facts_for(request, group, budget)
            for request, group in zip(requests, assignment, strict=False)
        ]

    def _new_group(
        self, server: str, error: TrustError | None, pins: tuple[RootPin, ...], gun: str, budget: float
    ) -> _Group:
        """The group of the requests for one repository (server, GUN, pins), with the error that stops
        it before any fetch: a server named wrongly, not allowed, or pins that cannot be used."""
        group = _Group(server, gun, budget)
        group.error = error
        if error is None and self.allow is not None and not self.allow.permits(server):
            group.error = ServerNotAllowed(
                None,
                f"trust server {server} is not one the cluster operator allows policies to name; "
                "ask them to allow it (ostiary serve --trust-server-allow)",
            )
        group.pins = pins
        unusable = [pin.error for pin in group.pins if pin.error]
        if error is None and unusable:  # fail before any fetch: the pins cannot be used
            group.error = UnusableRootPins("root", "; ".join(unusable))
        return group

    def _answer_at_hand(self, group: _Group) -> bool:
        """Settle `group` without a trust worker when it can be: a fresh (or, for dry runs and proved
        owners, a kept) cache entry, or a remembered 404 for root.json. False: it must be loaded."""
        cached = self._fresh(group.key, ahead_of=group)
        if cached is None and group.dry_run:  # a first use only dry runs saw (see _walk)
            cached = self._fresh(group.flight_key)
        if cached is None and group.owner_proved:
            cached = self._kept(group.key)
        if cached is not None:  # a fresh cache entry is read here: no hand-off to a trust worker and back
            group.future = Future()
            group.future.set_result(cached)
            return True
        unsigned = self._known_unsigned(group)
        if unsigned is None:
            return False
        group.future = Future()  # a recent 404 for root.json: denied without asking again
        group.future.set_exception(unsigned)
        return True

    def _run_fairly(self, runnable: list[_Group], deadline: float) -> None:
        """Load the groups of one request with at most `share` of them in the shared pool at once,
        the next starting as one finishes: a request naming many repositories of a slow server
        queues behind itself, never in front of every other request (one tenant cannot starve
        another's admissions). Work not started by the deadline is dropped; stuck workers are
        abandoned, not awaited (the client's timeouts and the verifier's deadline checks end them)."""
        share = self._fair_share
        pending = collections.deque(runnable)
        lock = threading.Lock()
        finished = threading.Semaphore(0)

        def on_done(_future: Future) -> None:
            finished.release()
            start_next()

        def start_next() -> None:
            with lock:
                if not pending or self._deadline_clock() >= deadline:
                    return
                group = pending.popleft()
                group.future = self._pool.submit(self._load, group, deadline)
            group.future.add_done_callback(on_done)

        for _ in range(min(share, len(runnable))):
            start_next()
        for _ in range(len(runnable)):
            if not finished.acquire(timeout=max(0.0, deadline - self._deadline_clock())):
                break
        with lock:
            pending.clear()  # nothing more starts for this request
        for group in runnable:
            if group.future is not None:
                group.future.cancel()

    # -- per-request facts ----------------------------------------------------------------------------

    def _facts_for(self, request: TrustRequest, group: _Group, budget: float) -> dict:
        image = request.image
        signers = [(s.secret, s.name, s.public_key_pem) for s in request.signers]
        repository, error = self._outcome(group, budget)
        if repository is not None:
            try:
                facts = repository.facts(image.tag, image.digest, signers, server=group.server)
                self._count(ROOT_TRUST_STATS.get(str(facts.get("root_trust")), "roots_first_use"))
                return facts
            except TrustError as facts_error:
                error = facts_error
            except Exception as facts_error:
                log.exception("unexpected error building trust facts for %s", group.gun)
                error = InternalError(None, f"internal error while building trust facts: {facts_error!r}")
        if error is None:  # cannot happen: every runnable group has a future; fail closed regardless
            error = InternalError(None, "internal error: no trust result for this image")
        self._count("not_verified")
        log.info("trust data for %s from %s not verified: %s", group.gun, group.server or "-", error)
        shown = shown_error(error, group.server) if self.settings.hide_connection_errors else error
        return failure_facts(group.server or None, group.gun, image.tag, image.digest, shown, signers)

    def _outcome(self, group: _Group, budget: float) -> tuple[TrustedRepository | None, TrustError | None]:
        """The verified repository of `group`, or the error that stands for it."""
        if group.error is not None:
            return None, group.error
        if group.future is None:  # never started: this request's share was busy
            return None, WorkersBusy(
                "root",
                f"trust data from notary server {group.server} was not fetched within {budget:.1f}s: "
                f"the trust workers were busy with this request's other images (a request gets "
                f"{self._fair_share} of the {self._max_workers} at a time)",
            )
        if group.future.cancelled():
            return None, WorkersBusy(
                "root",
                f"trust data from notary server {group.server} was not fetched within {budget:.1f}s: "
                f"all {self._max_workers} trust workers were busy with other images",
            )
        if not group.future.done():
            return None, _timeout(group)
        outcome = group.future.exception()
        if outcome is None:
            return group.future.result(), None
        if isinstance(outcome, TrustError):
            return None, outcome
        log.error(
            "unexpected error gathering trust data for %s from %s", group.gun, group.server, exc_info=outcome
        )
        return None, InternalError(
            group.progress.role, f"internal error while verifying trust data: {outcome!r}"
        )

    # -- loading one repository ------------------------------------------------------------------------

    def _fresh(self, key: Key, ahead_of: _Group | None = None) -> TrustedRepository | None:
        """The cached repository for `key` while it is within its time to live, else None.
        `ahead_of`: the group asking, whose server and credentials a refresh ahead of expiry uses."""
        entry, fresh = self.cache.lookup(key)
        if entry is not None and fresh and entry.expires > self._clock():
            self._count("cache_hits")
            if (
                ahead_of is not None
                and self._monotonic() - entry.checked_at >= self.cache.ttl * REFRESH_AHEAD
            ):
                self._refresh_ahead(ahead_of, key)
            return entry.repository
        return None

    def _kept(self, key: Key) -> TrustedRepository | None:
        """The cached repository for `key` past its TTL too — up to `owner_max_age` seconds after it
        was last fetched or refreshed, and while no role it was verified with has expired — only for
        images a live owner's template proved (TrustRequest.owner_proved)."""
        entry, _fresh = self.cache.lookup(key)
        if (
            entry is not None
            and self._monotonic() - entry.checked_at < self.settings.owner_max_age
            and entry.expires > self._clock()
        ):
            self._count("owner_cache_hits")
            return entry.repository
        return None

    def _refresh_ahead(self, asking: _Group, key: Key) -> None:
        """Refresh `key` in the pool, unless a refresh or walk of it is under way or a quarter of the
        workers already refresh ahead (admissions' own work must not queue behind these)."""
        with self._flights_lock:
            if key in self._flights or key in self._ahead or len(self._ahead) >= self._max_workers // 4:
                return
            self._ahead.add(key)
        group = _Group(asking.server, asking.gun, asking.budget)
        group.credentials, group.pins = list(asking.credentials), asking.pins
        group.dry_run = asking.dry_run
        deadline = self._deadline_clock() + max(asking.budget, 1.0)

        def refresh() -> None:
            try:
                self._load_uncached(group, key, deadline, force=True)
                self._count("refreshed_ahead")
            except Exception as error:  # the entry stays until its TTL; the refresh at expiry decides
                log.info("refresh ahead of expiry of %s from %s failed: %s", group.gun, group.server, error)
            finally:
                with self._flights_lock:
                    self._ahead.discard(key)

        try:
            self._pool.submit(refresh)
        except RuntimeError:  # the pool is shut down (the process is stopping)
            with self._flights_lock:
                self._ahead.discard(key)

    def _load(self, group: _Group, deadline: float) -> TrustedRepository:
        """A verified repository for the group: from the cache, from a concurrent walk, or walked here."""
        key: Key = group.key
        cached = self._fresh(key)  # filled by another admission while this group waited
        if cached is not None:
            return cached
        failure_key = (key, tuple(group.credentials))
        with self._flights_lock:
            recent = self._failures.get(failure_key)
        if recent is not None and recent[0] > self._monotonic():
            self._count("recent_failures")
            remembered = recent[1]
            again = RememberedFailure(
                remembered.role,
                f"{remembered.reason} (failed {self.settings.failure_ttl:.0f}s ago or less; not retried until then)",
            )
            again.unreachable = _unreachable(remembered)
            raise again
        try:
            return self._load_uncached(group, key, deadline)
        except FetchError as error:
            if isinstance(error, RoleNotServed) and error.role == "root" and self.cache.ttl > 0:
                self._remember_unsigned(group, error)
            if self._is_server_failure(error, group):
                with self._flights_lock:
                    if len(self._failures) > 4096:
                        self._failures.clear()
                    self._failures[failure_key] = (self._monotonic() + self.settings.failure_ttl, error)
            raise

    def _known_unsigned(self, group: _Group) -> RoleNotServed | None:
        """The remembered 404 for root.json of the group's repository (same server, pins and
        credentials), while it is younger than the cache TTL; else None. A fresh error each time."""
        unsigned_key = (group.key, tuple(group.credentials))
        with self._flights_lock:
            seen = self._unsigned.get(unsigned_key)
            if seen is None:
                return None
            age = self._monotonic() - seen[0]
            if not 0 <= age < self.cache.ttl:
                del self._unsigned[unsigned_key]
                return None
        self._count("unsigned_cache_hits")
        return RoleNotServed(
            "root",
            f"{seen[1].reason} (answered {age:.0f}s ago; asked again {self.cache.ttl:.0f}s after that answer)",
        )

    def _remember_unsigned(self, group: _Group, error: RoleNotServed) -> None:
        with self._flights_lock:
            unsigned_key = (group.key, tuple(group.credentials))
            self._unsigned.pop(unsigned_key, None)
            self._unsigned[unsigned_key] = (self._monotonic(), error)
            while len(self._unsigned) > UNSIGNED_ENTRIES:
                self._unsigned.popitem(last=False)

    def _is_server_failure(self, error: FetchError, group: _Group) -> bool:
        """Whether `error` says something about the server (worth denying others for a moment)
        rather than about this request: a 404 is an answer, and a timeout of a request that gave the
        server less than `server_patience` seconds is the caller's small budget, not the server."""
        if self.settings.failure_ttl <= 0 or isinstance(error, RoleNotServed):
            return False
        return not (isinstance(error, FetchTimeout) and group.budget < self.settings.server_patience)

    def _deadline_check(self, group: _Group, deadline: float) -> Callable[[], None]:
        def check() -> None:
            if self._deadline_clock() >= deadline:
                raise DeadlineExceeded(
                    group.progress.role,
                    f"verification of the trust data for {group.gun} from {group.server} ran past the "
                    f"deadline ({group.budget:.1f}s)",
                )

        return check

    def _load_uncached(
        self, group: _Group, key: Key, deadline: float, force: bool = False
    ) -> TrustedRepository:
        flight_key = group.flight_key
        with self._flights_lock:
            flight = self._flights.get(flight_key)
            leader = flight is None
            if flight is None:
                flight = self._flights[flight_key] = _Flight(group.progress)
        if not leader:
            self._count("shared_walks")
            return self._follow(flight, group, deadline)
        try:
            flight.result = self._refresh(group, key, deadline, force)
            return flight.result
        except BaseException as error:
            flight.error = error
            raise
        finally:
            with self._flights_lock:
                self._flights.pop(flight_key, None)
            flight.done.set()

    def _follow(self, flight: _Flight, group: _Group, deadline: float) -> TrustedRepository:
        """Wait for another admission's walk of the same repository, and take its result.

        Its failure is ours too (same server, same bytes), except when it ran out of its own, earlier
        deadline or was refused authorization with other credentials: then walk again, time permitting.
        """
        group.progress = flight.progress
        if not flight.done.wait(max(0.0, deadline - self._deadline_clock())):
            raise _timeout(group)
        if flight.error is None:
            if flight.result is None:  # cannot happen: the leader sets one or the other before `done`
                raise InternalError(
                    group.progress.role, "internal error: a shared walk ended without a result"
                )
            return flight.result
        retry = isinstance(flight.error, (FetchTimeout, DeadlineExceeded, AuthorizationFailed))
        if not retry or self._deadline_clock() >= deadline:
            raise _fresh_copy(flight.error)
        group.progress = _Progress()
        return self._refresh(group, group.key, deadline)

    def _refresh(self, group: _Group, key: Key, deadline: float, force: bool = False) -> TrustedRepository:
        """`force`: fetch timestamp.json even when the entry is still fresh (a refresh ahead)."""
        now = self._clock()
        entry, fresh = self.cache.lookup(key)
        timestamp: bytes | None = None
        if entry is not None and entry.expires > now:
            if fresh and not force:
                return entry.repository
            group.progress.role = "timestamp"
            timestamp = self._fetch(group, "timestamp", deadline)
            if timestamp == entry.timestamp_bytes:
                self.cache.renew(key, entry)
                self._count("refreshed_unchanged")
                return entry.repository
        self._count("walks")
        return self._walk(group, key, now, deadline, timestamp)

    def _walk(
        self, group: _Group, key: Key, now: datetime, deadline: float, timestamp: bytes | None
    ) -> TrustedRepository:
        durable = self.records is not None and not group.pins  # a pinned entry has no TOFU record
        record, trusted_root, seen_versions = self._anchors(group, key, durable)
        repository = TrustedRepository(
            group.gun,
            now,
            trusted_root=trusted_root,
            seen_versions=seen_versions,
            server=group.server,
            interrupt=self._deadline_check(group, deadline),
            pinned_roots=group.pins,
        )
        try:
            with budget.WalkBytes(
                self.in_flight, group.server, group.gun, self.settings.max_repository_bytes
            ) as held:
                timestamp, documents = self._load_roles(group, repository, deadline, timestamp, held)
        except (BadRootRotation, RollbackAttack) as error:
            if record is None:
                raise
            raise self._denial(group, error, record) from error
        if durable and group.dry_run:
            if record is None:
                # A first use seen by a dry run only: not recorded, and not cached for admissions
                # (the next real admission walks and records it); kept apart for dry runs only
                # (the audit re-checks it within the cache's freshness without a round trip).
                if timestamp is not None:
                    self.cache.store(group.flight_key, self._entry(repository, timestamp, documents))
                return repository
        elif durable:
            self._write_record(group, repository, now)
        self.cache.remember(key, repository.root_bytes, repository.versions)
        if timestamp is not None:
            self.cache.store(key, self._entry(repository, timestamp, documents))
        return repository

    def _anchors(
        self, group: _Group, key: Key, durable: bool
    ) -> tuple[TrustRecord | None, bytes | None, dict[str, int] | None]:
        """(the durable record, the trusted root, the rollback floor) a walk of `group` starts from."""
        if group.pins:
            # Pinned: the root is chosen by the pins alone; the rollback floor is this process's memory
            # of this (server, GUN, pins).
            anchor = self.cache.anchor(key)
            return None, None, (anchor.versions if anchor else None)
        if durable:
            record = self._read_record(group)
            return record, (record.root if record else None), (dict(record.versions) if record else None)
        anchor = self.cache.anchor(key)
        return None, (anchor.root_bytes if anchor else None), (anchor.versions if anchor else None)

    def _denial(
        self, group: _Group, error: BadRootRotation | RollbackAttack, record: TrustRecord
    ) -> TrustError:
        """A rotation or rollback refused against the durable record, reported as a Warning Event."""
        denial = _against_record(error, record, self.records)
        report = getattr(self.records, "report", None)  # the cluster store posts a Warning Event
        if report is not None and not group.dry_run:  # a dry run has no side effects
            reason = "RootNotTrusted" if isinstance(denial, BadRootRotation) else "RollbackRefused"
            report(group.server, group.gun, denial.reason, reason)
        return denial

    def _entry(
        self, repository: TrustedRepository, timestamp: bytes, documents: Sequence[bytes]
    ) -> CachedRepository:
        return CachedRepository(
            repository=repository,
            timestamp_bytes=timestamp,
            expires=_earliest_expiry(documents),
            checked_at=self._monotonic(),
            size=repository.kept_bytes(),
        )

    # -- the durable record ----------------------------------------------------------------------------

    def _read_record(self, group: _Group) -> TrustRecord | None:
        assert self.records is not None
        try:
            return self.records.get(group.server, group.gun)
        except StateError as error:
            raise RecordUnavailable(
                "root", f"trust record of {group.gun} from {group.server}: {error}"
            ) from error

    def _write_record(self, group: _Group, repository: TrustedRepository, now: datetime) -> None:
        """Record the verified root and versions; refuse if another process recorded a root that is
        neither this one nor related to it by a valid rotation (the re-keyed-under-our-feet case)."""
        assert self.records is not None
        by, at = this_process(), utc_text(now)
        root = repository.root_bytes

        def change(current: TrustRecord | None) -> TrustRecord | None:
            if current is None:
                self._room_for_record()
                return TrustRecord(
                    server=group.server,
                    gun=group.gun,
                    root=root,
                    root_keyids=repository.root_keyids,
                    versions=repository.versions,
                    first_seen_at=at,
                    first_seen_by=by,
                    updated_at=at,
                    updated_by=by,
                    how="first-use",
                )
            if current.root == root:
                return current.with_versions(repository.versions, by, at)
            try:
                check_rotation(group.gun, current.root, root, now)
            except TrustError as forward:
                try:  # another process may have recorded a later rotation of the root verified here
                    check_rotation(group.gun, root, current.root, now)
                except TrustError:
                    raise _against_record(
                        RecordConflict("root", forward.reason), current, self.records
                    ) from None
                return current.with_versions(
                    {r: v for r, v in repository.versions.items() if r != "root"}, by, at
                )
            moved = current.with_versions(repository.versions, by, at)
            return replace(moved, root=root, root_keyids=repository.root_keyids, updated_at=at, updated_by=by)

        try:
            self.records.update(group.server, group.gun, change)
        except StateError as error:
            raise RecordUnavailable(
                "root", f"trust record of {group.gun} from {group.server}: {error}"
            ) from error

    def _room_for_record(self) -> None:
        """Refuse a new record when the store holds `max_records` (counted from the store at most every
        RECOUNT_SECONDS, plus this process's creations since): an unauthenticated caller naming new
        repositories must not grow it without bound. Raises StateError (the image is denied)."""
        assert self.records is not None
        now = self._monotonic()
        with self._flights_lock:
            stale = self._record_count is None or now - self._record_counted_at > RECOUNT_SECONDS
        if stale:
            counted = len(self.records.records())
            with self._flights_lock:
                self._record_count, self._record_counted_at = counted, now
        with self._flights_lock:
            held = self._record_count or 0
            if held >= self.settings.max_records:
                self._stats["records_refused"] += 1
                full = True
            else:
                self._record_count = held + 1
                full = False
        if full:
            raise StateError(
                f"{self.records.description} holds {held} trust records, its limit (--max-trust-records "
                f"{self.settings.max_records}): a repository not recorded yet is denied until records are removed "
                "(`ostiary trust unpin`, `kubectl delete trustrecord`) or the limit is raised"
            )

    def _load_roles(
        self,
        group: _Group,
        repository: TrustedRepository,
        deadline: float,
        timestamp: bytes | None,
        held: budget.WalkBytes | None = None,
    ) -> tuple[bytes | None, list[bytes]]:
        """The walk (walker.walk) into `repository` over the network; returns the timestamp bytes and
        every document verified (for the cache's expiry)."""

        def fetch(role: str) -> bytes:
            try:
                return self._fetch(group, role, deadline, held)
            except RoleNotServed as not_served:
                if role == "root":
                    raise RoleNotServed(
                        "root",
                        f"notary server {group.server} has no trust data for {group.gun} "
                        "(HTTP 404 for root.json): the repository is not signed there",
                    ) from not_served
                raise

        def fetch_level(roles: Sequence[str]) -> list[bytes | BaseException | None]:
            return [
                None if isinstance(fetched, RoleNotServed) else fetched
                for _role, fetched in self._fetch_many(group, roles, deadline, held)
            ]

        def progress(role: str, verifying: bool) -> None:
            group.progress.role = role
            group.progress.verifying = verifying

        def after_snapshot() -> None:
            if held is not None:  # wait for memory for the whole rest, at most most of the time left
                held.reserve("targets", repository.listed_bytes(), 0.8 * (deadline - self._deadline_clock()))

        loaded = walk(
            repository,
            fetch,
            fetch_level=fetch_level,
            timestamp=timestamp,
            progress=progress,
            max_delegations=MAX_DELEGATIONS,
            after_snapshot=after_snapshot,
        )
        return loaded.timestamp, loaded.documents

    def _fetch_many(
        self, group: _Group, roles: Sequence[str], deadline: float, held: budget.WalkBytes | None = None
    ) -> list[tuple[str, bytes | BaseException]]:
        """Fetch sibling delegations in parallel; results (or errors) in the order asked."""

        def fetch(role: str) -> bytes | BaseException:
            try:
                return self._fetch_role(group, role, deadline, held)
            except TrustError as error:
                return error

        if len(roles) == 1:
            return [(roles[0], fetch(roles[0]))]
        # Each fetch ends by the deadline on its own, so waiting for them never takes longer than that.
        futures = [self._delegation_pool.submit(fetch, role) for role in roles]
        wait(futures, timeout=max(0.0, deadline - self._deadline_clock()))
        results: list[tuple[str, bytes | BaseException]] = []
        for role, future in zip(roles, futures, strict=False):
            if future.done() and not future.cancelled():
                results.append((role, future.result()))
            else:
                future.cancel()
                results.append(
                    (role, FetchTimeout(role, f"notary server {group.server} did not answer in time"))
                )
        return results

    def _fetch(
        self, group: _Group, role: str, deadline: float, held: budget.WalkBytes | None = None
    ) -> bytes:
        group.progress.role = role
        return self._fetch_role(group, role, deadline, held)

    def _fetch_role(self, group: _Group, role: str, deadline: float, held: budget.WalkBytes | None) -> bytes:
        """One role of `group`'s repository, with its credentials; its bytes counted in `held`."""
        return self.client.fetch_role(
            group.server,
            group.gun,
            role,
            deadline=deadline,
            credentials=group.credentials,
            account=functools.partial(held.account, role) if held is not None else None,
        )
