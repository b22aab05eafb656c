"""The real Docker Content Trust world (notary-server + notary-signer + docker-registry on loopback).

One world per test session, with the standard scenario of tests/support/world.py: build_scenario().
A missing binary fails the tests (never skips them) with what to install.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # `pytest` run without `python -m`: make `tests.support` importable
    sys.path.insert(0, _ROOT)

from tests.support.world import (
    NotaryWorld,
    Scenario,
    WorldError,
    build_scenario,
    missing_binaries,
)


@pytest.fixture(scope="session")
def world() -> Scenario:
    missing = missing_binaries()
    if missing:
        pytest.fail(
            "the notary test world needs: "
            + "; ".join(f"{b} ({how})" for b, how in missing.items()),
            pytrace=False,
        )
    t0 = time.monotonic()
    w = NotaryWorld()
    try:
        w.start()
        scenario = build_scenario(w)
    except WorldError as e:
        w.stop()
        pytest.fail(f"could not build the notary test world: {e}", pytrace=False)
    except BaseException:
        w.stop()
        raise
    scenario.build_seconds = time.monotonic() - t0
    try:
        yield scenario
    finally:
        w.stop()
