"""A broken custom Rego file is reported at its own file, row and column with OPA's readable message,
by `check` and by `apply` (which loads rules the way `serve` does) — never at the package line,
never as OPA's raw JSON."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OSTIARY = str(Path(sys.executable).parent / "ostiary")
POLICIES = str(ROOT / "examples" / "policies")

# (name, rule text after the package and import lines (which end on line 4), where, OPA's message)
BROKEN = [
    ("syntax", 'deny contains msg if {\n\tmsg := "x" +\n}', "7:1", "unexpected } token"),
    ("noif", 'deny contains msg {\n\tmsg := "x"\n}', "5:1", "`if` keyword is required before rule body"),
    ("string", 'deny contains msg if {\n\tmsg := "unterminated\n}', "6:9", "non-terminated string"),
    ("unsafe", 'deny contains msg if {\n\tmsg := sprintf("%s", [y])\n}', "6:9", "var y is unsafe"),
    (
        "nofunc",
        "deny contains msg if {\n\tmsg := no_such_function(1)\n}",
        "6:9",
        "undefined function no_such_function",
    ),
    ("types", 'deny contains msg if {\n\tmsg := concat(",", 3)\n}', "6:9", "concat: invalid argument(s)"),
]


def write(tmp_path: Path, name: str, body: str) -> Path:
    rego = tmp_path / "rego"
    rego.mkdir()
    (rego / f"{name}.rego").write_text(f"package ostiary.custom.{name}\n\nimport rego.v1\n\n{body}\n")
    return rego


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([OSTIARY, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(("name", "body", "where", "message"), BROKEN, ids=[b[0] for b in BROKEN])
def test_check_and_apply_name_the_file_row_and_column(tmp_path, name, body, where, message):
    write(tmp_path, name, body)
    checked = run("check", "--policy-dir", POLICIES, "--rego-dir", "rego", cwd=tmp_path)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    out = checked.stdout + checked.stderr
    line = next(x for x in out.splitlines() if x.startswith(f"rego/{name}.rego:"))
    assert line.startswith(f"rego/{name}.rego:{where}: error: "), line
    assert message in line, line
    assert '"errors"' not in out and "{" not in line.split(": error: ")[1]

    (tmp_path / "pod.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: 'nginx@sha256:"
        + "a" * 64
        + "'}]}\n"
    )
    applied = run("apply", "pod.yaml", "--policy-dir", POLICIES, "--rego-dir", "rego", cwd=tmp_path)
    assert applied.returncode == 2, applied.stdout + applied.stderr
    assert f"rego/{name}.rego:{where}" in applied.stderr, applied.stderr
    assert message in applied.stderr and '"errors"' not in applied.stderr
