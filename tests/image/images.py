"""The container images scripts/build-images.sh built (podman storage and docker-archives in
.tools/images), for the image tests and anything that runs them. A missing image fails with the
command that builds it, never skips."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

from tests.e2e.cluster import REPO

IMAGES_DIR = Path(os.environ.get("OSTIARY_TOOLS_DIR", REPO / ".tools")) / "images"
BUILD = "scripts/build-images.sh (scripts/setup.sh runs it)"
NAMES = ("ostiary", "opa", "pause", "kubectl")


class ImageMissing(Exception):
    pass


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
    """name -> reference of each image, checked present in podman and in its archive (the same image)."""
    env_file = IMAGES_DIR / "images.env"
    if not env_file.is_file():
        raise ImageMissing(f"no {env_file}: run {BUILD}")
    refs = {}
    for line in env_file.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.endswith("_IMAGE"):
            refs[key[: -len("_IMAGE")].lower()] = value
    for name in NAMES:
        if name not in refs:
            raise ImageMissing(f"no {name} image in {env_file}: run {BUILD}")
        if podman("image", "exists", refs[name], check=False).returncode != 0:
            raise ImageMissing(f"{refs[name]} is not in podman's storage: run {BUILD}")
        if not (IMAGES_DIR / f"{name}.tar").is_file():
            raise ImageMissing(f"no {IMAGES_DIR / name}.tar: run {BUILD}")
    return refs


def image_config(ref: str) -> dict:
    return json.loads(podman("image", "inspect", ref).stdout)[0]


def archive_manifest(name: str) -> dict:
    with tarfile.open(IMAGES_DIR / f"{name}.tar") as tar:
        member = tar.extractfile("manifest.json")
        assert member is not None
        return json.load(member)[0]


def archive_layers(name: str) -> Iterator[tuple[str, tarfile.TarFile]]:
    """Each layer of the docker-archive NAME.tar, as an open tar (every file the image ever held,
    including those a later layer deletes)."""
    with tarfile.open(IMAGES_DIR / f"{name}.tar") as outer:
        for layer in archive_manifest(name)["Layers"]:
            blob = outer.extractfile(layer)
            assert blob is not None
            with tarfile.open(fileobj=blob) as inner:
                yield layer, inner
