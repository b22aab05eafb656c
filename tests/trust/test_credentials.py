"""Pull-secret parsing (app/registry/credentials.py) and the token helpers (app/registry/token.py)."""

from __future__ import annotations

import base64
import json

import pytest

from app.registry.credentials import credentials_for, normalize_registry_host
from app.registry.token import (
    BearerChallenge,
    HttpAnswer,
    TokenError,
    TokenProvider,
    parse_bearer_challenge,
)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def dockerconfigjson(auths: dict, *, encoded: bool = True) -> dict:
    payload = json.dumps({"auths": auths})
    if encoded:
        return {"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": _b64(payload)}}
    return {"type": "kubernetes.io/dockerconfigjson", "stringData": {".dockerconfigjson": payload}}


def dockercfg(entries: dict) -> dict:
    return {"type": "kubernetes.io/dockercfg", "data": {".dockercfg": _b64(json.dumps(entries))}}


def test_dockerconfigjson_auth_field_is_base64_user_colon_password() -> None:
    secret = dockerconfigjson({"quay.io": {"auth": _b64("robot:pa:ss")}})
    assert credentials_for("quay.io", [secret]) == [("robot", "pa:ss")]


def test_username_and_password_fields_are_accepted() -> None:
    secret = dockerconfigjson({"quay.io": {"username": "u", "password": "p"}}, encoded=False)
    assert credentials_for("quay.io", [secret]) == [("u", "p")]


def test_legacy_dockercfg_secret() -> None:
    secret = dockercfg({"https://registry.example.com": {"auth": _b64("a:b"), "email": "x@y"}})
    assert credentials_for("registry.example.com", [secret]) == [("a", "b")]


@pytest.mark.parametrize(
    "key",
    [
        "docker.io",
        "index.docker.io",
        "registry-1.docker.io",
        "https://index.docker.io/v1/",
        "https://docker.io",
        "HTTPS://Index.Docker.IO/v2/",
    ],
)
def test_docker_hub_is_known_under_all_its_names(key: str) -> None:
    secret = dockerconfigjson({key: {"auth": _b64("hub:pw")}})
    assert credentials_for("docker.io", [secret]) == [("hub", "pw")]
    assert credentials_for("index.docker.io", [secret]) == [("hub", "pw")]


@pytest.mark.parametrize("key", ["quay.io", "https://quay.io", "https://quay.io/v1/", "quay.io/someorg"])
def test_scheme_and_path_of_a_key_are_ignored(key: str) -> None:
    secret = dockerconfigjson({key: {"auth": _b64("q:w")}})
    assert credentials_for("quay.io", [secret]) == [("q", "w")]


def test_port_must_match() -> None:
    secret = dockerconfigjson({"localhost:5000": {"auth": _b64("l:p")}})
    assert credentials_for("localhost:5000", [secret]) == [("l", "p")]
    assert credentials_for("localhost", [secret]) == []
    assert credentials_for("localhost:5001", [secret]) == []


def test_other_registries_get_nothing() -> None:
    secret = dockerconfigjson({"quay.io": {"auth": _b64("q:w")}})
    assert credentials_for("docker.io", [secret]) == []
    assert credentials_for("evil-quay.io", [secret]) == []
    assert credentials_for("quay.io.evil.com", [secret]) == []


def test_wildcard_key_matches_one_label_and_comes_after_exact_matches() -> None:
    wildcard = dockerconfigjson({"*.example.com": {"auth": _b64("w:1")}})
    exact = dockerconfigjson({"reg.example.com": {"auth": _b64("e:2")}})
    assert credentials_for("reg.example.com", [wildcard, exact]) == [("e", "2"), ("w", "1")]
    assert credentials_for("a.b.example.com", [wildcard]) == []
    assert credentials_for("example.com", [wildcard]) == []


def test_order_follows_secrets_and_duplicates_are_dropped() -> None:
    first = dockerconfigjson({"quay.io": {"auth": _b64("one:1")}})
    second = dockerconfigjson(
        {"https://quay.io": {"auth": _b64("two:2")}, "quay.io": {"auth": _b64("one:1")}}
    )
    assert credentials_for("quay.io", [first, second]) == [("one", "1"), ("two", "2")]


@pytest.mark.parametrize(
    "secret",
    [
        {"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": "!!!notbase64"}},
        {"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": _b64("not json")}},
        {"type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": _b64("[1, 2]")}},
        {"type": "kubernetes.io/dockerconfigjson", "data": {}},
        {"type": "Opaque", "data": {"password": _b64("x")}},
        dockerconfigjson({"quay.io": {"auth": "!!!"}}),
        dockerconfigjson({"quay.io": {"auth": _b64("no-colon")}}),
        dockerconfigjson({"quay.io": "a string"}),
        dockerconfigjson({"quay.io": {"username": "only-user"}}),
        "not a dict",
    ],
)
def test_malformed_secrets_are_skipped_not_raised(secret: object) -> None:
    good = dockerconfigjson({"quay.io": {"auth": _b64("good:1")}})
    assert credentials_for("quay.io", [secret, good]) == [("good", "1")]  # type: ignore[list-item]


def test_normalize_registry_host() -> None:
    assert normalize_registry_host("https://index.docker.io/v1/") == "docker.io"
    assert normalize_registry_host("HTTPS://Quay.io:443/x") == "quay.io:443"


# -- token helpers -----------------------------------------------------------------------------------


def test_bearer_challenge_is_parsed_as_docker_hub_sends_it() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="notary.docker.io",'
        'scope="repository:docker.io/library/nginx:pull"'
    )
    assert parse_bearer_challenge(header) == BearerChallenge(
        "https://auth.docker.io/token", "notary.docker.io", "repository:docker.io/library/nginx:pull"
    )


def test_bearer_challenge_after_another_scheme_and_with_quoted_commas() -> None:
    header = 'Basic realm="registry", Bearer realm="https://a.example/t", scope="repository:x:pull,push"'
    challenge = parse_bearer_challenge(header)
    assert challenge == BearerChallenge("https://a.example/t", None, "repository:x:pull,push")


@pytest.mark.parametrize("header", [None, "", 'Basic realm="x"', 'Bearer service="s"'])
def test_no_usable_bearer_challenge(header: str | None) -> None:
    assert parse_bearer_challenge(header) is None


class FakeRealm:
    def __init__(self, body: dict | bytes, status: int = 200):
        self.body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.status = status
        self.calls: list[tuple[str, dict, tuple[str, str] | None]] = []

    def __call__(self, url, *, params, auth, deadline, limit) -> HttpAnswer:
        self.calls.append((url, dict(params), auth))
        return HttpAnswer(self.status, {}, self.body)


def test_token_is_cached_per_username_until_expires_in() -> None:
    now = [1000.0]
    provider = TokenProvider(monotonic=lambda: now[0])
    realm = FakeRealm({"token": "t1", "expires_in": 120})
    challenge = BearerChallenge("https://auth.example/token", "svc", "repository:a:pull")
    assert provider.token(realm, challenge, ("u", "p"), deadline=0) == "t1"
    assert realm.calls == [
        ("https://auth.example/token", {"service": "svc", "scope": "repository:a:pull"}, ("u", "p"))
    ]
    assert provider.token(realm, challenge, ("u", "p"), deadline=0) == "t1"
    assert len(realm.calls) == 1
    provider.token(realm, challenge, None, deadline=0)  # anonymous is another cache entry
    assert len(realm.calls) == 2
    now[0] += 200
    provider.token(realm, challenge, ("u", "p"), deadline=0)
    assert len(realm.calls) == 3


def test_token_without_expires_in_lives_the_default_60_seconds() -> None:
    now = [0.0]
    provider = TokenProvider(monotonic=lambda: now[0])
    realm = FakeRealm({"access_token": "t"})
    challenge = BearerChallenge("https://auth.example/token")
    provider.token(realm, challenge, None, deadline=0)
    now[0] = 50.0
    provider.token(realm, challenge, None, deadline=0)
    assert len(realm.calls) == 1
    now[0] = 61.0
    provider.token(realm, challenge, None, deadline=0)
    assert len(realm.calls) == 2


def test_credentials_are_never_sent_to_an_http_realm() -> None:
    provider = TokenProvider()
    realm = FakeRealm({"token": "t"})
    with pytest.raises(TokenError, match="not https"):
        provider.token(realm, BearerChallenge("http://auth.example/token"), ("u", "secret"), deadline=0)
    assert realm.calls == []
    assert provider.token(realm, BearerChallenge("http://auth.example/token"), None, deadline=0) == "t"
    assert realm.calls[0][2] is None


@pytest.mark.parametrize(
    ("realm", "match"),
    [
        (FakeRealm({"details": "no"}, status=401), "refused a token as u"),
        (FakeRealm(b"<html>"), "not JSON"),
        (FakeRealm({"expires_in": 10}), "without a token"),
    ],
)
def test_token_service_failures_are_explained(realm: FakeRealm, match: str) -> None:
    with pytest.raises(TokenError, match=match):
        TokenProvider().token(realm, BearerChallenge("https://auth.example/token"), ("u", "p"), deadline=0)


def test_non_http_realm_is_refused() -> None:
    with pytest.raises(TokenError, match="not an http"):
        TokenProvider().token(
            FakeRealm({"token": "t"}), BearerChallenge("file:///etc/passwd"), None, deadline=0
        )


def test_credentials_from_a_local_docker_config() -> None:
    from app.registry.credentials import credentials_from_docker_config

    config = {"auths": {"https://index.docker.io/v1/": {"auth": _b64("me:pw")}}, "credsStore": "desktop"}
    assert credentials_from_docker_config("docker.io", config) == [("me", "pw")]
    assert credentials_from_docker_config("quay.io", config) == []
    assert credentials_from_docker_config("docker.io", {"credsStore": "desktop"}) == []
