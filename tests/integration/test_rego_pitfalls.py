"""The Rego pitfalls of docs/policy-as-code.md, proven against the OPA Ostiary ships.

Every row of the table between the `pitfalls:begin` / `pitfalls:end` markers is evaluated as
`r if { EXPR }` with the field missing; the documented answer must be OPA's. A change of OPA's
semantics (or a wrong row) fails here rather than misleading a team writing deny rules.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "policy-as-code.md"
OSTIARY = str(Path(sys.executable).parent / "ostiary")
ROW = re.compile(r"^\| `(?P<expr>[^`]+)` \| (?P<answer>true|undefined) \|$")


def documented_rows() -> list[tuple[str, str]]:
    text = DOC.read_text()
    block = text.split("<!-- pitfalls:begin -->", 1)[1].split("<!-- pitfalls:end -->", 1)[0]
    rows = [(m["expr"], m["answer"]) for line in block.splitlines() if (m := ROW.match(line.strip()))]
    body_lines = [line for line in block.splitlines() if line.startswith("| `")]
    assert len(rows) == len(body_lines), "a row of the pitfalls table does not parse"
    return rows


ROWS = documented_rows()


def test_the_table_has_the_traps_the_text_names():
    exprs = [expr for expr, _ in ROWS]
    assert len(ROWS) >= 8
    assert any(" in {" in e and e.startswith("not ") for e in exprs)  # `not x in S`
    assert any("!=" in e for e in exprs)


@pytest.mark.parametrize(("expr", "answer"), ROWS, ids=[expr for expr, _ in ROWS])
def test_documented_answer_is_what_opa_says(opa_binary, tmp_path, expr, answer):
    module = tmp_path / "pitfall.rego"
    module.write_text(f'package pitfall\n\nblocked(u) if u == "root"\n\nr if {{\n\t{expr}\n}}\n')
    result = subprocess.run(
        [opa_binary, "eval", "-f", "json", "--stdin-input", "-d", str(module), "data.pitfall.r"],
        input="{}",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    results = out.get("result") or []
    values = [e["value"] for r in results for e in r["expressions"]]
    got = "undefined" if not results else ("true" if values == [True] else json.dumps(values))
    assert got == answer, f"docs say `{expr}` is {answer}; OPA says {got}"


def test_test_files_are_never_loaded_as_rules(tmp_path):
    """A *_test.rego beside custom rules is not part of a decision (apply and check skip it)."""
    rego = tmp_path / "rego"
    rego.mkdir()
    (rego / "labels.rego").write_text(
        "package ostiary.custom.labels\n\nimport rego.v1\n\n"
        'deny contains "needs a team label" if not input.object.metadata.labels.team\n'
    )
    # A test module in a custom package with a deny-everything rule: if it were loaded, every
    # object would be denied with its message.
    (rego / "labels_test.rego").write_text(
        "package ostiary.custom.everything\n\nimport rego.v1\n\n"
        'deny contains "loaded from a test file" if true\n\n'
        "test_nothing if true\n"
    )
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, labels: {team: a}}\n"
        "spec: {containers: [{name: c, image: 'nginx@sha256:" + "a" * 64 + "'}]}\n"
    )
    policies = ROOT / "examples" / "policies"
    applied = subprocess.run(
        [
            OSTIARY,
            "apply",
            str(manifest),
            "--policy-dir",
            str(policies),
            "--rego-dir",
            str(rego),
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "loaded from a test file" not in applied.stdout + applied.stderr
    assert applied.stdout.strip(), applied.stderr
    checked = subprocess.run(
        [OSTIARY, "check", "--policy-dir", str(policies), "--rego-dir", str(rego)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "everything" not in checked.stdout
