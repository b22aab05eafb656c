"""The `ostiary` command line as a person uses it (real OPA behind check, explain and test)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
OSTIARY = str(Path(sys.executable).parent / "ostiary")


def run(*args, stdin=None):
    return subprocess.run(
        [OSTIARY, *args], check=False, capture_output=True, text=True, timeout=120, input=stdin
    )


def test_translate_prints_one_module_per_policy():
    result = run("translate", str(EXAMPLES / "policies" / "cluster.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("# module id: ") == 2
    assert 'package ostiary.policies.cluster["default"]' in result.stdout
    assert 'package ostiary.policies.cluster["kubecon-cluster-image-policy"]' in result.stdout


def test_translate_names_the_bad_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: ostiary.dev/v1\nkind: ClusterImagePolicy\nmetadata: {name: x}\n"
        "spec: {repositories: [{name: 'a', policy: {trust: {enabled: 1}}}]}\n"
    )
    result = run("translate", str(bad))
    assert result.returncode != 0
    assert "bad.yaml#0" in result.stderr and "spec.repositories[0].policy.trust.enabled" in result.stderr


def test_check_compiles_the_examples_in_opa():
    result = run("check", "--policy-dir", str(EXAMPLES / "policies"))
    assert result.returncode == 0, result.stderr
    assert "ok: 3 policies" in result.stdout


def test_check_refuses_custom_rego_that_does_not_compile(tmp_path):
    (tmp_path / "bad.rego").write_text(
        "package ostiary.custom.bad\n\nimport rego.v1\n\ndeny contains msg if { msg := undefined_fn(1) }\n"
    )
    result = run("check", "--policy-dir", str(EXAMPLES / "policies"), "--rego-dir", str(tmp_path))
    assert result.returncode != 0
    assert "ostiary/custom/bad" in result.stderr


def test_explain_decides_offline_and_exits_by_verdict():
    allowed = run(
        "explain",
        str(EXAMPLES / "reviews" / "deployment-mirror.json"),
        "--policy-dir",
        str(EXAMPLES / "policies"),
    )
    assert allowed.returncode == 0, allowed.stderr
    out = json.loads(allowed.stdout)
    assert out["response"]["allowed"] is True
    assert out["images"][0]["policy"]["repository"] == "registry.example.com/mirror/*"
    denied = run(
        "explain",
        "-",
        "--policy-dir",
        str(EXAMPLES / "policies"),
        stdin=(EXAMPLES / "reviews" / "deployment-unlisted.json").read_text(),
    )
    assert denied.returncode == 1
    assert "no repository entry" in json.loads(denied.stdout)["response"]["status"]["message"]


def test_test_command_runs_the_library_and_custom_tests(tmp_path):
    (tmp_path / "labels.rego").write_text(
        "package ostiary.custom.labels\n\nimport rego.v1\n\n"
        'deny contains "needs a team label" if not input.object.metadata.labels.team\n'
    )
    (tmp_path / "labels_test.rego").write_text(
        "package ostiary.custom.labels_test\n\nimport rego.v1\n\nimport data.ostiary.custom.labels\n\n"
        'test_unlabelled_is_denied if {\n\t"needs a team label" in labels.deny with input as {"object": {"metadata": {}}}\n}\n'
    )
    result = run("test", "--rego-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout[-2000:]
    assert "test_unlabelled_is_denied: PASS" in result.stdout
