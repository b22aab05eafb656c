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


def exported_metric_names() -> set[str]:
    """Every metric family `ostiary serve` exports (the real Metrics and TrustService, wired as serve
    wires them), without the _created series; histograms by their family name."""
    from prometheus_client import generate_latest

    from app.metrics import Metrics
    from app.notary.service import TrustService
    from app.signatures.cache import SignatureCache
    from app.signatures.service import SignatureService

    metrics, trust, signatures = Metrics(), TrustService(), SignatureService([])
    metrics.watch_trust(trust.stats)
    metrics.watch_signatures(lambda: {("cosign", "verified"): 0})  # a family shows once it has a series
    metrics.watch_signature_cache(SignatureCache().stats)
    trust.close()
    signatures.close()
    return {
        line.split()[2]
        for line in generate_latest(metrics.registry).decode().splitlines()
        if line.startswith("# TYPE ") and not line.split()[2].endswith("_created")
    }


def registered_webhooks(objects: list[dict], kind: str) -> dict | None:
    """The webhook configuration of `kind` as the API server ends up holding it: the release object
    itself (registration.mode=immediate), or, by default, the release object (created without
    webhooks) with the webhooks the register hook applies from its ConfigMap."""
    found = [o for o in objects if o["kind"] == kind and not _is_hook(o)]
    if not found:
        return None
    [config] = found
    if config.get("webhooks"):
        return config
    [source] = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-register")
    ]
    key = "mutating.yaml" if kind == "MutatingWebhookConfiguration" else "validating.yaml"
    applied = yaml.safe_load(source["data"][key])
    assert applied["kind"] == kind and applied["metadata"]["name"] == config["metadata"]["name"]
    return {**config, "webhooks": applied["webhooks"]}


def _is_hook(obj: dict) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


def hooks(objects: list[dict], event: str) -> list[dict]:
    """The objects Helm creates for a hook event (post-install, pre-delete, test, ...)."""
    return [
        o
        for o in objects
        if event in (o["metadata"].get("annotations") or {}).get("helm.sh/hook", "").split(",")
    ]
