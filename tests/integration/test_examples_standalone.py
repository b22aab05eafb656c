"""The examples stand alone: a copy of examples/ (nothing else of the repository beside it) passes
its declarative and Rego tests, so a team can start from the folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OSTIARY = str(Path(sys.executable).parent / "ostiary")


def test_a_copy_of_the_examples_folder_passes_its_tests(tmp_path):
    copy = tmp_path / "elsewhere" / "examples"
    shutil.copytree(ROOT / "examples", copy)
    result = subprocess.run(
        [OSTIARY, "test", "--rego-dir", "custom-rules/rego", "."],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "FAIL" not in result.stdout
    assert result.stdout.count("PASS") >= 20, result.stdout[-2000:]


def test_no_example_reaches_outside_the_examples_folder():
    for path in (ROOT / "examples").rglob("*"):
        if path.suffix in {".yaml", ".yml", ".rego", ".json"} and path.is_file():
            text = path.read_text(errors="replace")
            for line in text.splitlines():
                if line.lstrip().startswith("#"):
                    continue  # a comment may say where a fixture came from
                assert "../../../" not in line and "/shared/" not in line, f"{path}: {line.strip()}"
