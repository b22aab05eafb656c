"""Which digest a tag resolves to, beside the real notary client: `notary list -r targets/releases
-r targets` on repositories signed by the real notary CLI, nested delegations under targets/releases
included. Docker pulls the digest notary lists only when it lists it from targets/releases or
targets; from any other role (e.g. targets/releases/x) Docker refuses, and so must the facts.
"""

from __future__ import annotations

import time

import pytest

from app.images import parse_image
from app.notary.service import TrustRequest, TrustService

REPO = "ostiary/priority"


def _notary_list(world, repo: str) -> dict[str, tuple[str, str]]:
    """tag -> (sha256:digest, role) as the notary CLI lists them."""
    out = world.notary("list", world.gun(repo), "-r", "targets/releases", "-r", "targets").stdout
    listed = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 4 and len(fields[1]) == 64:
            listed[fields[0]] = ("sha256:" + fields[1], fields[3])
    return listed


@pytest.fixture(scope="module")
def priority_repo(world):
    w = world.world
    a = w.push(REPO, "nested", seed="priority-a")
    b = w.push(REPO, "plain", seed="priority-b")
    w.add_delegation_key(REPO, "rel", ("targets/releases",))
    w.add_delegation_key(REPO, "relx", ("targets/releases/x",))
    w.sign(REPO, "nested", b.digest, b.size, roles=("targets/releases/x",))  # only in the nested role
    w.sign(REPO, "nested", a.digest, a.size, roles=("targets",))  # and a fall-back that must not be used
    w.sign(REPO, "plain", b.digest, b.size, roles=("targets/releases",))
    w.sign(REPO, "plain", a.digest, a.size, roles=("targets",))
    w.sign(REPO, "onlytargets", a.digest, a.size, roles=("targets",))
    return w


def test_released_digest_matches_the_notary_client(priority_repo, world) -> None:
    listed = _notary_list(priority_repo, REPO)
    assert set(listed) == {"nested", "plain", "onlytargets"}, listed
    assert listed["nested"][1] == "targets/releases/x"
    service = TrustService(ca_file=priority_repo.ca_file)
    for tag, (digest, role) in listed.items():
        [facts] = service.gather(
            [TrustRequest(parse_image(f"{priority_repo.gun(REPO)}:{tag}"), priority_repo.notary_url)],
            time.monotonic() + 20,
        )
        assert facts["verified"] is True, facts["error"]
        entry = facts["targets"][tag]
        if role in ("targets/releases", "targets"):
            assert entry["released"] == digest and entry["refused"] is None, (tag, entry)
        else:
            assert entry["released"] is None, (tag, entry)
            assert role in entry["refused"], (tag, entry)
