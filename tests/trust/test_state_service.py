"""TrustService with a durable record store (app/notary/state.py), over HTTPS from the TLS test
server serving forged trust data: restarts (a new service on the same directory), re-keys, corrupt
records, two services racing to record different roots, and pinned entries leaving no record."""

from __future__ import annotations

import time

from app.images import parse_image
from app.notary.pins import root_pin
from app.notary.service import TrustRequest, TrustService
from app.notary.settings import TrustSettings
from app.notary.state import FileRecordStore, record_name
from tests.trust.forge import GUN, NOW, ForgedRepo, x509_key
from tests.trust.https_server import NotaryTestServer


def service_on(directory, pki) -> TrustService:
    return TrustService(
        TrustSettings(cache_entries=0),
        ca_file=pki.ca_file,
        clock=lambda: NOW,
        records=FileRecordStore(directory).ensure(),
    )


def publish(server: NotaryTestServer, repo: ForgedRepo) -> None:
    server.knobs.overrides = {(GUN, role): data for role, data in repo.build().items()}


def gather(service: TrustService, server: NotaryTestServer, **kwargs) -> dict:
    [facts] = service.gather(
        [TrustRequest(parse_image(f"{GUN}:latest"), server.url, **kwargs)], time.monotonic() + 10
    )
    return facts


def test_first_use_is_recorded_and_survives_a_restart(notary_server, pki, tmp_path) -> None:
    original = ForgedRepo(versions={"targets": 4, "timestamp": 9})
    publish(notary_server, original)
    first = service_on(tmp_path, pki)
    facts = gather(first, notary_server)
    assert facts["verified"] is True and facts["root_trust"] == "first-use"
    record = FileRecordStore(tmp_path).get(notary_server.url, GUN)
    assert record.versions["targets"] == 4 and record.versions["timestamp"] == 9
    assert record.root_keyids == (original.role_keys["root"][0].keyid,)
    assert first.stats()["roots_first_use"] == 1

    restarted = service_on(tmp_path, pki)
    assert gather(restarted, notary_server)["root_trust"] == "recorded"
    assert restarted.stats()["roots_recorded"] == 1

    publish(notary_server, ForgedRepo())  # re-initialised: new root keys, versions back to 1
    denied = gather(service_on(tmp_path, pki), notary_server)
    assert denied["verified"] is False and denied["error_role"] == "root"
    assert f"the root of {GUN} served by {notary_server.url} is not the recorded root" in denied["error"]
    assert f"ostiary trust unpin {GUN}" in denied["error"]

    # same root, older targets: a rollback, refused after the restart
    publish(notary_server, ForgedRepo(role_keys=original.role_keys, versions={"targets": 3, "timestamp": 10}))
    rolled = gather(service_on(tmp_path, pki), notary_server)
    assert rolled["verified"] is False and rolled["error_role"] == "targets"
    assert "lower than seen version 4" in rolled["error"] and GUN in rolled["error"]

    assert FileRecordStore(tmp_path).delete(notary_server.url, GUN)  # the operator accepts the re-key
    publish(notary_server, ForgedRepo())
    assert gather(service_on(tmp_path, pki), notary_server)["root_trust"] == "first-use"


def test_a_corrupt_record_denies(notary_server, pki, tmp_path) -> None:
    publish(notary_server, ForgedRepo())
    service = service_on(tmp_path, pki)
    assert gather(service, notary_server)["verified"] is True
    (tmp_path / "records" / f"{record_name(notary_server.url, GUN)}.json").write_text("garbage")
    facts = gather(service_on(tmp_path, pki), notary_server)
    assert facts["verified"] is False and "unreadable" in facts["error"] and GUN in facts["error"]


def test_a_root_recorded_meanwhile_by_another_process_wins(notary_server, pki, tmp_path) -> None:
    """Two processes, first use at once, the server answering each with another root: the one
    recorded first stays, the other process's admission is denied (no two roots for one GUN)."""
    mine, theirs = ForgedRepo(), ForgedRepo()
    publish(notary_server, mine)
    service = service_on(tmp_path, pki)
    store = FileRecordStore(tmp_path)
    original_get = store.get

    # Simulate the race: the other process records its root after this service read "no record".
    other = service_on(tmp_path, pki)

    def record_theirs_after_read(server, gun):
        found = original_get(server, gun)
        if found is None:
            publish(notary_server, theirs)
            assert gather(other, notary_server)["verified"] is True
            publish(notary_server, mine)
        return found

    service.records.get = record_theirs_after_read  # type: ignore[method-assign]
    facts = gather(service, notary_server)
    assert facts["verified"] is False and "not the recorded root" in facts["error"]
    assert store.get(notary_server.url, GUN).root_keyids == (theirs.role_keys["root"][0].keyid,)


def test_a_rotation_recorded_by_another_process_is_kept(notary_server, pki, tmp_path) -> None:
    original = ForgedRepo()
    new_key = x509_key(GUN, now=NOW)
    rotated = ForgedRepo(
        role_keys={**original.role_keys, "root": [new_key]},
        versions={"root": 2},
        signers={"root": original.role_keys["root"] + [new_key]},
    )
    publish(notary_server, original)
    assert gather(service_on(tmp_path, pki), notary_server)["verified"] is True
    slow = service_on(tmp_path, pki)
    original_get = slow.records.get

    calls = []

    def rotate_after_read(server, gun):
        found = original_get(server, gun)
        calls.append(gun)
        if len(calls) > 1:  # the read under the lock, before writing: no more meddling
            return found
        publish(notary_server, rotated)
        nested = gather(service_on(tmp_path, pki), notary_server)
        assert nested["verified"] is True, nested["error"]
        publish(notary_server, original)
        return found

    slow.records.get = rotate_after_read  # type: ignore[method-assign]
    assert gather(slow, notary_server)["verified"] is True  # its (older) root is an ancestor of the record
    record = FileRecordStore(tmp_path).get(notary_server.url, GUN)
    assert record.root_keyids == (new_key.keyid,) and record.root_version == 2


def test_pinned_entries_neither_read_nor_write_records(notary_server, pki, tmp_path) -> None:
    repo = ForgedRepo()
    publish(notary_server, repo)
    import base64

    pem = base64.b64decode(repo.role_keys["root"][0].public).decode()
    service = service_on(tmp_path, pki)
    facts = gather(service, notary_server, root_pins=(root_pin("hub-root", pem, None),))
    assert facts["verified"] is True and facts["root_trust"] == "pinned"
    assert FileRecordStore(tmp_path).records() == []
    assert service.stats()["roots_pinned"] == 1
    # the same GUN without pins is a separate (TOFU) entry, and a wrong pin is refused
    assert gather(service, notary_server)["root_trust"] == "first-use"
    other = base64.b64decode(x509_key(GUN, now=NOW).public).decode()
    refused = gather(service, notary_server, root_pins=(root_pin("wrong", other, None),))
    assert refused["verified"] is False and "pinned in secret(s) wrong" in refused["error"]


def test_default_pins_per_trust_server(notary_server, pki, tmp_path) -> None:
    """serve --root-pins: entries without rootSecrets on that server are pinned; their own pins win."""
    import base64

    from app.notary.pins import default_root_pins, load_default_root_pins

    repo = ForgedRepo()
    publish(notary_server, repo)
    good = base64.b64decode(repo.role_keys["root"][0].public).decode()
    wrong = base64.b64decode(x509_key(GUN, now=NOW).public).decode()
    pins_file = tmp_path / "pins.yaml"
    import yaml

    pins_file.write_text(yaml.safe_dump({notary_server.url + "/": {"publicKeys": good}}))
    service = TrustService(
        TrustSettings(cache_entries=0),
        ca_file=pki.ca_file,
        clock=lambda: NOW,
        default_pins=load_default_root_pins(str(pins_file)),
    )
    assert gather(service, notary_server)["root_trust"] == "pinned"
    own = gather(service, notary_server, root_pins=(root_pin("own", wrong, None),))
    assert own["verified"] is False and "pinned in secret(s) own" in own["error"]
    strict = TrustService(
        TrustSettings(cache_entries=0),
        ca_file=pki.ca_file,
        clock=lambda: NOW,
        default_pins=default_root_pins({notary_server.url: {"publicKeys": wrong}}, "pins.yaml"),
    )
    refused = gather(strict, notary_server)
    assert refused["verified"] is False and f"pins.yaml [{notary_server.url}]" in refused["error"]


def test_bad_default_pin_files_are_refused() -> None:
    import pytest

    from app.notary.pins import default_root_pins

    for document, why in (
        ([], "expected a mapping"),
        ({"https://n": "pem"}, "must map"),
        ({"https://n": {"keys": "x"}}, "unknown fields"),
        ({"https://n": {"publicKeys": ""}}, "holds neither"),
    ):
        with pytest.raises(ValueError, match=why):
            default_root_pins(document, "pins.yaml")


def test_a_dry_run_writes_no_record_and_moves_no_version(notary_server, pki, tmp_path) -> None:
    repo = ForgedRepo(versions={"targets": 4, "timestamp": 9})
    publish(notary_server, repo)
    service = TrustService(ca_file=pki.ca_file, clock=lambda: NOW, records=FileRecordStore(tmp_path).ensure())
    store = FileRecordStore(tmp_path)
    facts = gather(service, notary_server, dry_run=True)
    assert facts["verified"] is True and facts["root_trust"] == "first-use"
    assert store.records() == []
    # not cached either: the next real admission walks, and records the first use
    assert gather(service, notary_server)["root_trust"] == "first-use"
    assert store.get(notary_server.url, GUN).versions["timestamp"] == 9
    # newer trust data seen by a dry run moves no recorded version
    publish(notary_server, ForgedRepo(role_keys=repo.role_keys, versions={"targets": 5, "timestamp": 10}))
    dry = TrustService(
        TrustSettings(cache_entries=0),
        ca_file=pki.ca_file,
        clock=lambda: NOW,
        records=FileRecordStore(tmp_path).ensure(),
    )
    assert gather(dry, notary_server, dry_run=True)["root_trust"] == "recorded"
    assert store.get(notary_server.url, GUN).versions["timestamp"] == 9
    assert gather(dry, notary_server)["verified"] is True
    assert store.get(notary_server.url, GUN).versions["timestamp"] == 10


def test_a_dry_run_first_use_is_reused_by_dry_runs_only_within_the_cache_freshness(
    notary_server, pki, tmp_path
) -> None:
    """The audit re-checks images nobody admitted with dry runs: within the cache's freshness the
    second costs no walk, while a real admission still walks and records the first use."""
    publish(notary_server, ForgedRepo(versions={"targets": 4, "timestamp": 9}))
    store = FileRecordStore(tmp_path).ensure()
    service = TrustService(ca_file=pki.ca_file, clock=lambda: NOW, records=store)
    assert gather(service, notary_server, dry_run=True)["root_trust"] == "first-use"
    assert gather(service, notary_server, dry_run=True)["root_trust"] == "first-use"
    assert service.stats()["walks"] == 1 and service.stats()["cache_hits"] == 1
    assert store.records() == []
    assert gather(service, notary_server)["root_trust"] == "first-use"  # admission: walked, recorded
    assert service.stats()["walks"] == 2
    assert store.get(notary_server.url, GUN).versions["timestamp"] == 9


def test_records_beyond_the_limit_are_refused_naming_it(notary_server, pki, tmp_path) -> None:
    publish(notary_server, ForgedRepo())
    store = FileRecordStore(tmp_path).ensure()
    service = TrustService(
        TrustSettings(cache_entries=0, max_records=0), ca_file=pki.ca_file, clock=lambda: NOW, records=store
    )
    denied = gather(service, notary_server)
    assert denied["verified"] is False and denied["error_role"] == "root"
    assert "--max-trust-records 0" in denied["error"] and "holds 0 trust records" in denied["error"]
    assert store.records() == [] and service.stats()["records_refused"] == 1
