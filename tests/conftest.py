"""Shared fixtures: the real OPA binary (built by scripts/setup.sh), never a stand-in."""

from __future__ import annotations

import pytest

from app.opa.process import LocalOpa, find_opa


@pytest.fixture(scope="session")
def opa_binary() -> str:
    return find_opa()  # raises with the setup command when missing: no skip


@pytest.fixture(scope="session")
def local_opa(opa_binary):
    opa = LocalOpa(opa_binary).start()
    yield opa
    opa.stop()
