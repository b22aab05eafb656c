"""Rendering the chart with the real helm binary (no API server), for the chart's tests."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import yaml

from tests.e2e.cluster import REPO, tool

CHART = str(REPO / "helm" / "ostiary")
NAMESPACE = "ostiary-system"


def render(*sets: str, values: dict | None = None) -> subprocess.CompletedProcess[str]:
    """`helm template t CHART` with --set for each of `sets` and `values` as a values file."""
    argv = [tool("helm"), "template", "t", CHART, "--namespace", NAMESPACE]
    for value in sets:
        argv += ["--set", value]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        if values is not None:
            json.dump(values, file)
            file.flush()
            argv += ["--values", file.name]
        return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)


def rendered_objects(*sets: str, values: dict | None = None) -> list[dict]:
    done = render(*sets, values=values)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def refusal(*sets: str, values: dict | None = None) -> str:
    """The error helm prints for values the chart must refuse (fails the test if it renders)."""
    done = render(*sets, values=values)
    assert done.returncode != 0, f"rendered, but should have been refused: {sets} {values}"
    return done.stderr


def only(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, (
        f"{len(found)} {kind} {name or ''} in {[(o['kind'], o['metadata']['name']) for o in objects]}"
    )
    return found[0]


def kinds(objects: list[dict]) -> set[str]:
    return {o["kind"] for o in objects}


def containers(objects: list[dict]) -> dict[str, dict]:
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    return {c["name"]: c for c in pod["containers"]}


def mount_like_the_kubelet(
    folder: Path, files: dict[str, str], stamp: str = "..2026_12_03_14_00_00.1"
) -> None:
    """A ConfigMap or Secret volume as the kubelet's atomic writer lays it out: the real files in
    `..<timestamp>/`, `..data` linking to it, and each key a link `name -> ..data/name`."""
    real = folder / stamp
    real.mkdir(parents=True)
    for name, text in files.items():
        (real / name).write_text(text)
    os.symlink(stamp, folder / "..data")
    for name in files:
        os.symlink(f"..data/{name}", folder / name)
