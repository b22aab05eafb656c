"""`ostiary check` as a person runs it: every mistake at once, each with file and line (real OPA)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.admission.input import input_config, opa_input, read_request
from app.offline.check import Locator, _entries, covers, shadowed
from app.policies.model import PolicyResource
from app.policies.translate import parse_pattern
from tests.integration.helpers import pod_spec, review, workload

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
OSTIARY = str(Path(sys.executable).parent / "ostiary")

POLICY = """apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata:
  name: {name}
spec:
  repositories:
{entries}"""


def run(*args):
    return subprocess.run([OSTIARY, "check", *args], check=False, capture_output=True, text=True, timeout=180)


def check_json(*args):
    result = run(*args, "-o", "json")
    return result.returncode, json.loads(result.stdout)


def where(report):
    return {(Path(f["file"]).name, f["line"], f["code"]) for f in report["findings"]}


def test_the_examples_are_clean():
    for example in ("custom-rules", "docker-hub", "namespace-override", "pinned-signers"):
        args = ["--policy-dir", str(EXAMPLES / example / "policies")]
        if (EXAMPLES / example / "rego").is_dir():
            args += ["--rego-dir", str(EXAMPLES / example / "rego")]
        code, report = check_json(*args)
        assert code == 0, report
        assert (
            report["ok"] is True and report["findings"] == [] and report["summary"]["compiledInOpa"] is True
        )


def test_every_unknown_field_and_yaml_error_is_reported_with_file_and_line(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "apiVersion: ostiary.dev/v1\nkind: ClusterImagePolicy\nmetadata:\n  name: base\n"
        "spc:\n  repositories: []\n"  # line 5: top-level typo the loader ignores
        "---\n"
        "apiVersion: ostiary.dev/v1\nkind: ClusterImagePolicy\nmetadata:\n  name: main\nspec:\n"
        "  repositories:\n"
        "    - name: docker.io/library/*\n"
        "      policy:\n"
        "        trust:\n"
        "          enable: true\n"  # line 17
        "    - name: nginx\n"
        "      polcy: {}\n"  # line 19
        "  mod: warn\n"  # line 20
        "labels: {}\n"  # line 21: top-level, in a document refused anyway
    )
    (tmp_path / "b.yaml").write_text("a: [b\nc: d\n")  # line 2: where the parser stops
    (tmp_path / "c.json").write_text('{"apiVersion": "ostiary.dev/v1",\n "kind": \n}\n')
    result = run("--policy-dir", str(tmp_path))
    assert result.returncode == 1
    assert (
        f"{tmp_path / 'a.yaml'}:17: error: spec.repositories[0].policy.trust.enable: unknown field 'enable'"
        in result.stderr
    )
    code, report = check_json("--policy-dir", str(tmp_path))
    assert code == 1 and report["ok"] is False
    assert {
        ("a.yaml", 5, "unknown-field"),
        ("a.yaml", 17, "unknown-field"),
        ("a.yaml", 19, "unknown-field"),
        ("a.yaml", 20, "unknown-field"),
        ("a.yaml", 21, "unknown-field"),
        ("b.yaml", 2, "syntax"),
        ("c.json", 3, "syntax"),
    } <= where(report)


def test_the_loader_still_stops_at_the_first_error_and_accepts_the_same(tmp_path):
    from app.policies.directory import collect_policy_set, load_policy_set
    from app.policies.model import PolicyError

    (tmp_path / "a.yaml").write_text(
        POLICY.format(name="a", entries="    - name: x\n      polcy: {}\n      nme: y\n")
    )
    _, errors = collect_policy_set(tmp_path, "ostiary-system")
    assert [e.field for e in errors] == ["spec.repositories[0].nme", "spec.repositories[0].polcy"]
    with pytest.raises(PolicyError) as err:
        load_policy_set(tmp_path, "ostiary-system")
    assert str(err.value) == str(errors[0])


def test_unreachable_entries_are_errors_naming_the_winner(tmp_path):
    (tmp_path / "a.yaml").write_text(
        POLICY.format(
            name="a",
            entries=(
                "    - name: docker.io/library/nginx\n"  # line 7
                "    - name: nginx\n"  # line 8: same normalized pattern, later: never chosen
                "    - name: registry.example.com/team/*\n"
                "      policy: {trust: {enabled: true}}\n"
                "    - name: registry.example.com/team/app*\n"  # more specific: reachable
                "    - name: registry.example.com/*\n"  # less specific, covers more: reachable
                "    - name: quay.io/org/app:1.0\n"  # exact: reachable
                "    - name: quay.io/org/app:1.0*\n"  # covers the exact one only in part; not shadowed by it
            ),
        )
    )
    (tmp_path / "b.yaml").write_text(
        POLICY.format(
            name="b",
            entries=(
                "    - name: registry.example.com/team/*\n"  # line 7: the same as a's, which has trust: never chosen
            ),
        )
    )
    code, report = check_json("--policy-dir", str(tmp_path))
    assert code == 1
    unreachable = [f for f in report["findings"] if f["code"] == "unreachable-entry"]
    assert {(Path(f["file"]).name, f["line"]) for f in unreachable} == {("a.yaml", 8), ("b.yaml", 7)}
    b = next(f for f in unreachable if f["file"].endswith("b.yaml"))
    assert "ClusterImagePolicy a spec.repositories[2]" in b["message"] and "with requirements" in b["message"]


def test_namespaces_are_separate_scopes(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "apiVersion: ostiary.dev/v1\nkind: ImagePolicy\nmetadata: {name: p, namespace: team-a}\n"
        "spec: {repositories: [{name: 'nginx'}]}\n---\n"
        "apiVersion: ostiary.dev/v1\nkind: ImagePolicy\nmetadata: {name: p, namespace: team-b}\n"
        "spec: {repositories: [{name: 'nginx'}]}\n---\n"
        "apiVersion: ostiary.dev/v1\nkind: ClusterImagePolicy\nmetadata: {name: c}\n"
        "spec: {repositories: [{name: 'nginx'}]}\n"
    )
    code, report = check_json("--policy-dir", str(tmp_path))
    assert code == 0, report["findings"]


@pytest.mark.parametrize(
    "inner, outer, expected",
    [
        ("docker.io/library/nginx", "docker.io/library/*", True),
        ("docker.io/library/*", "docker.io/library/nginx", False),
        ("nginx:1.25", "nginx", True),  # any tag covers a tag
        ("nginx", "nginx:*", False),  # a digest-only reference has no tag
        ("nginx:1.2*", "nginx:1.*", True),
        ("nginx:1.*", "nginx:1.2*", False),
        ("*.corp.io/a/*", "*/a/*", True),
        ("*/a/*", "*.corp.io/a/*", False),
        ("r.io/a*b", "r.io/a*", True),
        ("r.io/a*", "r.io/a*b", False),
        ("r.io/a*c*b", "r.io/a*b", True),
    ],
)
def test_glob_inclusion_is_exact(inner, outer, expected):
    assert covers(parse_pattern(outer), parse_pattern(inner)) is expected


def test_a_more_specific_covering_entry_shadows():
    """docker.io/* (all of Docker Hub) is not shadowed by docker.io/library/*; `*` is by nothing;
    a wildcard entry covered by a more specific one that matches all its images is."""
    policy = PolicyResource(
        "ostiary.dev/v1",
        "ClusterImagePolicy",
        "p",
        None,
        {
            "repositories": [
                {"name": "*"},
                {"name": "docker.io/*"},
                {"name": "docker.io/library/*"},
                {"name": "r.io/*x"},
                {"name": "r.io/*-x"},
                {"name": "r.io/a*-x"},
            ]
        },
        "nowhere#0",
    )
    entries, _ = _entries([policy], Locator())
    assert [(a.written, b.written) for a, b in shadowed(entries)] == []
    policy = PolicyResource(
        "ostiary.dev/v1",
        "ClusterImagePolicy",
        "p",
        None,
        {
            "repositories": [
                {"name": "r.io/a*"},
                {"name": "r.io/a**"},
                {"name": "r.io/a*", "policy": {"trust": {"enabled": True}}},
            ]
        },
        "nowhere#0",
    )
    entries, _ = _entries([policy], Locator())
    assert sorted((a.index, b.index) for a, b in shadowed(entries)) == [(0, 2), (1, 2)]


def test_zero_policies_warn_and_fail_only_with_strict(tmp_path):
    (tmp_path / "secret.yaml").write_text("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n")
    result = run("--policy-dir", str(tmp_path))
    assert result.returncode == 0
    assert "warning: no ImagePolicy or ClusterImagePolicy was loaded" in result.stderr
    strict = run("--policy-dir", str(tmp_path), "--strict")
    assert strict.returncode == 1 and "FAIL" in strict.stdout


def test_custom_deny_and_warn_that_are_not_sets_of_strings(tmp_path):
    rego = tmp_path / "rego"
    rego.mkdir()
    (rego / "boolean.rego").write_text(
        "package ostiary.custom.boolean\n\nimport rego.v1\n\n"
        'deny if input.request.namespace == "nowhere"\n'  # line 5: a boolean, even if never true here
    )
    (rego / "numbers.rego").write_text(
        "package ostiary.custom.numbers\n\nimport rego.v1\n\n"
        "warn contains n if { n := count(input.images) }\n"  # line 5: a number, seen by evaluation
        "\ndeny contains 7 if false\n"  # line 7: a literal number, seen in the AST
    )
    (rego / "object.rego").write_text(
        'package ostiary.custom.object\n\nimport rego.v1\n\ndeny["k"] := "v"\n'  # line 5: an object
    )
    (rego / "good.rego").write_text(
        "package ostiary.custom.good\n\nimport rego.v1\n\n"
        'deny contains msg if { some img in input.images; img.ref.tag == "latest"; msg := sprintf("%s", [img.image]) }\n'
        '\nwarn := {"a literal set is a set"}\n'
    )
    code, report = check_json("--policy-dir", str(EXAMPLES / "policies"), "--rego-dir", str(rego))
    assert code == 1
    assert where(report) == {
        ("boolean.rego", 5, "deny-not-a-set"),
        ("numbers.rego", 5, "message-not-a-string"),
        ("numbers.rego", 7, "message-not-a-string"),
        ("object.rego", 5, "deny-not-a-set"),
    }
    assert report["summary"]["compiledInOpa"] is True


def test_compile_errors_and_foreign_packages_are_reported_with_lines(tmp_path):
    rego = tmp_path / "rego"
    rego.mkdir()
    (rego / "bad.rego").write_text(
        "package ostiary.custom.bad\n\nimport rego.v1\n\ndeny contains msg if { msg := undefined_fn(1) }\n"
    )
    (rego / "evil.rego").write_text("# comment\npackage ostiary.main\n\nimport rego.v1\n\nx := 1\n")
    result = run("--policy-dir", str(EXAMPLES / "policies"), "--rego-dir", str(rego))
    assert result.returncode == 1
    assert (
        f"{rego / 'bad.rego'}:5:31: error: undefined function undefined_fn (module ostiary/custom/bad)"
        in result.stderr
    )
    assert f"{rego / 'evil.rego'}:2: error: custom Rego must declare exactly" in result.stderr


def test_evaluation_errors_are_reported(tmp_path):
    rego = tmp_path / "rego"
    rego.mkdir()
    (rego / "conflict.rego").write_text(
        "package ostiary.custom.conflict\n\nimport rego.v1\n\n"
        'level := "a" if input.request.operation == "CREATE"\n\nlevel := "b" if input.request.operation == "CREATE"\n\n'
        'deny contains level if level == "z"\n'
    )
    code, report = check_json("--policy-dir", str(EXAMPLES / "policies"), "--rego-dir", str(rego))
    assert code == 1
    errors = [f for f in report["findings"] if f["code"] == "rego-eval-error"]
    assert errors and errors[0]["file"].endswith("conflict.rego") and errors[0]["line"] in (5, 7)
    assert "conflicting" in errors[0]["message"]


def test_usage_errors_exit_2(tmp_path):
    assert run("--policy-dir", str(tmp_path / "missing")).returncode == 2
    assert run("--policy-dir", str(tmp_path), "-o", "xml").returncode == 2


def test_no_reported_entry_is_ever_selected_by_the_real_opa():
    """Soundness against the library itself: random policies, every image of a small universe asked
    of OPA's plan; an entry `check` calls unreachable is never the one selected."""
    import random
    import time as clock

    from app.opa.client import OpaClient
    from app.opa.process import LocalOpa
    from app.policies.sync import PolicySync, library_modules
    from app.policies.translate import translate

    rng = random.Random(10)
    hosts, paths, tags = (
        ["r.io", "*.io", "r.*", "*"],
        ["a", "a*", "*", "a/b", "a/*", "*b", "*/b"],
        [None, "1", "1*", "*"],
    )
    universe = [
        f"{h}/{p}{t}"
        for h in ("r.io", "x.io")
        for p in ("a", "ab", "a/b", "b", "zz/b", "a/c", "ba")
        for t in (":1", ":12", "", "@sha256:" + "c" * 64, ":2@sha256:" + "d" * 64)
    ]
    opa = LocalOpa().start()
    try:
        sync = PolicySync(OpaClient(opa.url))
        sync.set_base(library_modules())
        reported = selected_total = 0
        for _ in range(40):
            policies = []
            for name in ("p1", "p2"):
                repos = []
                for _ in range(rng.randint(3, 9)):
                    tag = rng.choice(tags)
                    entry: dict = {
                        "name": f"{rng.choice(hosts)}/{rng.choice(paths)}" + (f":{tag}" if tag else "")
                    }
                    if rng.random() < 0.3:
                        entry["policy"] = {"trust": {"enabled": True, "trustServer": "https://n.example"}}
                    repos.append(entry)
                policies.append(
                    PolicyResource(
                        "ostiary.dev/v1",
                        "ClusterImagePolicy",
                        name,
                        None,
                        {"repositories": repos},
                        f"{name}#0",
                    )
                )
            entries, _ = _entries(policies, Locator())
            never = {(a.policy.name, a.index) for a, _ in shadowed(entries)}
            reported += len(never)
            sync.replace_all([translate(p) for p in policies])
            request = review(workload("Pod", pod_spec(*universe)))["request"]
            document = opa_input(read_request(request), input_config("ostiary-system"))
            plan = OpaClient(opa.url).query("ostiary/main/plan", document, clock.monotonic() + 30)
            chosen = {(i["policy"]["name"], i["policy"]["index"]) for i in plan["images"] if i.get("policy")}
            selected_total += len(chosen)
            assert not (chosen & never), (chosen & never, [p.spec for p in policies])
        print(f"{reported} unreachable entries reported, {selected_total} entries selected by OPA")
        assert reported >= 20 and selected_total >= 100  # the property was exercised, not vacuous
    finally:
        opa.stop()
