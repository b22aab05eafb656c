"""The user's Rego unit tests as `opa test` shows them: file and line of each test, its print()
output, and on request a trace (`--explain`) and coverage (`--coverage`) of the user's files only.

The library's modules are loaded beside the user's (their tests import data.ostiary.main), but for
the trace and the coverage the library's own tests are left out and its files are not reported:
what a team reads is about its rules.
"""

from __future__ import annotations

import base64
import binascii
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from app.opa.process import OpaNotFound, find_opa
from app.paths import rego_library_dir

EXPLAIN_MODES = ("fails", "full", "notes", "debug")
OUTPUT_LIMIT = 64 * 1024  # bytes of print() output kept per test


def print_output(record: dict) -> str:
    """The print() output `opa test --format json` recorded for a test (base64), as text."""
    raw = record.get("output")
    if not isinstance(raw, str) or not raw:
        return ""
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return ""
    text = data[:OUTPUT_LIMIT].decode("utf-8", "replace")
    return text + ("\n… (output cut)" if len(data) > OUTPUT_LIMIT else "")


def _library_modules() -> list[str]:
    return [str(p) for p in sorted(rego_library_dir().glob("*.rego")) if not p.name.endswith("_test.rego")]


def _opa_test(user_dir: str, run: str | None, *extra: str) -> subprocess.CompletedProcess:
    args = [find_opa(), "test", *_library_modules(), user_dir, *extra]
    if run:
        args += ["--run", run]
    return subprocess.run(args, capture_output=True, text=True, check=False, timeout=600)


def trace(user_dir: str, run: str | None, mode: str) -> str:
    """`opa test --explain MODE -v` over the user's tests only, as OPA prints it."""
    if mode not in EXPLAIN_MODES:
        raise ValueError(f"--explain takes one of {', '.join(EXPLAIN_MODES)}")
    try:
        done = _opa_test(user_dir, run, "--explain", mode, "-v")
    except (OpaNotFound, OSError, subprocess.TimeoutExpired) as exc:
        return f"opa test could not run: {exc}"
    return (done.stdout + done.stderr).strip()


@dataclass
class FileCoverage:
    file: str
    percent: float
    not_covered: list[tuple[int, int]] = field(default_factory=list)  # (first row, last row)

    def describe(self) -> str:
        head = f"  {self.file}: {self.percent:.1f}% covered"
        if not self.not_covered:
            return head
        spans = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in self.not_covered)
        word = (
            "line"
            if len(self.not_covered) == 1 and self.not_covered[0][0] == self.not_covered[0][1]
            else "lines"
        )
        return f"{head}; not covered: {word} {spans}"


def coverage(user_dir: str, run: str | None) -> tuple[list[FileCoverage], str]:
    """Coverage of the user's rule files (not their tests, not the library) by the user's tests, and
    the error text when opa could not run."""
    try:
        done = _opa_test(user_dir, run, "--coverage", "--format", "json")
    except (OpaNotFound, OSError, subprocess.TimeoutExpired) as exc:
        return [], f"opa test --coverage could not run: {exc}"
    try:
        report = json.loads(done.stdout)
        files = report["files"]
    except (ValueError, KeyError, TypeError):
        if done.returncode != 0 and "FAIL" in done.stdout:
            return (
                [],
                "OPA reports coverage only when every selected test passes: "
                "fix the failing tests, or select passing ones with --run",
            )
        return [], (done.stdout + done.stderr).strip()[:2000] or "opa test --coverage gave no report"
    root = Path(user_dir).resolve()
    result = []
    for name, info in sorted(files.items()):
        path = Path(name)
        if path.name.endswith("_test.rego") or root not in path.resolve().parents:
            continue
        spans = [
            (int(r["start"]["row"]), int(r["end"]["row"]))
            for r in info.get("not_covered") or []
            if isinstance(r, dict) and "start" in r and "end" in r
        ]
        result.append(FileCoverage(name, float(info.get("coverage") or 0.0), spans))
    return result, ""
