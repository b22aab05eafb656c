"""Shared fixtures: the real OPA binary (built by scripts/setup.sh), never a stand-in, and one real
Docker Content Trust world (notary-server + notary-signer + docker-registry on loopback) per test
session, shared by the world and end-to-end suites. A missing binary fails, never skips."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from app.opa.process import LocalOpa, find_opa

_ROOT = str(Path(__file__).resolve().parents[1])
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
def opa_binary() -> str:
    return find_opa()  # raises with the setup command when missing: no skip


@pytest.fixture(scope="session")
def local_opa(opa_binary):
    opa = LocalOpa(opa_binary).start()
    yield opa
    opa.stop()


@pytest.fixture(scope="session")
def world() -> Scenario:
    missing = missing_binaries()
    if missing:
        pytest.fail(
            "the notary test world needs: " + "; ".join(f"{b} ({how})" for b, how in missing.items()),
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


@pytest.fixture(scope="session", autouse=True)
def _private_state_home(tmp_path_factory):
    """`ostiary serve` keeps trust-on-first-use records under $XDG_STATE_HOME/ostiary by default: give
    the test session its own, so runs never share records (nor touch the user's)."""
    import os

    previous = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("xdg-state"))
    yield
    if previous is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = previous
