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


def test_translate_prints_one_data_document_per_policy():
    result = run("translate", str(EXAMPLES / "policies" / "cluster.yaml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("# data: ") == 2
    assert "# data: /v1/data/ostiary_policies/cluster/default\n" in result.stdout
    assert "# data: /v1/data/ostiary_policies/cluster/kubecon-cluster-image-policy\n" in result.stdout
    documents = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(documents) == 2 and all(list(d) == ["policy"] for d in documents)


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
    assert out["images"][0]["entry"]["repository"] == "registry.example.com/mirror/*"
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


def _commands(group, prefix=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def test_every_at_option_is_the_one_parser():
    """`--at` means the same on every command: one parser (a naive time is UTC, an offset is converted)."""
    from datetime import UTC, datetime

    from app.cli import main
    from app.cli.options import AtTime

    taking_at = {path: cmd for path, cmd in _commands(main) if any(p.name == "at" for p in cmd.params)}
    assert {("apply",), ("explain",), ("trust", "inspect")} <= set(taking_at)
    for path, command in taking_at.items():
        (param,) = [p for p in command.params if p.name == "at"]
        assert isinstance(param.type, AtTime), path
    moment = datetime(2020, 11, 20, tzinfo=UTC)
    for text in ("2020-11-20T00:00:00Z", "2020-11-20T00:00:00", "2020-11-20T02:00:00+02:00", "2020-11-20"):
        assert AtTime().convert(text, None, None) == moment, text


def test_a_bad_at_is_refused_alike_by_every_command(tmp_path):
    review = tmp_path / "review.json"
    review.write_text("{}")
    policies = str(EXAMPLES / "policies")
    for args in (
        ("trust", "inspect", "example.com/app:1", "--at", "yesterday"),
        ("apply", str(review), "--policy-dir", policies, "--at", "yesterday"),
        ("explain", str(review), "--policy-dir", policies, "--at", "yesterday"),
    ):
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert "--at 'yesterday': not an ISO 8601 time such as 2020-11-20T00:00:00Z" in result.stderr, args


def test_explain_and_apply_give_the_same_account(tmp_path):
    """Why was my pod denied? has one answer: explain prints apply -o json's object, plus the response."""
    review = json.loads((EXAMPLES / "reviews" / "deployment-unlisted.json").read_text())
    manifest = tmp_path / "object.json"
    manifest.write_text(json.dumps(review))  # apply takes an AdmissionReview as it is
    policies = str(EXAMPLES / "policies")
    explained = json.loads(run("explain", str(manifest), "--policy-dir", policies).stdout)
    applied = json.loads(run("apply", str(manifest), "--policy-dir", policies, "-o", "json").stdout)
    (one,) = applied["results"]
    assert explained.pop("response")["allowed"] is False
    for key in ("verdict", "message", "denials", "warnings", "patch", "images"):
        assert explained[key] == one[key], key
    assert explained["images"] and {"entry", "trust", "pin", "reasons"} <= set(explained["images"][0])


def test_no_opa_binary_stops_an_offline_command_with_the_reason(monkeypatch):
    """Seen when the shared opa was being rebuilt: a traceback from the runtime, now an EngineError
    (apply, explain: exit 2 with the message; test: a failed case naming it)."""
    import pytest

    import app.opa.process as process
    from app.offline.engine import Engine, EngineError
    from app.runtime import ServeConfig

    def missing() -> str:
        raise process.OpaNotFound("no opa binary: run scripts/setup.sh")

    monkeypatch.setattr(process, "find_opa", missing)
    with pytest.raises(EngineError, match="no opa binary"):
        Engine(ServeConfig(policy_dir=str(EXAMPLES / "policies"), decision_log="off"))
