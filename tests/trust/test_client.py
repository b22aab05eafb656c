"""The network edge of trust: the Notary client and TrustService against a hostile or broken server.

Timing assertions here are correctness bounds (the admission deadline is a promise), not benchmarks:
each allows a generous margin over the deadline and never asserts a lower bound on speed.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import threading
import time
from datetime import datetime, timedelta

import pytest

from app.images import parse_image
from app.notary.client import FetchError, FetchTimeout, NotaryClient, ResponseTooLarge, RoleNotServed
from app.notary.inspect import inspect_image
from app.notary.service import Signer, TrustRequest, TrustService
from app.notary.settings import TrustSettings
from app.registry.credentials import credentials_for
from app.registry.token import TokenProvider
from tests.trust.conftest import FIXTURES
from tests.trust.https_server import NotaryTestServer, SilentServer, wait_until

DELEGATION_GUN = "docker.io/phbelitz/delegation"  # bob, charlie, dave, eve: one repository over time
DELEGATION_VALID_AT = "2020-11-20T00:00:00Z"
SETTING_NAMES = {field.name for field in dataclasses.fields(TrustSettings)}
ALICE_GUN = "docker.io/phbelitz/alice-image"
ALICE_VALID_AT = "2019-10-20T00:00:00Z"
CHARLIE_DIGEST = "sha256:a647a0f9c82dc5f3e7c4bd6483b496a49d570b4fdb1feacbfd57e965d2a1d662"
DAVE_DIGEST = "sha256:2b7b506572e4f3b9de7524ff84287db88ed24b0cf9448a7b04ad0664ecdef71b"

# How far past the deadline a fetch or gather may return: thread hand-off and interpreter jitter on a
# loaded machine, not network. The servers of the tests using it never answer (or never finish), so
# what a bound of deadline + MARGIN rules out is waiting for them: forever, not a few seconds more.
MARGIN = 3.0


def wait_for_failure_record(service: TrustService) -> None:
    """Until the service remembers a server failure (its abandoned walk ended and recorded it)."""
    assert wait_until(lambda: len(service._failures) == 1, timeout=20)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


class Ticker:
    """A monotonic clock for the cache that tests move by hand (deadlines still use real time)."""

    def __init__(self) -> None:
        self.value = 1000.0

    def __call__(self) -> float:
        return self.value


def serve(server: NotaryTestServer, case: str, gun: str = DELEGATION_GUN) -> None:
    server.knobs.repos = {gun: FIXTURES / case}


def make_service(pki, when: str = DELEGATION_VALID_AT, **kwargs) -> TrustService:
    """A service trusting the test CA at `when`; keyword arguments naming a TrustSettings field go
    into its settings, the rest beside them (monotonic=, records=, ...)."""
    tunables = {name: kwargs.pop(name) for name in list(kwargs) if name in SETTING_NAMES}
    return TrustService(TrustSettings(**tunables), ca_file=pki.ca_file, clock=lambda: at(when), **kwargs)


def request(server_url: str, gun: str = DELEGATION_GUN, tag: str = "test", **kwargs) -> TrustRequest:
    return TrustRequest(parse_image(f"{gun}:{tag}"), server_url, **kwargs)


def gather_one(service: TrustService, req: TrustRequest, seconds: float = 10.0) -> dict:
    [facts] = service.gather([req], time.monotonic() + seconds)
    return facts


# -- the client on its own -------------------------------------------------------------------------


def test_role_is_fetched_over_https_trusting_the_extra_ca(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    client = NotaryClient(ca_file=pki.ca_file)
    data = client.fetch_role(
        notary_server.url, DELEGATION_GUN, "targets/releases", deadline=time.monotonic() + 5
    )
    assert data == (FIXTURES / "charlie-image" / "targets" / "releases.json").read_bytes()
    assert notary_server.requests[-1].path == f"/v2/{DELEGATION_GUN}/_trust/tuf/targets/releases.json"


def test_server_not_signed_by_a_trusted_ca_is_refused(notary_server: NotaryTestServer) -> None:
    serve(notary_server, "charlie-image")
    with pytest.raises(FetchError, match="TLS with notary server .* failed") as caught:
        NotaryClient().fetch_role(notary_server.url, DELEGATION_GUN, "root", deadline=time.monotonic() + 5)
    assert caught.value.role == "root"


def test_404_means_the_role_is_not_served(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    with pytest.raises(RoleNotServed) as caught:
        NotaryClient(ca_file=pki.ca_file).fetch_role(
            notary_server.url, DELEGATION_GUN, "targets/nobody", deadline=time.monotonic() + 5
        )
    assert caught.value.role == "targets/nobody"
    assert "HTTP 404" in str(caught.value)


def test_other_http_status_is_an_error_naming_it(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    notary_server.knobs.fail_status = 503
    with pytest.raises(FetchError, match="HTTP 503") as caught:
        NotaryClient(ca_file=pki.ca_file).fetch_role(
            notary_server.url, DELEGATION_GUN, "timestamp", deadline=time.monotonic() + 5
        )
    assert not isinstance(caught.value, RoleNotServed)
    assert str(caught.value).startswith("timestamp: notary server https://127.0.0.1:")


@pytest.mark.parametrize("knob", ["oversize", "oversize_chunked"])
def test_oversized_response_is_cut_and_names_the_role(
    notary_server: NotaryTestServer, pki, knob: str
) -> None:
    serve(notary_server, "charlie-image")
    setattr(notary_server.knobs, knob, 300_000)
    client = NotaryClient(ca_file=pki.ca_file, max_response_bytes=100_000)
    with pytest.raises(ResponseTooLarge) as caught:
        client.fetch_role(notary_server.url, DELEGATION_GUN, "snapshot", deadline=time.monotonic() + 5)
    assert caught.value.role == "snapshot"
    assert "more than 100000 bytes" in str(caught.value)


def test_response_at_the_size_limit_is_accepted(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    size = len((FIXTURES / "charlie-image" / "root.json").read_bytes())
    client = NotaryClient(ca_file=pki.ca_file, max_response_bytes=size)
    assert (
        len(client.fetch_role(notary_server.url, DELEGATION_GUN, "root", deadline=time.monotonic() + 5))
        == size
    )


@pytest.mark.parametrize("knob", ["endless", "hang", "stall_after_headers"])
def test_endless_or_silent_response_stops_at_the_deadline(
    notary_server: NotaryTestServer, pki, knob: str
) -> None:
    serve(notary_server, "charlie-image")
    setattr(notary_server.knobs, knob, True)
    client = NotaryClient(ca_file=pki.ca_file)
    started = time.monotonic()
    with pytest.raises(FetchTimeout) as caught:
        client.fetch_role(notary_server.url, DELEGATION_GUN, "timestamp", deadline=started + 1.0)
    assert time.monotonic() - started < 1.0 + MARGIN
    assert caught.value.role == "timestamp"
    assert "within 1.0s" in str(caught.value)


def test_server_that_never_starts_tls_stops_at_the_deadline(silent_server: SilentServer, pki) -> None:
    client = NotaryClient(ca_file=pki.ca_file)
    started = time.monotonic()
    with pytest.raises(FetchTimeout, match="did not answer within"):
        client.fetch_role(silent_server.url, DELEGATION_GUN, "root", deadline=started + 0.8)
    assert time.monotonic() - started < 0.8 + MARGIN


def test_slow_but_timely_server_is_fine(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    notary_server.knobs.delay = 0.3
    data = NotaryClient(ca_file=pki.ca_file).fetch_role(
        notary_server.url, DELEGATION_GUN, "root", deadline=time.monotonic() + 5
    )
    assert data.startswith(b"{")


# -- gather under a deadline -----------------------------------------------------------------------


@pytest.mark.parametrize("knob", ["hang", "endless", "stall_after_headers"])
def test_gather_returns_by_the_deadline_with_a_reason(
    notary_server: NotaryTestServer, pki, knob: str
) -> None:
    serve(notary_server, "charlie-image")
    setattr(notary_server.knobs, knob, True)
    notary_server.knobs.only_roles = {"snapshot"}
    service = make_service(pki)
    started = time.monotonic()
    facts = gather_one(service, request(notary_server.url), seconds=1.0)
    assert time.monotonic() - started < 1.0 + MARGIN
    assert facts["verified"] is False
    assert facts["error_role"] == "snapshot"
    assert facts["error"].startswith(f"snapshot: notary server {notary_server.url} did not")
    assert "within" in facts["error"]


def test_gather_against_a_silent_server_returns_by_the_deadline(silent_server: SilentServer, pki) -> None:
    service = make_service(pki)
    started = time.monotonic()
    facts = gather_one(service, request(silent_server.url), seconds=1.0)
    assert time.monotonic() - started < 1.0 + MARGIN
    assert facts["verified"] is False
    assert facts["error"] == f"root: notary server {silent_server.url} did not answer within 1.0s"


def test_a_server_that_timed_out_is_not_waited_for_again_for_a_few_seconds(
    silent_server: SilentServer, pki
) -> None:
    ticker = Ticker()
    service = make_service(pki, monotonic=ticker, server_patience=0.5)
    first = gather_one(service, request(silent_server.url), seconds=1.0)
    assert first["verified"] is False and "did not answer" in first["error"]
    wait_for_failure_record(service)  # the abandoned walk ends at its own deadline and records it
    started = time.monotonic()
    second = gather_one(service, request(silent_server.url), seconds=10.0)
    assert time.monotonic() - started < 5.0  # denied at once, not after another full deadline (10 s)
    assert second["verified"] is False and "not retried until then" in second["error"]
    assert service.stats()["recent_failures"] == 1
    ticker.value += 6  # the memory is short: then the server is asked again
    third = gather_one(service, request(silent_server.url), seconds=1.0)
    assert "not retried" not in third["error"] and third["verified"] is False


def test_one_stuck_server_does_not_hold_the_other_images(
    notary_server: NotaryTestServer, silent_server: SilentServer, pki
) -> None:
    serve(notary_server, "charlie-image")
    service = make_service(pki)
    started = time.monotonic()
    # a deadline the good repository meets on a loaded machine too; the stuck one never answers
    stuck, good = service.gather([request(silent_server.url), request(notary_server.url)], started + 5.0)
    assert time.monotonic() - started < 5.0 + MARGIN
    assert stuck["verified"] is False and "did not answer" in stuck["error"]
    assert good["verified"] is True and good["targets"]["test"]["released"] == CHARLIE_DIGEST


def test_images_are_fetched_in_parallel(notary_server: NotaryTestServer, pki) -> None:
    notary_server.knobs.repos = {
        DELEGATION_GUN: FIXTURES / "charlie-image",
        ALICE_GUN: FIXTURES / "alice-image",
        "docker.io/phbelitz/sample-image": FIXTURES / "sample-image",
    }
    # Each timestamp.json is answered only once both have been asked for: fetched one after the
    # other, the first waits out the rendezvous alone. A property of concurrency, not of timing:
    # the deadline is generous, so a loaded machine changes how long it takes, not the outcome.
    notary_server.knobs.rendezvous_of = 2
    notary_server.knobs.only_roles = {"timestamp"}
    service = TrustService(ca_file=pki.ca_file, clock=lambda: at(ALICE_VALID_AT))
    facts = service.gather(
        [
            request(notary_server.url, ALICE_GUN),
            request(notary_server.url, "docker.io/phbelitz/sample-image", "v1"),
        ],
        time.monotonic() + 30,
    )
    assert [f["verified"] for f in facts] == [True, True], [f["error"] for f in facts]
    assert notary_server.rendezvous == [True, True]  # both were in flight at once


def test_deadline_already_passed_gives_failure_facts_at_once(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    started = time.monotonic()
    facts = make_service(pki).gather([request(notary_server.url)], started - 1)
    assert facts[0]["verified"] is False
    assert time.monotonic() - started < MARGIN


def test_oversized_role_in_gather_names_the_role(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    notary_server.knobs.oversize = 200_000
    notary_server.knobs.only_roles = {"targets/releases"}
    facts = gather_one(make_service(pki, max_response_bytes=100_000), request(notary_server.url))
    assert facts["verified"] is False
    assert facts["error_role"] == "targets/releases"
    assert "more than 100000 bytes" in facts["error"]


@pytest.mark.parametrize(
    ("server", "reason"),
    [("", "no Notary trust server"), ("http://127.0.0.1:1", "not an https URL")],
)
def test_missing_or_plain_http_trust_server_is_not_verified(server: str, reason: str, pki) -> None:
    facts = gather_one(make_service(pki), request(server))
    assert facts["verified"] is False
    assert reason in facts["error"]


def test_server_errors_become_facts_not_exceptions(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    notary_server.knobs.fail_status = 500
    facts = gather_one(make_service(pki), request(notary_server.url))
    assert facts["verified"] is False
    assert facts["error"] == (
        f"root: notary server {notary_server.url} answered HTTP 500 for root.json of {DELEGATION_GUN}"
    )


def test_repository_without_trust_data_fails_on_root(notary_server: NotaryTestServer, pki) -> None:
    facts = gather_one(make_service(pki), request(notary_server.url, "docker.io/library/unsigned"))
    assert facts["verified"] is False
    assert facts["error_role"] == "root"


# -- token authentication --------------------------------------------------------------------------


def pull_secret(registry: str, user: str, password: str) -> dict:
    config = {"auths": {registry: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}}}
    return {
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
    }


def require_login(server: NotaryTestServer, **knobs) -> None:
    server.knobs.auth = True
    server.knobs.users = {"alice": "s3cret"}
    server.knobs.allow_anonymous_token = False
    for name, value in knobs.items():
        setattr(server.knobs, name, value)


def token_requests(server: NotaryTestServer):
    with server.lock:
        return [r for r in server.requests if r.path == "/token"]


def test_token_flow_with_credentials_from_a_dockerconfigjson_secret(
    notary_server: NotaryTestServer, pki
) -> None:
    serve(notary_server, "charlie-image")
    require_login(notary_server)
    credentials = credentials_for(
        "docker.io", [pull_secret("https://index.docker.io/v1/", "alice", "s3cret")]
    )
    facts = gather_one(make_service(pki), request(notary_server.url, credentials=tuple(credentials)))
    assert facts["verified"] is True, facts["error"]
    assert facts["targets"]["test"]["released"] == CHARLIE_DIGEST
    [token_request] = token_requests(notary_server)
    assert token_request.authorization == "Basic " + base64.b64encode(b"alice:s3cret").decode()
    assert token_request.query == {
        "service": ["notary.test"],
        "scope": [f"repository:{DELEGATION_GUN}:pull"],
    }


def test_token_is_reused_until_it_expires(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    require_login(notary_server, expires_in=300)
    ticker = Ticker()
    client = NotaryClient(ca_file=pki.ca_file, tokens=TokenProvider(monotonic=ticker))
    service = TrustService(
        TrustSettings(cache_entries=0), client=client, clock=lambda: at(DELEGATION_VALID_AT)
    )
    req = request(notary_server.url, credentials=(("alice", "s3cret"),))
    assert gather_one(service, req)["verified"] is True
    first_round = len(notary_server.tuf_requests())
    assert first_round == 1 + 6  # one 401 on root, then the six roles with the token
    assert gather_one(service, req)["verified"] is True
    assert len(token_requests(notary_server)) == 1
    # the remembered challenge sends the token at once: no second 401 round trip
    assert len(notary_server.tuf_requests()) == first_round + 6
    ticker.value += 301
    assert gather_one(service, req)["verified"] is True
    assert len(token_requests(notary_server)) == 2


def test_credentials_are_tried_in_order(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    require_login(notary_server)
    req = request(notary_server.url, credentials=(("alice", "wrong"), ("alice", "s3cret")))
    assert gather_one(make_service(pki), req)["verified"] is True
    assert [r.authorization is not None for r in token_requests(notary_server)] == [True, True]


def test_refused_credentials_are_reported(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    require_login(notary_server)
    facts = gather_one(make_service(pki), request(notary_server.url, credentials=(("alice", "wrong"),)))
    assert facts["verified"] is False
    assert facts["error_role"] == "root"
    assert "refused access" in facts["error"] and "HTTP 401" in facts["error"]
    assert "wrong" not in facts["error"]  # a password never reaches the facts


def test_anonymous_token_when_there_are_no_credentials(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    require_login(notary_server, allow_anonymous_token=True)
    assert gather_one(make_service(pki), request(notary_server.url))["verified"] is True
    assert [r.authorization for r in token_requests(notary_server)] == [None]


def test_credentials_are_never_sent_to_an_http_realm(
    notary_server: NotaryTestServer, plain_http_server: NotaryTestServer, pki
) -> None:
    serve(notary_server, "charlie-image")
    plain_http_server.knobs.users = {"alice": "s3cret"}
    plain_http_server.knobs.allow_anonymous_token = False
    require_login(notary_server, token_realm=f"{plain_http_server.url}/token", token_issuer=plain_http_server)
    facts = gather_one(make_service(pki), request(notary_server.url, credentials=(("alice", "s3cret"),)))
    seen = token_requests(plain_http_server)
    assert seen, "the realm was asked (anonymously)"
    assert all(r.authorization is None for r in seen), "no Basic credentials over plain http"
    assert facts["verified"] is False
    assert "credentials withheld" in facts["error"] and "not https" in facts["error"]
    # the same realm works for anonymous access
    plain_http_server.knobs.allow_anonymous_token = True
    facts = gather_one(make_service(pki), request(notary_server.url, credentials=(("alice", "s3cret"),)))
    assert facts["verified"] is True, facts["error"]
    assert all(r.authorization is None for r in token_requests(plain_http_server))


# -- cache, refresh, rollback, trust on first use --------------------------------------------------


def test_within_the_ttl_nothing_is_fetched(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    ticker = Ticker()
    service = make_service(pki, cache_ttl=60, monotonic=ticker)
    assert gather_one(service, request(notary_server.url))["verified"] is True
    count = len(notary_server.tuf_requests())
    ticker.value += 44  # before REFRESH_AHEAD of the TTL
    facts = gather_one(service, request(notary_server.url))
    assert facts["verified"] is True and facts["targets"]["test"]["released"] == CHARLIE_DIGEST
    assert len(notary_server.tuf_requests()) == count


def wait_for(condition, seconds: float = 10.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "not within 10 s"
        time.sleep(0.02)


def cached(notary_server: NotaryTestServer, pki, **kwargs) -> tuple[TrustService, Ticker]:
    """A service with a 60 s TTL on a hand-moved clock, holding charlie-image verified once."""
    serve(notary_server, "charlie-image")
    ticker = Ticker()
    service = make_service(pki, cache_ttl=60, monotonic=ticker, **kwargs)
    assert gather_one(service, request(notary_server.url))["verified"] is True
    return service, ticker


def test_late_in_the_ttl_the_entry_is_refreshed_ahead_while_it_is_served(
    notary_server: NotaryTestServer, pki
) -> None:
    service, ticker = cached(notary_server, pki)
    before = len(notary_server.tuf_requests())
    ticker.value += 50  # past 75% of the TTL: served from memory, refreshed in the background
    facts = gather_one(service, request(notary_server.url))
    assert facts["verified"] is True and facts["targets"]["test"]["released"] == CHARLIE_DIGEST
    wait_for(lambda: service.stats()["refreshed_ahead"] == 1)
    assert notary_server.tuf_requests()[before:] == ["timestamp"]
    # renewed: 60 s after the first fetch (expired without the refresh) nothing is fetched, nobody waits
    ticker.value += 20
    assert gather_one(service, request(notary_server.url))["verified"] is True
    assert len(notary_server.tuf_requests()) == before + 1
    assert service.stats()["refreshed_unchanged"] == 1


def test_a_revocation_found_ahead_of_expiry_takes_effect_at_once(
    notary_server: NotaryTestServer, pki
) -> None:
    service, ticker = cached(notary_server, pki)
    serve(notary_server, "dave-image")  # the repository moved on (new digest for the tag)
    ticker.value += 50
    assert gather_one(service, request(notary_server.url))["targets"]["test"]["released"] == CHARLIE_DIGEST
    wait_for(lambda: service.stats()["refreshed_ahead"] == 1)
    assert gather_one(service, request(notary_server.url))["targets"]["test"]["released"] == DAVE_DIGEST


def test_a_failed_refresh_ahead_changes_nothing_and_expiry_still_denies(
    notary_server: NotaryTestServer, pki
) -> None:
    service, ticker = cached(notary_server, pki, failure_ttl=0)
    before = len(notary_server.tuf_requests())
    notary_server.knobs.fail_status = 503
    ticker.value += 50
    assert gather_one(service, request(notary_server.url))["verified"] is True  # within the TTL
    wait_for(lambda: notary_server.tuf_requests()[before:] == ["timestamp"])  # the refresh ahead, refused
    time.sleep(0.3)
    assert service.stats()["refreshed_ahead"] == 0
    assert gather_one(service, request(notary_server.url))["verified"] is True  # still within the TTL
    ticker.value += 11  # expired: the admission's own refresh fails, and that denies
    facts = gather_one(service, request(notary_server.url))
    assert facts["verified"] is False and facts["error_role"] == "timestamp"


def test_after_the_ttl_an_unchanged_timestamp_is_the_only_fetch(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    ticker = Ticker()
    service = make_service(pki, cache_ttl=60, monotonic=ticker)
    gather_one(service, request(notary_server.url))
    before = len(notary_server.tuf_requests())
    ticker.value += 61
    assert gather_one(service, request(notary_server.url))["verified"] is True
    assert notary_server.tuf_requests()[before:] == ["timestamp"]
    # and the refresh renewed the entry: within the next TTL nothing at all
    ticker.value += 30
    gather_one(service, request(notary_server.url))
    assert len(notary_server.tuf_requests()) == before + 1
    stats = service.stats()
    assert (stats["walks"], stats["refreshed_unchanged"], stats["cache_hits"]) == (1, 1, 1)
    assert stats["not_verified"] == 0 and stats["cached_repositories"] == 1


def test_after_the_ttl_a_new_timestamp_walks_again(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    ticker = Ticker()
    service = make_service(pki, cache_ttl=60, monotonic=ticker)
    assert gather_one(service, request(notary_server.url))["targets"]["test"]["released"] == CHARLIE_DIGEST
    serve(notary_server, "dave-image")  # the repository moved on: newer versions, new digest
    before = len(notary_server.tuf_requests())
    ticker.value += 61
    facts = gather_one(service, request(notary_server.url))
    assert facts["verified"] is True, facts["error"]
    assert facts["targets"]["test"]["released"] == DAVE_DIGEST
    walked = notary_server.tuf_requests()[before:]
    assert walked[:4] == ["timestamp", "root", "snapshot", "targets"]
    assert sorted(walked[4:]) == ["targets/del1", "targets/del2", "targets/releases"]  # fetched in parallel


def test_rollback_on_refresh_is_denied(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "dave-image")  # timestamp version 6
    ticker = Ticker()
    service = make_service(pki, cache_ttl=60, monotonic=ticker)
    assert gather_one(service, request(notary_server.url))["verified"] is True
    serve(notary_server, "bob-image")  # an older, validly signed state: timestamp version 1
    ticker.value += 61
    facts = gather_one(service, request(notary_server.url))
    assert facts["verified"] is False
    assert facts["error_role"] == "timestamp"
    assert "lower than seen version 6" in facts["error"]


def test_rollback_is_denied_even_after_the_cache_forgot_the_repository(
    notary_server: NotaryTestServer, pki
) -> None:
    serve(notary_server, "dave-image")
    service = make_service(pki, cache_entries=0)
    assert gather_one(service, request(notary_server.url))["verified"] is True
    serve(notary_server, "charlie-image")  # timestamp 3, snapshot 3 < 6
    facts = gather_one(service, request(notary_server.url))
    assert facts["verified"] is False and "lower than seen version" in facts["error"]


@pytest.mark.parametrize("failure", ["hang", "fail_status", "no_trust_data"])
def test_failed_refresh_after_a_cached_success_is_not_verified(
    notary_server: NotaryTestServer, pki, failure: str
) -> None:
    """The safe behaviour: past the TTL, trust data that cannot be refreshed is a denial, not the cache.

    The TTL is the freshness Ostiary promises; serving the old success while the server is unreachable
    would let whoever can block the server keep a revoked signature alive. The entry (and the TOFU
    anchor) are kept, so when the server is back one timestamp fetch suffices.
    """
    serve(notary_server, "charlie-image")
    ticker = Ticker()
    service = make_service(pki, cache_ttl=60, monotonic=ticker)
    assert gather_one(service, request(notary_server.url))["verified"] is True
    ticker.value += 61
    if failure == "hang":
        notary_server.knobs.hang = True
    elif failure == "fail_status":
        notary_server.knobs.fail_status = 502
    else:
        notary_server.knobs.repos = {}
    facts = gather_one(service, request(notary_server.url), seconds=1.0)
    assert facts["verified"] is False
    assert facts["error_role"] == "timestamp"
    assert facts["targets"] == {} and facts["roles"] == {}
    # the server recovers: after the short failure memory (5 s), one timestamp fetch and the cached
    # verification is good again
    ticker.value += 6
    notary_server.knobs.hang = False
    notary_server.knobs.fail_status = None
    serve(notary_server, "charlie-image")
    before = len(notary_server.tuf_requests())
    facts = gather_one(service, request(notary_server.url))
    assert facts["verified"] is True
    assert notary_server.tuf_requests()[before:] == ["timestamp"]


def test_cached_entry_is_not_served_past_its_expiry(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")  # timestamp expires 2020-11-27T14:33:03Z
    now = [at(DELEGATION_VALID_AT)]
    ticker = Ticker()
    service = TrustService(
        TrustSettings(cache_ttl=3600), ca_file=pki.ca_file, clock=lambda: now[0], monotonic=ticker
    )
    assert gather_one(service, request(notary_server.url))["verified"] is True
    now[0] = at("2020-11-28T00:00:00Z")  # still within the TTL, but the timestamp has expired
    ticker.value += 1
    facts = gather_one(service, request(notary_server.url))
    assert facts["verified"] is False
    assert facts["error_role"] == "timestamp" and "expired" in facts["error"]


def test_cache_is_bounded(notary_server: NotaryTestServer, pki) -> None:
    notary_server.knobs.repos = {
        ALICE_GUN: FIXTURES / "alice-image",
        "docker.io/phbelitz/sample-image": FIXTURES / "sample-image",
    }
    service = TrustService(
        TrustSettings(cache_entries=1), ca_file=pki.ca_file, clock=lambda: at(ALICE_VALID_AT)
    )
    gather_one(service, request(notary_server.url, ALICE_GUN))
    gather_one(service, request(notary_server.url, "docker.io/phbelitz/sample-image", "v1"))
    assert len(service.cache) == 1


def test_concurrent_gathers_share_one_service(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    service = make_service(pki)
    results: list[bool] = []
    lock = threading.Lock()

    def admit() -> None:
        facts = gather_one(service, request(notary_server.url))
        with lock:
            results.append(facts["verified"] and facts["targets"]["test"]["released"] == CHARLIE_DIGEST)

    threads = [threading.Thread(target=admit) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    assert results == [True] * 12


def _forged_files(repo) -> dict[str, bytes]:
    return repo.build()


def test_trust_on_first_use_refuses_a_replaced_root(notary_server: NotaryTestServer, pki) -> None:
    from tests.trust.forge import GUN, NOW, ForgedRepo, x509_key

    original = ForgedRepo()
    notary_server.knobs.overrides = {(GUN, role): data for role, data in original.build().items()}
    service = TrustService(TrustSettings(cache_entries=0), ca_file=pki.ca_file, clock=lambda: NOW)
    req = TrustRequest(parse_image(f"{GUN}:latest"), notary_server.url)
    assert gather_one(service, req)["verified"] is True

    # a server (or attacker) that starts over with a new root: valid on its own, but not a rotation
    impostor = ForgedRepo()
    notary_server.knobs.overrides = {(GUN, role): data for role, data in impostor.build().items()}
    facts = gather_one(service, req)
    assert facts["verified"] is False
    assert facts["error_role"] == "root"
    assert "not signed by the trusted root" in facts["error"]

    # a real rotation: version 2, signed by the old root key and the new one
    new_root_key = x509_key(GUN, now=NOW)
    rotated = ForgedRepo(
        role_keys={**original.role_keys, "root": [new_root_key]},
        versions={"root": 2},
        signers={"root": original.role_keys["root"] + [new_root_key]},
    )
    notary_server.knobs.overrides = {(GUN, role): data for role, data in rotated.build().items()}
    facts = gather_one(service, req)
    assert facts["verified"] is True, facts["error"]
    # and from now on the rotated root is the anchor: the old root alone no longer passes
    notary_server.knobs.overrides = {(GUN, role): data for role, data in original.build().items()}
    facts = gather_one(service, req)
    assert facts["verified"] is False and facts["error_role"] == "root"


# -- ostiary trust inspect -------------------------------------------------------------------------


def test_inspect_image_with_signers(
    notary_server: NotaryTestServer, pki, signer_pems: dict[str, str]
) -> None:
    serve(notary_server, "dave-image")
    facts, ok = inspect_image(
        f"{DELEGATION_GUN}:test",
        trust_server=notary_server.url,
        ca_file=pki.ca_file,
        signers=[("del1", signer_pems["del1"])],
        at=at(DELEGATION_VALID_AT),
        default_servers={},
    )
    assert ok is True and facts["targets"]["test"]["released"] == DAVE_DIGEST
    facts, ok = inspect_image(
        f"{DELEGATION_GUN}:test",
        trust_server=notary_server.url,
        ca_file=pki.ca_file,
        signers=[("del2", signer_pems["del2"])],
        at=at(DELEGATION_VALID_AT),
        default_servers={},
    )
    assert facts["verified"] is True and ok is False  # del2 signed another digest


def test_inspect_image_uses_the_default_server_map(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    facts, ok = inspect_image(
        "phbelitz/delegation:test",
        trust_server=None,
        ca_file=pki.ca_file,
        signers=[],
        at=datetime(2020, 11, 20),
        default_servers={"docker.io": notary_server.url},
    )
    assert ok is True and facts["server"] == notary_server.url and facts["gun"] == DELEGATION_GUN


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (
            "registry.example.com/team/app:1",
            "no Notary trust server is known for registry registry.example.com",
        ),
        ("Not An Image", "invalid image reference"),
    ],
)
def test_inspect_image_failures_are_facts(image: str, reason: str) -> None:
    facts, ok = inspect_image(
        image,
        trust_server=None,
        ca_file=None,
        signers=[],
        at=None,
        default_servers={"docker.io": "https://notary.docker.io"},
    )
    assert ok is False and facts["verified"] is False
    assert reason in facts["error"]


def test_inspect_image_expired_data(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    facts, ok = inspect_image(
        f"{DELEGATION_GUN}:test",
        trust_server=notary_server.url,
        ca_file=pki.ca_file,
        signers=[],
        at=datetime(2020, 11, 20) + timedelta(days=30),
        default_servers={},
    )
    assert ok is False and "expired" in facts["error"]


def test_signer_secret_names_reach_the_facts(notary_server: NotaryTestServer, pki, signer_pems) -> None:
    serve(notary_server, "charlie-image")
    req = request(
        notary_server.url,
        signers=(Signer("team-del1", "del1", signer_pems["del1"]), Signer("broken", "x", "not a pem")),
    )
    facts = gather_one(make_service(pki), req)
    assert [s["secret"] for s in facts["signers"]] == ["team-del1", "broken"]
    assert facts["signers"][1]["error"] == "secret broken: publicKey is not a PEM public key or certificate"


def test_images_waiting_for_a_busy_worker_pool_get_a_reason(
    notary_server: NotaryTestServer, silent_server: SilentServer, pki
) -> None:
    serve(notary_server, "charlie-image")
    service = make_service(pki, max_workers=1)
    started = time.monotonic()
    stuck, queued = service.gather([request(silent_server.url), request(notary_server.url)], started + 0.8)
    assert time.monotonic() - started < 0.8 + MARGIN
    assert stuck["verified"] is False and "did not answer" in stuck["error"]
    assert queued["verified"] is False and "workers were busy" in queued["error"]


def test_one_request_naming_many_slow_repositories_does_not_starve_another(
    notary_server: NotaryTestServer, silent_server: SilentServer, pki
) -> None:
    """Issue 8.3: shared work is fair. Tenant A's admission names 8 repositories of a server that
    never answers; with 8 workers they used to take every worker until A's deadline, so tenant B's
    admission of a healthy repository, arriving just after, waited and was denied "busy". A request
    now holds at most its share of the pool; B is verified at once while A waits out its deadline."""
    serve(notary_server, "charlie-image")
    service = make_service(pki, max_workers=8)
    slow = [request(silent_server.url, f"docker.io/tenant-a/app{i}") for i in range(8)]
    outcome: dict = {}

    def tenant_a() -> None:
        outcome["a"] = service.gather(slow, time.monotonic() + 10.0)

    worker = threading.Thread(target=tenant_a)
    worker.start()
    assert wait_until(lambda: silent_server.connections >= 4, timeout=20)  # A holds its share of the pool
    started = time.monotonic()
    [facts] = service.gather([request(notary_server.url)], started + 10.0)
    elapsed = time.monotonic() - started
    worker.join(20)
    print(f"\nB verified in {elapsed:.2f}s while A's 8 silent repositories were being fetched")
    assert facts["verified"] is True, facts.get("error")
    # The property: B did not wait for A's deadline (about 10 s away); half of it is the bound.
    assert elapsed < 5.0
    assert all(f["verified"] is False for f in outcome["a"])  # A still fails closed, with reasons
    assert {
        ("did not answer" in f["error"]) or ("workers were busy" in f["error"]) for f in outcome["a"]
    } == {True}


def test_unsigned_repository_says_so(notary_server: NotaryTestServer, pki) -> None:
    facts = gather_one(make_service(pki), request(notary_server.url, "docker.io/library/unsigned"))
    assert facts["error"] == (
        f"root: notary server {notary_server.url} has no trust data for docker.io/library/unsigned "
        "(HTTP 404 for root.json): the repository is not signed there"
    )


def test_a_token_the_server_stopped_accepting_is_replaced(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    require_login(notary_server)
    service = make_service(pki, cache_entries=0)
    req = request(notary_server.url, credentials=(("alice", "s3cret"),))
    assert gather_one(service, req)["verified"] is True
    with notary_server.lock:
        notary_server._tokens.clear()  # the token service forgot (revoked) every token
    assert gather_one(service, req)["verified"] is True
    assert len(token_requests(notary_server)) == 2


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("@sha256:799c0fa8aa4c9fbff5a99aef1b4b5c3abb9c2f34134345005982fad3489893c7", True),
        (":v1@sha256:799c0fa8aa4c9fbff5a99aef1b4b5c3abb9c2f34134345005982fad3489893c7", True),
        (":sign@sha256:799c0fa8aa4c9fbff5a99aef1b4b5c3abb9c2f34134345005982fad3489893c7", False),
        ("@sha256:" + "0" * 64, False),
        (":no-such-tag", False),
    ],
)
def test_inspect_image_digest_references(
    notary_server: NotaryTestServer, pki, reference: str, expected: bool
) -> None:
    gun = "docker.io/phbelitz/sample-image"
    serve(notary_server, "sample-image", gun)
    facts, ok = inspect_image(
        f"{gun}{reference}",
        trust_server=notary_server.url,
        ca_file=pki.ca_file,
        signers=[],
        at=at("2019-11-01T00:00:00Z"),
        default_servers={},
    )
    assert facts["verified"] is True, facts["error"]
    assert ok is expected


def test_compressed_response_is_limited_after_inflating(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    notary_server.knobs.gzip_bomb = 50 << 20  # about 50 KiB on the wire
    client = NotaryClient(ca_file=pki.ca_file, max_response_bytes=1 << 20)
    with pytest.raises(ResponseTooLarge, match="more than 1048576 bytes"):
        client.fetch_role(notary_server.url, DELEGATION_GUN, "timestamp", deadline=time.monotonic() + 5)


def test_extra_ca_is_added_to_the_public_roots_not_instead_of_them(pki) -> None:
    from app.notary.client import _tls_context

    plain = _tls_context(None).get_ca_certs()
    extended = _tls_context(pki.ca_file).get_ca_certs()
    assert len(plain) > 10
    assert len(extended) == len(plain) + 1
    assert any(
        dict(item[0] for item in cert["subject"]).get("commonName") == "ostiary trust tests CA"
        for cert in extended
    )


def test_inspect_command_line_options(tmp_path, signer_pems: dict[str, str]) -> None:
    from app.notary.inspect import parse_at_option, parse_signer_option

    pem_file = tmp_path / "del1.pub"
    pem_file.write_text(signer_pems["del1"])
    assert parse_signer_option(f"del1={pem_file}") == ("del1", signer_pems["del1"])
    for bad in ("del1", "=x", f"Bad Name={pem_file}", f"a/b={pem_file}", f"del1={tmp_path / 'none.pub'}"):
        with pytest.raises(ValueError, match="--signer"):
            parse_signer_option(bad)
    assert parse_at_option("2020-11-20T00:00:00Z") == at("2020-11-20T00:00:00+00:00")
    assert parse_at_option("2020-11-20") == at("2020-11-20T00:00:00+00:00")
    assert parse_at_option("2020-11-20T02:00:00+02:00") == at("2020-11-20T00:00:00+00:00")
    with pytest.raises(ValueError, match="--at"):
        parse_at_option("yesterday")


def _in_parallel(*calls):
    results: list = [None] * len(calls)

    def run(index: int, call) -> None:
        results[index] = call()

    threads = []
    for index, call in enumerate(calls):
        thread = threading.Thread(target=run, args=(index, call))
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # the first one leads
    for thread in threads:
        thread.join(timeout=20)
    return results


def test_concurrent_admissions_share_one_walk(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    notary_server.knobs.delay = 0.3
    notary_server.knobs.only_roles = {"root"}
    service = make_service(pki)
    results = _in_parallel(*[lambda: gather_one(service, request(notary_server.url))] * 4)
    assert [f["verified"] for f in results] == [True] * 4
    assert len(notary_server.tuf_requests()) == 6  # one walk of six roles, not four


def test_a_waiting_admission_with_credentials_walks_again_after_an_authorization_failure(
    notary_server: NotaryTestServer, pki
) -> None:
    serve(notary_server, "charlie-image")
    require_login(notary_server)
    notary_server.knobs.delay = 0.3
    notary_server.knobs.only_roles = {"root"}
    service = make_service(pki)
    anonymous, with_login = _in_parallel(
        lambda: gather_one(service, request(notary_server.url)),
        lambda: gather_one(service, request(notary_server.url, credentials=(("alice", "s3cret"),))),
    )
    assert anonymous["verified"] is False and "HTTP 401" in anonymous["error"]
    assert with_login["verified"] is True, with_login["error"]


def test_a_waiting_admission_shares_a_verification_failure(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "eve-image")
    notary_server.knobs.delay = 0.3
    notary_server.knobs.only_roles = {"root"}
    service = make_service(pki)
    first, second = _in_parallel(*[lambda: gather_one(service, request(notary_server.url))] * 2)
    assert first["verified"] is False and second["verified"] is False
    assert first["error"] == second["error"]
    assert notary_server.tuf_requests().count("root") == 1


def test_a_token_obtained_with_one_pull_secret_is_not_offered_to_another_request(
    notary_server: NotaryTestServer, pki
) -> None:
    serve(notary_server, "charlie-image")
    require_login(notary_server)
    client = NotaryClient(ca_file=pki.ca_file)
    client.fetch_role(
        notary_server.url,
        DELEGATION_GUN,
        "root",
        deadline=time.monotonic() + 5,
        credentials=(("alice", "s3cret"),),
    )
    with pytest.raises(FetchError, match="HTTP 401"):
        client.fetch_role(notary_server.url, DELEGATION_GUN, "root", deadline=time.monotonic() + 5)
    with notary_server.lock:
        offered = [r.authorization for r in notary_server.requests if r.path.endswith("root.json")]
    assert offered[-1] is None  # the request without credentials went out without alice's token


def test_inspect_explains_why_an_image_is_not_admissible(
    notary_server: NotaryTestServer, pki, signer_pems: dict[str, str]
) -> None:
    from app.notary.inspect import explain

    serve(notary_server, "dave-image")

    def facts_for(reference: str, signers=()) -> dict:
        facts, _ = inspect_image(
            f"{DELEGATION_GUN}{reference}",
            trust_server=notary_server.url,
            ca_file=pki.ca_file,
            signers=list(signers),
            at=at(DELEGATION_VALID_AT),
            default_servers={},
        )
        return facts

    assert explain(facts_for(":test", [("del1", signer_pems["del1"])])) is None
    assert explain(facts_for(":test", [("del2", signer_pems["del2"])])) == (
        "signer del2 (targets/del2) signed sha256:a825e8e950dceb81c7d86f6d34e4e47307e98f35505d180d404e194742a28079, "
        f"but the released digest is {DAVE_DIGEST}"
    )
    assert explain(facts_for(":test", [("nobody", signer_pems["del2"])])) == (
        "signer nobody: the trust data has no role targets/nobody"
    )
    assert explain(facts_for(":test", [("del1", signer_pems["del2"])])) == (
        "signer del1 (targets/del1): the role is not signed with the given key"
    )
    assert explain(facts_for(":other")) == "tag other is not signed by targets or targets/releases"
    assert explain(facts_for(":test@sha256:" + "1" * 64)) == (
        f"tag test is released as {DAVE_DIGEST}, not sha256:{'1' * 64}"
    )
    assert explain(facts_for("@sha256:" + "1" * 64)) == (
        f"digest sha256:{'1' * 64} is not the released digest of any signed tag"
    )


def test_sibling_delegations_are_fetched_in_parallel(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "alice-image", ALICE_GUN)
    notary_server.knobs.delay = 0.6
    notary_server.knobs.only_roles = {"targets/releases", "targets/phbelitz", "targets/chamsen"}
    service = TrustService(ca_file=pki.ca_file, clock=lambda: at(ALICE_VALID_AT))
    facts = gather_one(service, request(notary_server.url, ALICE_GUN), seconds=1.5)  # in turn: 1.8 s
    assert facts["verified"] is True, facts["error"]
    assert set(facts["roles"]) == {"targets", "targets/releases", "targets/phbelitz", "targets/chamsen"}


def test_cookies_are_not_kept(notary_server: NotaryTestServer, pki) -> None:
    serve(notary_server, "charlie-image")
    notary_server.knobs.set_cookie = True
    client = NotaryClient(ca_file=pki.ca_file)
    for _ in range(2):
        client.fetch_role(notary_server.url, DELEGATION_GUN, "root", deadline=time.monotonic() + 5)
    assert [r.cookie for r in notary_server.requests] == [None, None]


def test_owner_proved_images_use_the_verified_cache_past_the_ttl_and_nothing_else(
    notary_server: NotaryTestServer, pki
) -> None:
    """An image a live owner's template carries may be answered from the cache past the TTL (the
    only thing owner approval spares); never from nothing, never past the signed expiry."""
    service, ticker = cached(notary_server, pki, failure_ttl=0)
    notary_server.knobs.fail_status = 503
    ticker.value += 600  # far past the TTL
    before = len(notary_server.tuf_requests())
    kept = gather_one(service, request(notary_server.url, owner_proved=True))
    assert kept["verified"] is True and kept["targets"]["test"]["released"] == CHARLIE_DIGEST
    assert service.stats()["owner_cache_hits"] == 1
    assert len(notary_server.tuf_requests()) == before  # nothing fetched
    # the same image without an owner: the TTL holds, the refresh fails, denied
    assert gather_one(service, request(notary_server.url))["verified"] is False
    # an owner-proved image never verified here is fetched like any other (and fails here)
    other = gather_one(service, request(notary_server.url, gun=ALICE_GUN, owner_proved=True))
    assert other["verified"] is False
    # at most OWNER_MAX_AGE after the last fetch: then the owner's children are verified as usual
    ticker.value += 900 - 600
    assert gather_one(service, request(notary_server.url, owner_proved=True))["verified"] is False
    # past the signed expiry of its roles, the cache answers nobody
    late = TrustService(
        TrustSettings(cache_ttl=60, owner_max_age=1e9),
        ca_file=pki.ca_file,
        clock=lambda: at("2099-01-01T00:00:00Z"),
        monotonic=ticker,
    )
    late.cache = service.cache
    assert gather_one(late, request(notary_server.url, owner_proved=True), seconds=2)["verified"] is False


def test_a_wrong_password_with_the_right_username_gets_no_cached_token(
    notary_server: NotaryTestServer, pki
) -> None:
    """Tokens are cached per credential (username and password), not per username: another pod's
    pull secret naming the same user with a wrong password must ask the realm itself, and fail."""
    serve(notary_server, "charlie-image")
    require_login(notary_server, expires_in=300)
    service = TrustService(
        TrustSettings(cache_entries=0), ca_file=pki.ca_file, clock=lambda: at(DELEGATION_VALID_AT)
    )
    owner = gather_one(service, request(notary_server.url, credentials=(("alice", "s3cret"),)))
    assert owner["verified"] is True, owner["error"]
    assert len(token_requests(notary_server)) == 1
    attacker = gather_one(service, request(notary_server.url, credentials=(("alice", "guess"),)))
    assert attacker["verified"] is False
    assert "refused access" in attacker["error"] and "guess" not in attacker["error"]
    wrong = base64.b64encode(b"alice:guess").decode()
    # the realm was asked with the attacker's own password (refused), then anonymously (refused)
    assert [r.authorization for r in token_requests(notary_server)][1:] == [f"Basic {wrong}", None]
    # the owner's token still serves the owner without a new token request
    assert gather_one(service, request(notary_server.url, credentials=(("alice", "s3cret"),)))["verified"]
    assert len(token_requests(notary_server)) == 3
