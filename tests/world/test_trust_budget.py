"""The trust service's byte budgets against the real notary-server (tests/support/world.py).

A repository over the budget of one repository is denied with the reason and not cached, while
the same service goes on verifying the world's other repositories; the cache's per-server budget
keeps the most recently used repositories only, and every image is still verified.
"""

from __future__ import annotations

import time

from app.images import parse_image
from app.notary.service import TrustRequest, TrustService
from app.notary.settings import TrustSettings


def gather(service: TrustService, world, key: str) -> dict:
    [facts] = service.gather(
        [TrustRequest(parse_image(world[key].reference), world.notary_url)], time.monotonic() + 15
    )
    return facts


def test_a_repository_over_the_budget_is_denied_and_others_still_verify(world):
    # What the world's "signed" repository weighs when verified and cached.
    probe = TrustService(ca_file=world.ca_file)
    assert gather(probe, world, "signed")["verified"] is True
    kept = probe.stats()["cached_bytes"]
    assert kept > 0
    probe.close()

    # Budget of one repository: less than root.json, timestamp, snapshot and targets of "signed".
    tight = TrustService(TrustSettings(max_repository_bytes=2048), ca_file=world.ca_file)
    denied = gather(tight, world, "signed")
    assert denied["verified"] is False
    assert f"trust data for {world['signed'].gun} is more than 2048 bytes" in denied["error"], denied["error"]
    stats = tight.stats()
    assert stats["cached_repositories"] == 0 and stats["cached_bytes"] == 0 and stats["in_flight_bytes"] == 0
    tight.close()

    # Cache budget of one trust server: about one repository. Each is verified; the cache keeps the
    # most recent one and stays within its budget.
    small = TrustService(TrustSettings(cache_bytes_per_server=int(kept * 1.5)), ca_file=world.ca_file)
    for key in ("signed", "signer-pem", "signer-cert"):
        facts = gather(small, world, key)
        assert facts["verified"] is True, facts["error"]
        stats = small.stats()
        assert stats["cached_bytes"] <= int(kept * 1.5), stats
        assert stats["cached_repositories"] == 1, stats
    small.close()
