"""Issue 9 through `ostiary serve --state-dir`, restarted, against the real notary-server of the world.

Repositories here are published with the real `notary` CLI from trust directories of their own
(`Publisher`), so a repository can be re-initialised with new root keys (a fresh trust dir), or
rolled back (its local metadata restored from an earlier copy and published again after
`notary delete --remote`: the server then serves the same root with timestamp and snapshot at
version 1 and an older targets).

Phases (one module fixture, three `ostiary serve` generations):
1. two processes share state dir S and admit every repository (concurrent first use of "shared");
2. both stop; "rekey" is re-initialised with new root keys, "rollback" is rolled back, "rotate" gets
   a root rotation signed by its old root key (`notary key rotate GUN root`);
3. a new process on S: rekey and rollback are denied (reasons name the GUN), rotate is admitted and
   its record moved to the new root key; a process on an empty state dir admits rekey and rollback
   (the data is otherwise valid: the record is what denies).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from app.notary.state import FileRecordStore
from tests.support.serve import OSTIARY, Ostiary, cluster_policy, deployment_review, start_ready, stop
from tests.support.world import _PASSPHRASE_ENV, NotaryWorld

pytestmark = pytest.mark.world

REPOS = ("rekey", "rollback", "rotate", "shared")


class Publisher:
    """The real notary CLI with its own trust directory, i.e. its own root and targets keys."""

    def __init__(self, world: NotaryWorld, name: str):
        self.world = world
        self.dir = Path(world.dir) / f"publisher-{name}"
        self.trust = self.dir / "trust"
        self.trust.mkdir(parents=True, mode=0o700)
        self.config = self.dir / "notary-client.json"
        self.config.write_text(
            json.dumps(
                {
                    "trust_dir": str(self.trust),
                    "remote_server": {"url": world.notary_url, "root_ca": world.ca_file},
                }
            )
        )

    def notary(self, *args: str, answer: str = "") -> str:
        cp = subprocess.run(
            ["notary", "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **_PASSPHRASE_ENV, "HOME": str(self.dir)},
            input=answer,
            check=False,
        )
        assert cp.returncode == 0, f"notary {' '.join(args)}: {cp.stdout}\n{cp.stderr}"
        return cp.stdout

    def init(self, gun: str) -> None:
        self.notary("init", gun, "-p")
        self.notary("key", "rotate", gun, "snapshot", "-r")

    def sign(self, gun: str, tag: str, digest: str, size: int) -> None:
        self.notary("addhash", gun, tag, str(size), "--sha256", digest.split(":", 1)[1], "-p")

    def metadata(self, gun: str) -> Path:
        return self.trust / "tuf" / gun


def served_root(world: NotaryWorld, repo: str) -> tuple[int, list[str]]:
    signed = world.tuf(repo, "root").json()["signed"]
    return signed["version"], sorted(signed["roles"]["root"]["keyids"])


def start(tmp: Path, policies: Path, ca_file: str, state_dir: Path, *extra: str) -> Ostiary:
    """`ostiary serve` trusting the world's CA, with its trust records in `state_dir`, ready."""
    return start_ready(tmp, policies, "--ca-file", ca_file, "--state-dir", str(state_dir), *extra, timeout=60)


@pytest.fixture(scope="module")
def phases(world, tmp_path_factory):
    w: NotaryWorld = world.world
    tmp = tmp_path_factory.mktemp("roots")
    policies = tmp / "policies"
    policies.mkdir()
    reg = world.registry_host
    (policies / "roots.json").write_text(
        json.dumps(
            cluster_policy(
                "roots",
                [
                    {
                        "name": f"{reg}/roots/*",
                        "policy": {"trust": {"enabled": True, "trustServer": w.notary_url}},
                    },
                ],
            )
        )
    )
    state, empty = tmp / "state", tmp / "state-empty"
    first = Publisher(w, "first")
    images, guns = {}, {}
    for name in REPOS:
        repo = f"roots/{name}"
        guns[name] = w.gun(repo)
        img = w.push(repo, "v1", seed=f"roots-{name}")
        first.init(guns[name])
        first.sign(guns[name], "v1", img.digest, img.size)
        images[name] = (repo, img, f"{guns[name]}:v1")
    # "rollback": remember an early state (the CLI's cache lags one publish behind: sign once more
    # first, so the copy holds v1), then publish more versions of targets
    rb = images["rollback"][1]
    first.sign(guns["rollback"], "v0", rb.digest, rb.size)
    early = tmp / "rollback-early"
    shutil.copytree(first.metadata(guns["rollback"]), early)
    for tag in ("v2", "v3"):
        first.sign(guns["rollback"], tag, images["rollback"][1].digest, images["rollback"][1].size)

    out: dict = {
        "guns": guns,
        "state": state,
        "roots_before": {n: served_root(w, images[n][0]) for n in REPOS},
    }

    # phase 1: two processes on one state dir, concurrent first use of "shared"
    a, b = start(tmp, policies, w.ca_file, state), start(tmp, policies, w.ca_file, state)
    try:
        answers: dict = {}

        def admit(who: str, served: Ostiary) -> None:
            answers[who] = served.response(deployment_review(images["shared"][2]))

        threads = [threading.Thread(target=admit, args=(who, s)) for who, s in (("a", a), ("b", b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        out["shared"] = answers
        out["phase1"] = {n: a.response(deployment_review(images[n][2])) for n in REPOS if n != "shared"}
    finally:
        stop(a.proc)
        stop(b.proc)
    out["records1"] = {r.gun: r for r in FileRecordStore(state).records()}

    # phase 2: change the repositories while no Ostiary runs
    repo, img, _ = images["rekey"]
    first.notary("delete", guns["rekey"], "--remote")
    fresh = Publisher(w, "rekeyed")
    fresh.init(guns["rekey"])
    fresh.sign(guns["rekey"], "v1", img.digest, img.size)

    first.notary("delete", guns["rollback"], "--remote")
    shutil.copytree(early, first.metadata(guns["rollback"]))
    first.notary("publish", guns["rollback"])

    first.notary("key", "rotate", guns["rotate"], "root", answer="yes\n")
    out["roots_after"] = {n: served_root(w, images[n][0]) for n in REPOS}
    out["rollback_served"] = {
        r: w.tuf(images["rollback"][0], r).json()["signed"]["version"]
        for r in ("timestamp", "snapshot", "targets")
    }

    # phase 3: restarted on the same state; and a control on an empty state dir
    c = start(tmp, policies, w.ca_file, state)
    try:
        out["phase3"] = {n: c.response(deployment_review(images[n][2])) for n in REPOS}
    finally:
        stop(c.proc)
    out["records3"] = {r.gun: r for r in FileRecordStore(state).records()}
    control = start(tmp, policies, w.ca_file, empty)
    try:
        out["control"] = {n: control.response(deployment_review(images[n][2])) for n in ("rekey", "rollback")}
    finally:
        stop(control.proc)

    # phase 4: the operator accepts the re-key with the CLI, and a new process admits it
    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(OSTIARY), "trust", *args],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    where = ("--trust-server", w.notary_url)
    rekey_ref = images["rekey"][2]
    out["pins_json"] = cli("pins", "--state-dir", str(state), "--json")
    out["pins_text"] = cli("pins", "--state-dir", str(state))
    out["pin_refused"] = cli("pin", rekey_ref, *where, "--ca-file", w.ca_file, "--state-dir", str(state))
    out["unpin"] = cli("unpin", rekey_ref, *where, "--state-dir", str(state))
    out["unpin_again"] = cli("unpin", rekey_ref, *where, "--state-dir", str(state))
    out["pin"] = cli("pin", rekey_ref, *where, "--ca-file", w.ca_file, "--state-dir", str(state))
    out["records4"] = {r.gun: r for r in FileRecordStore(state).records()}
    d = start(tmp, policies, w.ca_file, state)
    try:
        out["phase4"] = d.response(deployment_review(rekey_ref))
    finally:
        stop(d.proc)
    return out


def _message(response: dict) -> str:
    return (response.get("status") or {}).get("message", "")


def test_first_use_is_recorded_once_by_two_processes(phases) -> None:
    assert all(r["allowed"] for r in phases["shared"].values()), phases["shared"]
    assert all(r["allowed"] for r in phases["phase1"].values()), phases["phase1"]
    records = phases["records1"]
    assert set(records) == set(phases["guns"].values())
    shared = records[phases["guns"]["shared"]]
    assert shared.how == "first-use" and " pid " in shared.first_seen_by
    assert list(shared.root_keyids) == phases["roots_before"]["shared"][1]
    assert shared.versions["targets"] >= 1 and shared.versions["timestamp"] >= 1


def test_a_re_keyed_repository_is_denied_after_a_restart(phases) -> None:
    gun = phases["guns"]["rekey"]
    assert phases["roots_after"]["rekey"][1] != phases["roots_before"]["rekey"][1]  # really new keys
    answer = phases["phase3"]["rekey"]
    assert answer["allowed"] is False
    assert gun in _message(answer) and "not the recorded root" in _message(answer)
    assert f"ostiary trust unpin {gun}" in _message(answer)
    assert phases["control"]["rekey"]["allowed"] is True  # without the record it would be trusted
    assert phases["records3"][gun].root_keyids == phases["records1"][gun].root_keyids  # record kept


def test_a_rollback_after_a_restart_is_refused(phases) -> None:
    gun = phases["guns"]["rollback"]
    assert phases["roots_after"]["rollback"] == phases["roots_before"]["rollback"]  # same root
    recorded = phases["records1"][gun].versions
    served = phases["rollback_served"]
    assert all(served[r] < recorded[r] for r in ("timestamp", "snapshot", "targets")), (served, recorded)
    answer = phases["phase3"]["rollback"]
    assert answer["allowed"] is False
    assert "lower than seen version" in _message(answer) and gun in _message(answer)
    assert phases["control"]["rollback"]["allowed"] is True
    assert phases["records3"][gun].versions == recorded  # a refused walk records nothing


def test_a_valid_root_rotation_moves_the_record(phases) -> None:
    gun = phases["guns"]["rotate"]
    before, after = phases["roots_before"]["rotate"], phases["roots_after"]["rotate"]
    assert after[1] != before[1] and after[0] > before[0]
    assert phases["phase3"]["rotate"]["allowed"] is True, _message(phases["phase3"]["rotate"])
    moved = phases["records3"][gun]
    assert list(moved.root_keyids) == after[1] and moved.root_version == after[0]
    assert moved.first_seen_at == phases["records1"][gun].first_seen_at  # same record, moved
    assert phases["phase3"]["shared"]["allowed"] is True


def test_the_operator_lists_unpins_and_pins_with_the_cli(phases) -> None:
    gun = phases["guns"]["rekey"]
    listed = phases["pins_json"]
    assert listed.returncode == 0, listed.stderr
    by_gun = {item["gun"]: item for item in json.loads(listed.stdout)}
    assert set(by_gun) == set(phases["guns"].values())
    assert by_gun[gun]["rootKeyIDs"] == phases["roots_before"]["rekey"][1]
    assert by_gun[gun]["firstSeen"]["by"] and by_gun[gun]["versions"]["targets"] >= 1
    assert f"{gun}  (" in phases["pins_text"].stdout and "root keys:" in phases["pins_text"].stdout
    # pinning over a conflicting record is refused, naming the way out
    refused = phases["pin_refused"]
    assert refused.returncode == 1 and "ostiary trust unpin" in refused.stderr
    assert phases["unpin"].returncode == 0 and "removed the trust record" in phases["unpin"].stdout
    assert phases["unpin_again"].returncode == 1 and "no trust record" in phases["unpin_again"].stderr
    pinned = phases["pin"]
    assert pinned.returncode == 0, pinned.stderr
    new_keys = phases["roots_after"]["rekey"][1]
    assert ", ".join(new_keys) in pinned.stdout
    record = phases["records4"][gun]
    assert list(record.root_keyids) == new_keys and record.how == "operator"
    assert phases["phase4"]["allowed"] is True, _message(phases["phase4"])
