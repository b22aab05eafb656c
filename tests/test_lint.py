"""The checks that keep the code in shape run with the tests: ruff (rules and format), mypy on app/
(untyped definitions refused), and Regal on the Rego library. Each failure prints what to fix.

Configuration: pyproject.toml ([tool.ruff], [tool.mypy]) and .regal/config.yaml. `opa fmt` and
`opa check --strict` run in tests/integration/test_rego_library.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SOURCES = ["app", "tests", "scripts"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def test_ruff_rules_pass():
    done = run(str(BIN / "ruff"), "check", *SOURCES)
    assert done.returncode == 0, (
        f"ruff check found problems (fix, or `ruff check --fix`):\n{done.stdout[-6000:]}"
    )


def test_code_is_ruff_formatted():
    done = run(str(BIN / "ruff"), "format", "--check", *SOURCES)
    assert done.returncode == 0, (
        f"not formatted (run `.venv/bin/ruff format app tests scripts`):\n{done.stdout[-3000:]}"
    )


def test_mypy_passes_on_app_with_every_definition_typed():
    done = run(sys.executable, "-m", "mypy", "app")
    assert done.returncode == 0, f"mypy app:\n{done.stdout[-6000:]}{done.stderr[-2000:]}"


def test_regal_lints_the_rego_library_clean():
    regal = Path(os.environ.get("OSTIARY_TOOLS_DIR") or ROOT / ".tools") / "bin" / "regal"
    assert regal.exists(), "regal is missing: run scripts/setup-tools.sh regal (or scripts/setup.sh)"
    done = run(str(regal), "lint", "rego/ostiary")
    assert done.returncode == 0, f"regal lint rego/ostiary:\n{done.stdout[-6000:]}{done.stderr[-2000:]}"
