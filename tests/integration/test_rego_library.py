"""The Rego library's own checks, with the real OPA: every *_test.rego runs, strict compile, fmt."""

from __future__ import annotations

import json
import subprocess

from app.paths import rego_library_dir, rego_testdata_dir


def run(opa_binary, *args):
    return subprocess.run(check=False, args=[opa_binary, *args], capture_output=True, text=True, timeout=300)


def test_opa_test_runs_and_passes_every_rego_test(opa_binary):
    lib = str(rego_library_dir().parent)
    data = rego_testdata_dir()
    assert data is not None, "tests/rego-data is missing"
    result = run(opa_binary, "test", lib, str(data), "--format", "json", "--timeout", "120s")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    outcomes = json.loads(result.stdout)
    assert len(outcomes) >= 20, "the Rego library should carry its tests"
    failed = [o["name"] for o in outcomes if o.get("fail") or o.get("error") or o.get("skip")]
    assert failed == []


def test_rego_library_compiles_strictly(opa_binary):
    result = run(opa_binary, "check", "--strict", str(rego_library_dir().parent))
    assert result.returncode == 0, result.stdout + result.stderr


def test_rego_library_is_opa_fmt_clean(opa_binary):
    result = run(opa_binary, "fmt", "--list", str(rego_library_dir().parent))
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr
