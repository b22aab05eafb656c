"""Looking into the container images scripts/build-images.sh built (podman's storage and the
docker-archives tests/node/cluster.py finds); a missing image fails with the command that builds it."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Iterator

from tests.e2e.cluster import REPO
from tests.node.cluster import NodeError, image_archive, image_name

NAMES = ("ostiary", "opa", "pause", "kubectl")


def podman_env() -> dict[str, str]:
    """podman as the build script runs it: scripts/containers.conf unless CONTAINERS_CONF is set."""
    return {
        **os.environ,
        "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(REPO / "scripts" / "containers.conf")),
    }


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args], env=podman_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def built_images() -> dict[str, str]:
    """name -> reference of each image, with its archive, and present in podman's storage too."""
    refs = {}
    for name in NAMES:
        refs[name] = image_name(name)
        image_archive(name)
        if podman("image", "exists", refs[name], check=False).returncode != 0:
            raise NodeError(f"{refs[name]} is not in podman's storage: run `scripts/build-images.sh`")
    return refs


def image_config(ref: str) -> dict:
    return json.loads(podman("image", "inspect", ref).stdout)[0]


def archive_manifest(name: str) -> dict:
    with tarfile.open(image_archive(name)) as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        return json.load(member)[0]


def archive_layers(name: str) -> Iterator[tuple[str, tarfile.TarFile]]:
    """Each layer of the docker-archive NAME.tar, as an open tar (every file the image ever held,
    including those a later layer deletes)."""
    with tarfile.open(image_archive(name)) as outer:
        for layer in archive_manifest(name)["Layers"]:
            blob = outer.extractfile(layer)
            assert blob is not None
            with tarfile.open(fileobj=blob) as inner:
                yield layer, inner
