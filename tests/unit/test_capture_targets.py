"""What `ostiary trust capture` records and how it judges it (pure: no server)."""

from __future__ import annotations

import io
import json

import pytest

from app.offline.capture import CaptureResult, earliest_expiry, validity_summary
from app.offline.capture_targets import TargetError, images_to_capture, split_trust_servers


def test_trust_server_for_all_and_per_registry_host():
    assert split_trust_servers([]) == (None, {})
    assert split_trust_servers(["https://notary.example"]) == ("https://notary.example", {})
    assert split_trust_servers(["reg.example:5000=https://n1:4443", "https://n2"]) == (
        "https://n2",
        {"reg.example:5000": "https://n1:4443"},
    )
    with pytest.raises(TargetError, match="two servers for registry a"):
        split_trust_servers(["a=https://x", "a=https://y"])
    with pytest.raises(TargetError, match="one URL for every image"):
        split_trust_servers(["https://x", "https://y"])
    with pytest.raises(TargetError, match="HOST=URL"):
        split_trust_servers(["=https://x"])


def test_images_come_from_manifests_in_reading_order_each_once(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"
        "spec: {template: {spec: {initContainers: [{name: i, image: 'busybox:1'}],"
        " containers: [{name: c, image: 'nginx:1.25'}, {name: s, image: 'busybox:1'}]}}}\n"
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: redis}]}\n"
    )
    got = images_to_capture(["nginx:1.25"], [str(tmp_path)])
    assert got == ["nginx:1.25", "busybox:1", "redis"]


def test_manifests_from_stdin_and_mistakes_named(tmp_path):
    pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: alpine}]}\n"
    assert images_to_capture([], ["-"], io.StringIO(pod)) == ["alpine"]
    with pytest.raises(TargetError, match="no such file"):
        images_to_capture([], [str(tmp_path / "missing.yaml")])
    (tmp_path / "bad.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: 3}\n"
    )
    with pytest.raises(TargetError, match="bad.yaml"):
        images_to_capture([], [str(tmp_path / "bad.yaml")])
    (tmp_path / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    with pytest.raises(TargetError, match="reference no image"):
        images_to_capture([], [str(tmp_path / "cm.yaml")])
    with pytest.raises(TargetError, match="nothing to capture"):
        images_to_capture([], [])


def role(expires: str) -> bytes:
    return json.dumps({"signed": {"expires": expires}}).encode()


def test_earliest_expiry_and_the_capture_validity():
    served = {
        "root": role("2030-01-01T00:00:00Z"),
        "timestamp": role("2026-12-21T10:00:00.123456789+01:00"),
        "targets": b"not json",
    }
    assert earliest_expiry(served) == ("2026-12-21T09:00:00Z", "timestamp")
    assert earliest_expiry({"targets": b"{}"}) is None
    a = CaptureResult(
        "a", "https://n", "g/a", roles=["root"], valid_until="2027-01-01T00:00:00Z", expires_first="targets"
    )
    b = CaptureResult(
        "b", "https://n", "g/b", roles=["root"], valid_until="2026-12-21T09:00:00Z", expires_first="timestamp"
    )
    summary = validity_summary([a, b])
    assert summary is not None and summary.startswith(
        "the capture verifies until 2026-12-21T09:00:00Z (timestamp of g/b"
    )
    assert validity_summary([CaptureResult("c", "https://n", "g/c", error="down")]) is None


def test_only_unsigned_images_are_negative_fixtures_a_failure_to_verify_fails_the_run():
    no_trust = CaptureResult("a", "https://n", "g/a", not_served=["root"], verified="not signed")
    assert no_trust.unsigned and no_trust.ok and "has no trust data" in no_trust.describe()
    tag = CaptureResult(
        "b", "https://n", "g/b", roles=["root"], verified="tag v1 is not signed", tag_not_signed=True
    )
    assert tag.unsigned and tag.ok and "verifies but tag v1 is not signed" in tag.describe()
    bad = CaptureResult("c", "https://n", "g/c", roles=["root"], verified="timestamp: signature invalid")
    assert not bad.unsigned and not bad.ok and "does NOT verify now" in bad.describe()
    down = CaptureResult("d", "https://n", "g/d", not_served=["root"], error="connection refused")
    assert not down.unsigned and not down.ok
