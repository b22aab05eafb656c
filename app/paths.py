"""Where Ostiary finds its static Rego library and the project's tools folder."""

from __future__ import annotations

import os
from pathlib import Path

from app.errors import ConfigError

REGO_LIB_ENV = "OSTIARY_REGO_LIB"


def repo_root() -> Path | None:
    root = Path(__file__).resolve().parent.parent
    return root if (root / "rego" / "ostiary").is_dir() else None


def rego_library_dir() -> Path:
    """The directory holding rego/ostiary/*.rego (env OSTIARY_REGO_LIB overrides)."""
    env = os.environ.get(REGO_LIB_ENV)
    if env:
        return Path(env)
    packaged = Path(__file__).resolve().parent / "rego" / "ostiary"
    if packaged.is_dir():
        return packaged
    root = repo_root()
    if root is None:
        raise ConfigError(f"Ostiary's Rego library is missing: set {REGO_LIB_ENV}")
    return root / "rego" / "ostiary"


def rego_testdata_dir() -> Path | None:
    """The data documents of the library's Rego tests (tests/rego-data in a source checkout;
    absent from an installed package and the image, which carry no library tests)."""
    root = repo_root()
    candidate = root / "tests" / "rego-data" if root else None
    return candidate if candidate is not None and candidate.is_dir() else None
