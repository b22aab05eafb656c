"""Fixtures of the real-node suite: one node per session (tests/node/cluster.py), a notary-server and
registry the pods can reach (on the node's bridge), and runnable signed and unsigned images.

A missing binary or image fails with the command that makes it; nothing skips.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from tests.e2e.cluster import REPO, tool
from tests.node.cluster import Node, host_snapshot, image_archive, image_name
from tests.support.world import NotaryWorld

CHART = REPO / "helm" / "ostiary"


def pause_binary() -> bytes:
    """The static pause binary out of the pause image's archive: the workload the tests run."""
    with tarfile.open(image_archive("pause")) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=io.BytesIO(archive.extractfile(layer).read())) as tar:  # type: ignore[union-attr]
                for member in tar.getmembers():
                    if member.isfile() and member.name.lstrip("./") == "pause":
                        return tar.extractfile(member).read()  # type: ignore[union-attr]
    raise RuntimeError(f"no /pause in {image_archive('pause')}")


@dataclass
class NodeImages:
    signed: str  # registry/repo:tag, signed into targets
    signed_digest: str
    unsigned: str  # pushed, never signed (the repository has trust data for another tag)
    other_signed: str  # a second signed repository (cold trust cache figures)
    other_digest: str


@pytest.fixture(scope="session")
def host_before() -> dict:
    return host_snapshot()


@pytest.fixture(scope="session")
def node(tmp_path_factory, host_before) -> Node:
    the_node = Node(tmp_path_factory.mktemp("node"))
    try:
        the_node.start()
        print(f"\nnode Ready in {the_node.startup_seconds:.1f}s at {the_node.url}")
        yield the_node
    finally:
        the_node.stop()


@pytest.fixture(scope="session")
def node_world(node) -> NotaryWorld:
    world = NotaryWorld(host=node.bridge_ip)
    world.start()
    try:
        node.add_registry(world.registry_host)
        yield world
    finally:
        world.stop()


@pytest.fixture(scope="session")
def node_images(node_world) -> NodeImages:
    pause = pause_binary()
    files = {"pause": (pause, 0o755)}
    signed = node_world.push_files(
        "node/app", "v1", files, cmd=["/pause"], labels={"io.ostiary.test": "signed"}
    )
    node_world.sign("node/app", "v1", signed.digest, signed.size)
    node_world.push_files("node/app", "v2", files, cmd=["/pause"], labels={"io.ostiary.test": "unsigned"})
    other = node_world.push_files(
        "node/other", "v1", files, cmd=["/pause"], labels={"io.ostiary.test": "other"}
    )
    node_world.sign("node/other", "v1", other.digest, other.size)
    return NodeImages(
        signed=node_world.image_ref("node/app", "v1"),
        signed_digest=signed.digest,
        unsigned=node_world.image_ref("node/app", "v2"),
        other_signed=node_world.image_ref("node/other", "v1"),
        other_digest=other.digest,
    )


def image_values() -> list[str]:
    """Only the image names change from the chart's defaults: the images built from this repository."""
    values = []
    for key, name in (("image", "ostiary"), ("opa.image", "opa"), ("uninstallHook.image", "kubectl")):
        repository, tag = image_name(name).rsplit(":", 1)
        values += ["--set", f"{key}.repository={repository}", "--set", f"{key}.tag={tag}"]
    return values


def helm(node: Node, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [tool("helm"), "--kubeconfig", str(node.kubeconfig()), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        namespace = args[args.index("-n") + 1] if "-n" in args else "default"
        raise AssertionError(
            f"helm {' '.join(args)} (rc={done.returncode}):\n{done.stdout}\n{done.stderr}\n{node.describe(namespace)}"
        )
    return done
