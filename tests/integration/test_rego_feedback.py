"""`ostiary test` on a team's Rego unit tests gives the feedback `opa test` gives: file and line of a
failing test, what it print()ed, a trace on request (--explain) and coverage of the team's rule
files (--coverage); JUnit carries the team's tests, never the library's or its install paths."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from app.paths import rego_library_dir

OSTIARY = str(Path(sys.executable).parent / "ostiary")

RULES = """package ostiary.custom.labels

import rego.v1

deny contains "needs a team label" if not input.object.metadata.labels.team

deny contains "no privileged pods" if {
	some c in input.object.spec.containers
	c.securityContext.privileged == true
}
"""
TESTS = """package ostiary.custom.labels_test

import rego.v1

import data.ostiary.custom.labels

test_unlabelled_is_allowed if {
	print("deny was", labels.deny) with input as {"object": {"metadata": {}}}
	count(labels.deny) == 0 with input as {"object": {"metadata": {}}}
}

test_labelled_is_allowed if {
	print("labelled case")
	count(labels.deny) == 0 with input as {"object": {"metadata": {"labels": {"team": "a"}}}}
}
"""


@pytest.fixture
def project(tmp_path):
    rego = tmp_path / "rego"
    rego.mkdir()
    (rego / "labels.rego").write_text(RULES)
    (rego / "labels_test.rego").write_text(TESTS)
    return tmp_path


def run(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [OSTIARY, "test", "--rego-dir", "rego", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_failing_test_shows_file_line_and_print_output(project):
    result = run(project)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    failed = next(i for i, x in enumerate(lines) if "test_unlabelled_is_allowed: FAIL" in x)
    assert lines[failed].endswith("[rego/labels_test.rego:7]"), lines[failed]
    assert lines[failed + 1].strip().startswith("| deny was"), lines[failed + 1]
    assert "needs a team label" in lines[failed + 1]
    passed = next(x for x in lines if "test_labelled_is_allowed: PASS" in x)
    assert passed.endswith("[rego/labels_test.rego:12]")
    assert "labelled case" not in result.stdout  # a passing test's output only with -v
    assert "labelled case" in run(project, "-v").stdout


def test_explain_prints_opas_trace_of_the_users_tests_only(project):
    result = run(project, "--explain", "fails")
    assert result.returncode == 1
    trace = result.stdout.split("== Trace of your Rego tests (opa test --explain fails)", 1)[1]
    assert "rego/labels.rego:5" in trace and "Enter data.ostiary.custom.labels.deny" in trace
    assert "main_test" not in trace and str(rego_library_dir()) not in trace
    no_dir = subprocess.run(
        [OSTIARY, "test", "--explain", "fails"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert no_dir.returncode == 2 and "give --rego-dir" in no_dir.stderr


def test_coverage_of_the_users_rule_files(project):
    failing = run(project, "--coverage")
    assert "OPA reports coverage only when every selected test passes" in failing.stdout
    result = run(project, "--coverage", "--run", "test_labelled_is_allowed")
    assert result.returncode == 0, result.stdout + result.stderr
    section = (
        result.stdout.split("== Coverage of your rules by your Rego tests (rego)", 1)[1].strip().splitlines()
    )
    assert len(section) == 1, section  # the rule file: not the test file, not the library
    assert (
        section[0].startswith("rego/labels.rego: ")
        and "40.0% covered; not covered: lines 5, 7, 9" in section[0]
    ), section


def test_junit_carries_the_users_tests_without_install_paths(project, tmp_path):
    junit = tmp_path / "out.xml"
    run(project, "--junit", str(junit))
    text = junit.read_text()
    assert str(rego_library_dir()) not in text and str(rego_library_dir().parent) not in text
    root = ET.fromstring(text)
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    library = list(suites["Ostiary library"].iter("testcase"))
    assert len(library) == 1 and library[0].find("failure") is None  # one summary case, passing
    mine = {c.get("name"): c for c in suites["Your Rego unit tests"].iter("testcase")}
    failed = mine["data.ostiary.custom.labels_test.test_unlabelled_is_allowed"]
    assert failed.get("classname") == "rego/labels_test.rego:7"
    assert "deny was" in failed.find("failure").text
