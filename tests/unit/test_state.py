"""The file record store (app/notary/state.py): durable, atomic, and safe under concurrent writers.

Concurrency is tested with real processes (multiprocessing, fork): flock and rename are what keep
two Ostiary processes from corrupting or regressing a record, so threads alone would prove little.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from app.notary.state import (
    FileRecordStore,
    StateError,
    TrustRecord,
    default_state_dir,
    record_name,
)

SERVER = "https://notary.example.com"
GUN = "registry.example.com/team/app"


def record(
    root: bytes = b'{"signed": "root-a"}', versions: dict | None = None, by: str = "test"
) -> TrustRecord:
    return TrustRecord(
        server=SERVER,
        gun=GUN,
        root=root,
        root_keyids=("aa" * 32,),
        versions=versions or {"root": 1},
        first_seen_at="2026-01-01T00:00:00Z",
        first_seen_by=by,
        updated_at="2026-01-01T00:00:00Z",
        updated_by=by,
    )


def test_a_record_survives_a_new_store_object(tmp_path: Path) -> None:
    FileRecordStore(tmp_path).ensure().update(
        SERVER, GUN, lambda current: record(versions={"root": 2, "targets": 7})
    )
    again = FileRecordStore(tmp_path).get(SERVER, GUN)
    assert again == record(versions={"root": 2, "targets": 7})
    assert again.root_digest.startswith("sha256:") and again.root_version == 2
    assert FileRecordStore(tmp_path).get(SERVER, "registry.example.com/other") is None
    assert [r.gun for r in FileRecordStore(tmp_path).records()] == [GUN]


def test_file_is_private_and_no_temp_files_are_left(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path).ensure()
    for version in range(5):
        store.update(SERVER, GUN, lambda current, v=version: record(versions={"root": 1, "targets": v}))
    files = sorted(p.name for p in (tmp_path / "records").iterdir())
    assert files == [f"{record_name(SERVER, GUN)}.json", f"{record_name(SERVER, GUN)}.lock"]
    assert (tmp_path / "records").stat().st_mode & 0o077 == 0


def test_versions_only_go_up() -> None:
    base = record(versions={"root": 2, "timestamp": 10, "targets": 3})
    merged = base.with_versions({"timestamp": 4, "targets": 9, "targets/releases": 1}, "b", "later")
    assert merged.versions == {"root": 2, "timestamp": 10, "targets": 9, "targets/releases": 1}
    assert merged.updated_by == "b"
    assert base.with_versions({"timestamp": 1}, "b", "later") is base  # nothing higher: unchanged


def test_change_may_refuse_and_nothing_is_written(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    store.update(SERVER, GUN, lambda current: record())

    def refuse(current):
        raise StateError("no")

    with pytest.raises(StateError):
        store.update(SERVER, GUN, refuse)
    assert store.get(SERVER, GUN) == record()


def test_delete_and_corrupt_records_fail_closed(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    store.update(SERVER, GUN, lambda current: record())
    path = tmp_path / "records" / f"{record_name(SERVER, GUN)}.json"
    path.write_text("{ half a record")
    with pytest.raises(StateError, match="unreadable.*trust unpin"):
        store.get(SERVER, GUN)
    data = record().to_json()
    data["root"] = "cm9vdC1i"  # base64 of another root: the digest no longer matches
    path.write_text(json.dumps(data))
    with pytest.raises(StateError, match="rootDigest"):
        store.get(SERVER, GUN)
    assert store.delete(SERVER, GUN) is True
    assert store.get(SERVER, GUN) is None and store.delete(SERVER, GUN) is False


def test_unusable_directory_is_refused_at_start(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateError, match="cannot use state directory"):
        FileRecordStore(blocker / "state").ensure()


def test_default_state_dir_follows_xdg(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "ostiary"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_state_dir() == tmp_path / "home" / ".local" / "state" / "ostiary"


# -- concurrent writers: real processes --------------------------------------------------------------


def _raise_versions(directory: str, worker: int, rounds: int, start, out) -> None:
    store = FileRecordStore(directory, lock_timeout=30)
    start.wait()
    for n in range(rounds):
        version = n * 10 + worker  # interleaved across workers; the maximum is known

        def change(current, version=version, n=n):
            if current is None:
                return record(versions={"root": 1, "timestamp": version}, by=f"w{worker}")
            return current.with_versions({"timestamp": version, f"w{worker}": n}, f"w{worker}", "t")

        store.update(SERVER, GUN, change)
    out.put(worker)


def _create_if_absent(directory: str, worker: int, start, out) -> None:
    store = FileRecordStore(directory, lock_timeout=30)
    mine = f'{{"signed": "root-of-worker-{worker}"}}'.encode()
    start.wait()
    stored = store.update(SERVER, GUN, lambda current: current or record(root=mine, by=f"w{worker}"))
    out.put((worker, stored.root))


def _reader(directory: str, stop, out) -> None:
    store = FileRecordStore(directory)
    reads, errors = 0, []
    while not stop.is_set():
        try:
            store.get(SERVER, GUN)
            reads += 1
        except StateError as exc:  # a torn or half-written file would show here
            errors.append(str(exc))
    out.put((reads, errors))


def test_concurrent_writers_never_corrupt_or_regress(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    start, stop, out, reads = ctx.Event(), ctx.Event(), ctx.Queue(), ctx.Queue()
    workers, rounds = 4, 40
    procs = [
        ctx.Process(target=_raise_versions, args=(str(tmp_path), w, rounds, start, out))
        for w in range(workers)
    ]
    reader = ctx.Process(target=_reader, args=(str(tmp_path), stop, reads))
    for p in [*procs, reader]:
        p.start()
    start.set()
    done = sorted(out.get(timeout=120) for _ in procs)
    stop.set()
    read_count, read_errors = reads.get(timeout=30)
    for p in [*procs, reader]:
        p.join(timeout=30)
    assert done == list(range(workers))
    final = FileRecordStore(tmp_path).get(SERVER, GUN)
    assert final.versions["timestamp"] == (rounds - 1) * 10 + (workers - 1)
    for w in range(workers):
        # every worker's own counter ends at its last round: no write of another worker lowered it
        assert final.versions[f"w{w}"] == rounds - 1
    assert read_errors == [] and read_count > 0
    leftovers = [p.name for p in (tmp_path / "records").iterdir() if p.suffix == ".tmp"]
    assert leftovers == []


def test_concurrent_first_use_creates_one_record(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_create_if_absent, args=(str(tmp_path), w, start, out)) for w in range(6)]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    roots = {root for _, root in results}
    assert len(roots) == 1, f"two processes saw different roots: {results}"
    assert FileRecordStore(tmp_path).get(SERVER, GUN).root in roots
    assert len([n for n in os.listdir(tmp_path / "records") if n.endswith(".json")]) == 1


def test_serve_refuses_an_unusable_state_dir_at_start(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from app.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    policies = tmp_path / "policies"
    policies.mkdir()
    result = CliRunner().invoke(
        main, ["serve", "--policy-dir", str(policies), "--state-dir", str(blocker / "state")]
    )
    assert result.exit_code == 2
    assert "--state-dir: cannot use state directory" in result.output


def test_serve_without_a_state_dir_and_no_writable_home_names_the_flag_and_the_chart_value(
    monkeypatch, tmp_path: Path
) -> None:
    """The image's user has no home and the chart's root filesystem is read-only: the default state
    directory cannot be made. The start fails with what to do, not with a silent temporary folder."""
    from click.testing import CliRunner

    from app.cli import main

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(blocker / "nonexistent"))
    policies = tmp_path / "policies"
    policies.mkdir()
    result = CliRunner().invoke(main, ["serve", "--policy-dir", str(policies)])
    assert result.exit_code == 2
    assert "cannot use state directory" in result.output
    assert "give --state-dir DIR" in result.output and "value stateVolume" in result.output


def test_trust_pins_lists_and_unpin_removes(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from app.cli import main

    store = FileRecordStore(tmp_path)
    store.update(SERVER, GUN, lambda current: record(versions={"root": 2, "targets": 5}, by="host-a pid 7"))
    runner = CliRunner()
    listed = runner.invoke(main, ["trust", "pins", "--state-dir", str(tmp_path)])
    assert listed.exit_code == 0
    assert f"{GUN}  ({SERVER})" in listed.output and "root=2 targets=5" in listed.output
    assert "by host-a pid 7 (first-use)" in listed.output
    as_json = json.loads(
        runner.invoke(main, ["trust", "pins", "--state-dir", str(tmp_path), "--json"]).output
    )
    assert as_json[0]["rootKeyIDs"] == ["aa" * 32] and as_json[0]["versions"] == {"root": 2, "targets": 5}
    image = f"{GUN}:v1"
    removed = runner.invoke(
        main, ["trust", "unpin", image, "--trust-server", SERVER, "--state-dir", str(tmp_path)]
    )
    assert removed.exit_code == 0 and store.get(SERVER, GUN) is None
    again = runner.invoke(
        main, ["trust", "unpin", image, "--trust-server", SERVER, "--state-dir", str(tmp_path)]
    )
    assert again.exit_code == 1 and "no trust record" in again.output


def test_serve_refuses_a_bad_root_pins_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from app.cli import main

    pins = tmp_path / "pins.yaml"
    pins.write_text("https://notary.example.com:\n  publicKeys: not a pem\n")
    policies = tmp_path / "policies"
    policies.mkdir()
    result = CliRunner().invoke(
        main,
        [
            "serve",
            "--policy-dir",
            str(policies),
            "--state-dir",
            str(tmp_path / "s"),
            "--root-pins",
            str(pins),
        ],
    )
    assert result.exit_code == 2 and "--root-pins:" in result.output and "holds neither" in result.output
