"""`ostiary test`: the declarative tests of examples/ (this is how the README's test command runs them),
failures and filters, and the library's Rego tests reported apart from the user's."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import yaml

from app.opa.process import find_opa

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
OSTIARY = str(Path(sys.executable).parent / "ostiary")
EXAMPLE_TESTS = sorted(EXAMPLES.glob("*/*_test.yaml"))


def run(*args):
    return subprocess.run(
        [OSTIARY, *args], check=False, capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def sections(stdout: str) -> dict[str, str]:
    parts = re.split(r"^== ", stdout, flags=re.MULTILINE)
    return {p.split("\n", 1)[0]: p for p in parts[1:]}


def test_every_example_passes_its_declarative_and_rego_tests():
    assert {p.parent.name for p in EXAMPLE_TESTS} >= {
        "docker-hub",
        "pinned-signers",
        "namespace-override",
        "custom-rules",
    }
    result = run("test", "--rego-dir", "examples/custom-rules/rego", "examples")
    assert result.returncode == 0, result.stdout + result.stderr
    cases = sum(len(yaml.safe_load(p.read_text())["spec"]["cases"]) for p in EXAMPLE_TESTS)
    parts = sections(result.stdout)
    assert list(parts) == [
        f"Ostiary library: Rego unit tests ({ROOT / 'rego' / 'ostiary'})",
        "Your Rego unit tests (examples/custom-rules/rego)",
        "Your policy tests (examples)",
    ]
    library, rego, policy = parts.values()
    alone = json.loads(
        subprocess.run(
            [
                find_opa(),
                "test",
                "--format",
                "json",
                str(ROOT / "rego" / "ostiary"),
                str(ROOT / "tests" / "rego-data"),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        ).stdout
    )
    assert f"{len(alone)}/{len(alone)} passed" in library  # the user's tests are not counted as the library's
    assert "rules_test.test_latest_is_denied: PASS" in rego and "7/7 passed" in rego
    assert f"{cases}/{cases} passed" in policy
    assert policy.count("  PASS ") == cases
    assert result.stdout.rstrip().endswith("PASS")


def copy_example(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(EXAMPLES / name, target)
    return target


def test_a_wrong_expectation_fails_and_says_why(tmp_path):
    example = copy_example(tmp_path, "namespace-override")
    test_file = example / "namespace-override_test.yaml"
    doc = yaml.safe_load(test_file.read_text())
    doc["spec"]["cases"][1]["expect"] = {"verdict": "allowed"}
    doc["spec"]["cases"][2]["expect"]["denials"] = ["a message that is not there"]
    doc["spec"]["cases"][0]["expect"]["patch"] = [{"op": "replace", "path": "/x", "value": "y"}]
    test_file.write_text(yaml.safe_dump(doc, sort_keys=False))
    report = tmp_path / "report.xml"
    result = run("test", str(example), "--junit", str(report))
    assert result.returncode == 1, result.stdout
    suites = {s.get("name"): s for s in ET.parse(report).getroot()}
    assert (
        suites["Your policy tests"].get("tests") == "5" and suites["Your policy tests"].get("failures") == "3"
    )
    assert suites["Ostiary library"].get("failures") == "0"
    failing = [c.get("name") for c in suites["Your policy tests"] if c.find("failure") is not None]
    assert "namespace-override/anything else is denied by the cluster policy" in failing
    policy = sections(result.stdout)[f"Your policy tests ({example})"]
    assert "FAIL namespace-override/anything else is denied by the cluster policy" in policy
    assert "expected allowed, got denied: Ostiary denied the request" in policy
    assert 'expected a denial containing "a message that is not there", got []' in policy
    assert 'expected patch [{"op": "replace", "path": "/x", "value": "y"}], got []' in policy
    assert "'" not in policy.split("expected a denial")[1].split("\n")[0]  # no Python repr
    assert "2/5 passed" in policy
    assert result.stdout.rstrip().endswith("FAIL")


def test_run_filters_cases_by_name():
    result = run("test", "--run", "namespace-override/.*sandbox", "examples")
    assert result.returncode == 0, result.stdout
    policy = sections(result.stdout)["Your policy tests (examples)"]
    assert "1/1 passed" in policy and "sandbox's own policy allows anything" in policy


def test_a_failing_user_rego_test_is_reported_as_the_users(tmp_path):
    rego = tmp_path / "rego"
    rego.mkdir()
    (rego / "mine_test.rego").write_text(
        "package ostiary.custom.mine_test\n\nimport rego.v1\n\ntest_broken if { 1 == 2 }\n"
    )
    result = run("test", "--rego-dir", str(rego))
    assert result.returncode == 1
    parts = sections(result.stdout)
    library = next(v for k, v in parts.items() if k.startswith("Ostiary library"))
    assert "FAIL" not in library
    assert "data.ostiary.custom.mine_test.test_broken: FAIL" in parts[f"Your Rego unit tests ({rego})"]


def test_custom_rego_that_does_not_compile_fails_in_the_users_section(tmp_path):
    (tmp_path / "b.rego").write_text(
        "package ostiary.custom.b\n\nimport rego.v1\n\ndeny contains x if { x := nope(1) }\n"
    )
    result = run("test", "--rego-dir", str(tmp_path))
    assert result.returncode == 1
    mine = sections(result.stdout)[f"Your Rego unit tests ({tmp_path})"]
    assert f"{tmp_path / 'b.rego'}:5" in mine and "undefined function nope" in mine


def test_unusable_test_files_exit_2_with_file_and_line(tmp_path):
    bad = tmp_path / "bad_test.yaml"
    bad.write_text(
        "apiVersion: ostiary.dev/v1\nkind: PolicyTest\nmetadata: {name: b}\nspec:\n  policies: p\n"
        "  cases:\n    - name: one\n      object: {kind: Pod}\n      expext: {verdict: allowed}\n"
    )
    result = run("test", str(bad))
    assert result.returncode == 2
    assert f"{bad}:7: spec.cases[0]: unknown field(s) expext" in result.stderr
    bad.write_text("kind: PolicyTest\nspec: [\n")
    result = run("test", str(bad))
    assert result.returncode == 2 and f"{bad}:3" in result.stderr and "not valid YAML" in result.stderr
    bad.write_text(
        "kind: PolicyTest\nspec:\n  policies: p\n  cases:\n    - name: v\n      object: {kind: Pod}\n      expect: {verdict: maybe}\n"  # noqa: E501 - a whole document on one line
    )
    assert "expect.verdict: one of allowed, denied, not checked" in run("test", str(bad)).stderr


def test_a_case_whose_policies_do_not_load_fails(tmp_path):
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(
        "kind: ImagePolicy\napiVersion: ostiary.dev/v1\nmetadata: {name: x}\nspec: {}\n"
    )
    (tmp_path / "t_test.yaml").write_text(
        "kind: PolicyTest\nmetadata: {name: t}\nspec:\n  policies: policies\n  cases:\n"
        "    - name: c\n      object: {apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {containers: []}}\n"
        "      expect: {verdict: allowed}\n"
    )
    result = run("test", str(tmp_path))
    assert result.returncode == 1
    assert "FAIL t/*" in result.stdout and "p.yaml#0" in result.stdout
