"""`ostiary trust inspect` as a person runs it, against the real notary-server of the test world."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.world

OSTIARY = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "ostiary")


def inspect(world, image, *extra):
    return subprocess.run(
        [
            OSTIARY,
            "trust",
            "inspect",
            image,
            "--trust-server",
            world.notary_url,
            "--ca-file",
            world.ca_file,
            *extra,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_signed_tag_prints_verified_facts(world):
    img = world["signed"]
    result = inspect(world, img.reference)
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["verified"] is True and facts["gun"] == img.gun
    assert facts["targets"][img.tag]["released"] == img.digest


def test_unsigned_tag_exits_non_zero_and_says_why(world):
    result = inspect(world, world["unsigned"].reference)
    assert result.returncode == 1
    assert "not signed" in result.stderr


def test_signer_key_is_checked(world, tmp_path):
    img = world["signer-pem"]
    alice, mallory = tmp_path / "alice.pem", tmp_path / "mallory.pem"
    alice.write_text(world.alice_pem)
    mallory.write_text(world.mallory_pem)
    assert inspect(world, img.reference, "--signer", f"alice={alice}").returncode == 0
    wrong = inspect(world, img.reference, "--signer", f"alice={mallory}")
    assert wrong.returncode == 1 and "alice" in wrong.stderr


def test_without_a_ca_the_server_is_not_trusted(world):
    result = subprocess.run(
        check=False,
        args=[OSTIARY, "trust", "inspect", world["signed"].reference, "--trust-server", world.notary_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert json.loads(result.stdout)["verified"] is False
