"""The scripts still start: each command-line script answers --help, and the benchmark's load and
report path (scripts/loadgen.py, scripts/harness.py, run_load, the table) runs against its two floors,
a real gunicorn + Flask app and the real OPA, with every answer's verdict checked.

The soak's own run (the real world and `ostiary serve`) is in tests/world/test_soak_script.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from scripts import bench_admit, harness
from scripts.harness import Server, free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
# Not command lines with --help: modules (harness, bench_profile), the load process (reads a spec on
# stdin) and make_keyless_example.py (runs at once and rewrites examples/).
NO_HELP = {"harness.py", "bench_profile.py", "loadgen.py", "make_keyless_example.py"}


@pytest.mark.parametrize("script", sorted(p.name for p in SCRIPTS.glob("*.py") if p.name not in NO_HELP))
def test_each_script_answers_help(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{script} --help: rc={done.returncode}\n{done.stderr[-2000:]}"
    assert "usage:" in done.stdout, done.stdout[:500]


def _bodies(allowed: bool) -> bench_admit.Bodies:
    images = [f"registry.example.com/team/app{i}:v1" for i in range(3)]
    return [(harness.review("Deployment", ns, images), allowed) for ns in bench_admit.NAMESPACES]


def test_the_bench_load_and_table_run_against_the_flask_floor_and_count_wrong_verdicts(
    tmp_path: Path,
) -> None:
    port = free_port()
    argv = [
        sys.executable,
        str(SCRIPTS / "bench_floor_app.py"),
        "--listen",
        f"127.0.0.1:{port}",
        "--threads",
        "2",
    ]
    flask = Server("floor-flask", argv, f"http://127.0.0.1:{port}/readyz", port, tmp_path)
    try:
        floor = bench_admit.run_load(
            flask, "floor-flask-deploy", "deploy", _bodies(True), 2, duration=0.5, warmup=0.1
        )
        # the floor allows everything: bodies expected denied are each a wrong verdict
        wrong = bench_admit.run_load(
            flask, "warm-deploy", "deploy", _bodies(False), 1, duration=0.3, warmup=0.1
        )
        once = bench_admit.run_load(
            flask, "cold-deploy", "deploy", _bodies(True), 2, duration=0, warmup=0, once=True
        )
    finally:
        flask.close()
    assert flask.proc.poll() is not None, "the floor app was not stopped"
    assert floor.n > 0 and floor.errors == {}, (floor.errors, floor.examples)
    assert floor.latencies_ms["p50"] > 0 and floor.throughput > 0 and floor.cpu_ms_server > 0
    assert {p["name"] for p in floor.rss}, "no process figures"
    assert wrong.n == 0 and wrong.errors.get("wrong", 0) > 0, wrong.errors
    assert "expected False" in wrong.examples[0]
    assert once.n == len(_bodies(True)) and once.errors == {}
    table = bench_admit.table([floor, wrong, once]).splitlines()
    assert table[0].startswith("| scenario | c | n | adm/s |") and len(table) == 5
    assert "| warm-deploy | 1 | 0 |" in table[3]


def test_the_opa_floor_answers_the_input_the_harness_builds(tmp_path: Path, opa_binary: str) -> None:
    port = free_port()
    argv = [opa_binary, "run", "--server", "--skip-version-check", "--addr", f"127.0.0.1:{port}"]
    opa = Server("floor-opa", argv, f"http://127.0.0.1:{port}/health", port, tmp_path)
    try:
        requests.put(
            f"http://127.0.0.1:{port}/v1/policies/floor",
            timeout=5,
            data='package floor\n\nresult := {"allowed": true, "images": count(input.images)}\n',
        ).raise_for_status()
        bodies = [(harness.opa_input(b), w) for b, w in _bodies(True)]
        assert [len(b["input"]["images"]) for b, _ in bodies] == [3, 3, 3]
        r = bench_admit.run_load(
            opa,
            "floor-opa-deploy",
            "deploy",
            bodies,
            2,
            duration=0.5,
            warmup=0.1,
            path="/v1/data/floor/result",
        )
    finally:
        opa.close()
    assert r.n > 0 and r.errors == {}, (r.errors, r.examples)
    assert r.cpu_ms_opa > 0, "OPA's CPU is counted as OPA's"
