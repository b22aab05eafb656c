"""Real Docker Hub trust data, served over HTTPS, through TrustService.gather.

Every expectation of ../shared/fixtures/notary/dockerhub-captured/expected.json is checked on the
facts document. The admission decision itself is made later, in Rego; `decided_digest` below is the
rule expected.json is written against (released digest; with signers, every signer's role must have
signed that same digest), so that the facts are shown to carry what that rule needs.
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from app.images import parse_image
from app.notary.service import Signer, TrustRequest, TrustService
from tests.trust.conftest import FIXTURES
from tests.trust.https_server import NotaryTestServer

EXPECTED_CASES = [
    (case, index)
    for case, spec in __import__("json").loads((FIXTURES / "expected.json").read_text())["cases"].items()
    for index in range(len(spec["expect"]))
]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def decided_digest(facts: dict, tag: str, signer_names: list[str]) -> str | None:
    if not facts["verified"]:
        return None
    entry = facts["targets"].get(tag) or {}
    released = entry.get("released")
    if released is None:
        return None
    for name in signer_names:
        if entry["roles"].get(f"targets/{name}") != released:
            return None
    return released


def serve(server: NotaryTestServer, case: str, gun: str) -> None:
    server.knobs.repos = {gun: FIXTURES / case}


@pytest.mark.parametrize(("case", "index"), EXPECTED_CASES, ids=[f"{c}-{i}" for c, i in EXPECTED_CASES])
def test_expected_json_case(
    case: str,
    index: int,
    fixture_cases: dict,
    signer_pems: dict[str, str],
    notary_server: NotaryTestServer,
    pki,
) -> None:
    spec = fixture_cases[case]
    expectation = spec["expect"][index]
    serve(notary_server, case, spec["gun"])
    service = TrustService(ca_file=pki.ca_file, clock=lambda: at(spec["valid_at"]))
    names = expectation.get("signers", [])
    signers = tuple(Signer(f"{name}-secret", name, signer_pems[name]) for name in names)
    request = TrustRequest(parse_image(f"{spec['gun']}:{expectation['tag']}"), notary_server.url, signers)
    [facts] = service.gather([request], deadline=time.monotonic() + 10)

    want = expectation["digest"] if "signers" in expectation else expectation["no_signers"]
    assert decided_digest(facts, expectation["tag"], names) == want, facts
    assert facts["gun"] == spec["gun"]
    assert facts["server"] == notary_server.url
    assert facts["tag"] == expectation["tag"]
    if want is not None or case != "eve-image":
        assert facts["verified"] is True, facts["error"]
        assert "targets" in facts["roles"]
        assert all(role.get("signed_by") for role in facts["roles"].values())
    for signer, name in zip(facts["signers"], names, strict=False):
        assert signer["name"] == name and signer["secret"] == f"{name}-secret"
        assert signer["role"] == f"targets/{name}"
        assert signer["error"] is None
        # the signer's PEM key is found under the key ID its role is bound to
        assert set(signer["keyids"]) & set(facts["roles"][f"targets/{name}"]["keyids"])


def test_alice_facts_in_detail(
    fixture_cases: dict, signer_pems: dict, notary_server: NotaryTestServer, pki
) -> None:
    spec = fixture_cases["alice-image"]
    serve(notary_server, "alice-image", spec["gun"])
    service = TrustService(ca_file=pki.ca_file, clock=lambda: at(spec["valid_at"]))
    signers = (
        Signer("s1", "phbelitz", signer_pems["phbelitz"]),
        Signer("s2", "chamsen", signer_pems["chamsen"]),
    )
    [facts] = service.gather(
        [TrustRequest(parse_image(f"{spec['gun']}:test"), notary_server.url, signers)], time.monotonic() + 10
    )
    digest = "sha256:ac904c9b191d14faf54b7952f2650a4bb21c201bf34131388b851e8ce992a652"
    assert facts["verified"] is True and facts["error"] is None and facts["error_role"] is None
    assert set(facts["roles"]) == {"targets", "targets/releases", "targets/phbelitz", "targets/chamsen"}
    assert facts["targets"]["test"]["released"] == digest
    assert facts["targets"]["test"]["roles"]["targets/phbelitz"] == digest
    assert facts["targets"]["test"]["roles"]["targets/chamsen"] == digest
    # the wire order is the TUF order, each role once
    assert notary_server.tuf_requests()[:4] == ["root", "timestamp", "snapshot", "targets"]
    assert sorted(notary_server.tuf_requests()[4:]) == [
        "targets/chamsen",
        "targets/phbelitz",
        "targets/releases",
    ]


def test_missing_delegations_name_the_role(fixture_cases: dict, notary_server: NotaryTestServer, pki) -> None:
    spec = fixture_cases["eve-image"]
    serve(notary_server, "eve-image", spec["gun"])
    service = TrustService(ca_file=pki.ca_file, clock=lambda: at(spec["valid_at"]))
    [facts] = service.gather(
        [TrustRequest(parse_image(f"{spec['gun']}:test"), notary_server.url)], time.monotonic() + 10
    )
    assert facts["verified"] is False
    assert facts["error_role"].startswith("targets/")
    assert "does not serve" in facts["error"]


def test_expired_trust_data_is_not_verified(
    fixture_cases: dict, notary_server: NotaryTestServer, pki
) -> None:
    spec = fixture_cases["sample-image"]
    serve(notary_server, "sample-image", spec["gun"])
    service = TrustService(ca_file=pki.ca_file, clock=lambda: at("2035-01-01T00:00:00Z"))
    [facts] = service.gather(
        [TrustRequest(parse_image(f"{spec['gun']}:v1"), notary_server.url)], time.monotonic() + 10
    )
    assert facts["verified"] is False
    assert "expired" in facts["error"]


def test_many_images_in_one_gather_keep_order_and_share_fetches(
    fixture_cases: dict, notary_server: NotaryTestServer, pki
) -> None:
    alice, sample = fixture_cases["alice-image"], fixture_cases["sample-image"]
    notary_server.knobs.repos = {
        alice["gun"]: FIXTURES / "alice-image",
        sample["gun"]: FIXTURES / "sample-image",
    }
    # every role of both fixtures is unexpired at alice's valid_at
    service = TrustService(ca_file=pki.ca_file, clock=lambda: at(alice["valid_at"]))
    requests = [
        TrustRequest(parse_image(f"{sample['gun']}:v1"), notary_server.url),
        TrustRequest(parse_image(f"{alice['gun']}:test"), notary_server.url),
        TrustRequest(parse_image(f"{sample['gun']}:sign"), notary_server.url),
        TrustRequest(parse_image(f"{alice['gun']}:missing-tag"), notary_server.url),
    ]
    facts = service.gather(requests, time.monotonic() + 10)
    assert [f["tag"] for f in facts] == ["v1", "test", "sign", "missing-tag"]
    assert [f["gun"] for f in facts] == [sample["gun"], alice["gun"], sample["gun"], alice["gun"]]
    assert all(f["verified"] for f in facts), [f["error"] for f in facts]
    assert facts[0]["targets"]["v1"]["released"].startswith("sha256:799c0fa8")
    assert facts[2]["targets"]["sign"]["released"].startswith("sha256:a154797b")
    assert facts[3]["targets"]["missing-tag"]["released"] is None
    # one walk per (server, GUN): sample has 4 roles, alice 7
    assert len(notary_server.tuf_requests()) == 4 + 7


def test_digest_reference_lists_the_tags_that_signed_it(
    fixture_cases: dict, notary_server: NotaryTestServer, pki
) -> None:
    spec = fixture_cases["sample-image"]
    serve(notary_server, "sample-image", spec["gun"])
    service = TrustService(ca_file=pki.ca_file, clock=lambda: at(spec["valid_at"]))
    digest = "sha256:799c0fa8aa4c9fbff5a99aef1b4b5c3abb9c2f34134345005982fad3489893c7"
    [facts] = service.gather(
        [TrustRequest(parse_image(f"{spec['gun']}@{digest}"), notary_server.url)], time.monotonic() + 10
    )
    assert facts["verified"] is True
    assert facts["tag"] is None and facts["digest"] == digest
    assert {entry["released"] for entry in facts["targets"].values()} == {digest}
