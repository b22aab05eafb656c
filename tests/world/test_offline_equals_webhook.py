"""The offline verdict is the webhook's (issue 24 item 1): one corpus through POST /admit of `ostiary
serve --policy-dir` and through `ostiary apply` / `explain`, with root pins, recorded roots, a
non-default system namespace and the trust-server allow-list in play, every verdict, message,
warning and patch compared.

The world's one notary server is reached under two names, so both kinds of root anchor apply:
- S_PIN = https://localhost:PORT: `--root-pins` pins publisher A's root certificate for it.
- S_REC = https://127.0.0.1:PORT: trust on first use, from the records of the state directory.

Attacker's side: eq/pinned-b is published by B (another root) under A's pin, and eq/tofu-swapped is a
repository whose served root is not the one recorded (as after a re-keying by whoever took over the
server). The cluster denies both; `apply` given the same pins and `trust pins --json` denies them
too, and without them it would allow them, which is the gap this closes (the old `apply` had neither
option).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests
import yaml

from app.notary.state import FileRecordStore
from app.offline.engine import admission_review
from tests.e2e.cluster import free_port, start_process
from tests.support.serve import OSTIARY
from tests.world.test_roots import Publisher

pytestmark = pytest.mark.world
SYSTEM_NS = "platform"  # not the default: the signer Secret lives here
ELSEWHERE = "https://notary.elsewhere.example"  # a server no option allows


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def ostiary(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(OSTIARY), *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def root_certificate_pem(world, repo: str) -> str:
    signed = world.tuf(repo, "root").json()["signed"]
    (keyid,) = signed["roles"]["root"]["keyids"]
    return base64.b64decode(signed["keys"][keyid]["keyval"]["public"]).decode()


def pod(name: str, image: str, namespace: str = "default") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


def deployment(name: str, *images: str) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": f"c{i}", "image": im} for i, im in enumerate(images)]},
            },
        },
    }


def policies(directory: Path, reg: str, s_pin: str, s_rec: str, alice_pem: str) -> None:
    def trust(server: str, **more) -> dict:
        return {"trust": {"enabled": True, "trustServer": server, **more}}

    docs = [
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": "eq"},
            "spec": {
                "repositories": [
                    {"name": f"{reg}/eq/pinned-*", "policy": trust(s_pin)},
                    {"name": f"{reg}/eq/tofu-*", "policy": trust(s_rec)},
                    {
                        "name": f"{reg}/ostiary/signer-pem",
                        "policy": trust(s_rec, signerSecrets=[{"name": "alice"}]),
                    },
                ]
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "alice", "namespace": SYSTEM_NS},
            "data": {"name": b64("alice"), "publicKey": b64(alice_pem)},
        },
        {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ImagePolicy",
            "metadata": {"name": "tenant", "namespace": "tenant"},
            "spec": {"repositories": [{"name": f"{reg}/eq/*", "policy": trust(ELSEWHERE)}]},
        },
    ]
    directory.mkdir()
    for number, doc in enumerate(docs):
        (directory / f"{number}.json").write_text(json.dumps(doc))


def serve_and_admit(tmp: Path, args: list[str], corpus: list[dict]) -> dict[str, dict]:
    port = free_port()
    proc = start_process("serve", [str(OSTIARY), "serve", "--listen", f"127.0.0.1:{port}", *args], tmp)
    base = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while True:
            assert proc.popen.poll() is None, proc.log.read_text()[-3000:]
            try:
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < end, "serve never ready: " + proc.log.read_text()[-3000:]
            time.sleep(0.2)
        return {
            obj["metadata"]["name"]: requests.post(
                f"{base}/admit", json=admission_review(obj, uid=f"live-{i}"), timeout=60
            ).json()["response"]
            for i, obj in enumerate(corpus)
        }
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def equal(world, tmp_path_factory):
    w = world.world
    tmp = tmp_path_factory.mktemp("offline-equals")
    reg = world.registry_host
    s_rec = w.notary_url
    s_pin = s_rec.replace("://127.0.0.1:", "://localhost:")
    assert s_pin != s_rec, s_rec
    a, b = Publisher(w, "eq-a"), Publisher(w, "eq-b")
    refs = {}
    for name, publisher in (
        ("pinned-a", a),
        ("pinned-b", b),
        ("tofu-kept", a),
        ("tofu-swapped", a),
        ("tofu-decoy", b),
    ):
        repo = f"eq/{name}"
        image = w.push(repo, "v1", seed=f"eq-{name}")
        publisher.init(w.gun(repo))
        publisher.sign(w.gun(repo), "v1", image.digest, image.size)
        refs[name] = f"{w.gun(repo)}:v1"
    refs["pinned-a-unsigned"] = f"{w.gun('eq/pinned-a')}:v9"
    refs["signer-pem"] = world["signer-pem"].reference

    # The cluster's records: tofu-kept pinned by an operator; tofu-swapped recorded with another root
    # (the decoy's, B's) than the one served now.
    state = tmp / "state"
    for ref in (refs["tofu-kept"], refs["tofu-decoy"]):
        pinned = ostiary(
            "trust", "pin", ref, "--trust-server", s_rec, "--ca-file", w.ca_file, "--state-dir", str(state)
        )
        assert pinned.returncode == 0, pinned.stderr
    store = FileRecordStore(state)
    decoy = store.get(s_rec, w.gun("eq/tofu-decoy"))
    assert decoy is not None
    store.update(s_rec, w.gun("eq/tofu-swapped"), lambda _: replace(decoy, gun=w.gun("eq/tofu-swapped")))
    store.delete(s_rec, w.gun("eq/tofu-decoy"))
    listed = ostiary("trust", "pins", "--state-dir", str(state), "--json")
    assert listed.returncode == 0, listed.stderr
    records = tmp / "pins.json"
    records.write_text(listed.stdout)

    (tmp / "root-pins.yaml").write_text(
        yaml.safe_dump({s_pin: {"publicKeys": root_certificate_pem(w, "eq/pinned-a")}})
    )
    policy_dir = tmp / "policies"
    policies(policy_dir, reg, s_pin, s_rec, world.alice_pem)
    corpus = [
        pod("pinned-a", refs["pinned-a"]),
        pod("pinned-b", refs["pinned-b"]),
        pod("pinned-a-unsigned", refs["pinned-a-unsigned"]),
        pod("tofu-kept", refs["tofu-kept"]),
        pod("tofu-swapped", refs["tofu-swapped"]),
        pod("signer-pem", refs["signer-pem"]),
        pod("tenant", refs["pinned-a"], namespace="tenant"),
        deployment("mixed", refs["pinned-a"], refs["tofu-kept"], refs["signer-pem"]),
        deployment("mixed-denied", refs["pinned-a"], refs["tofu-swapped"]),
    ]
    (tmp / "corpus.yaml").write_text(yaml.safe_dump_all(corpus))
    common = [
        "--policy-dir",
        str(policy_dir),
        "--ca-file",
        w.ca_file,
        "--root-pins",
        str(tmp / "root-pins.yaml"),
        "--system-namespace",
        SYSTEM_NS,
        "--trust-server-allow",
        s_rec,
    ]
    live = serve_and_admit(tmp, [*common, "--state-dir", str(state), "--decision-log", "off"], corpus)
    captured = tmp / "captured"
    for server, names in (
        (s_pin, ("pinned-a", "pinned-b")),
        (s_rec, ("tofu-kept", "tofu-swapped", "signer-pem")),
    ):
        done = ostiary(
            "trust",
            "capture",
            *(refs[n] for n in names),
            "--out",
            str(captured),
            "--trust-server",
            server,
            "--ca-file",
            w.ca_file,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return {
        "captured": captured,
        "tmp": tmp,
        "common": common,
        "records": records,
        "corpus": corpus,
        "live": live,
        "refs": refs,
        "s_pin": s_pin,
    }


def apply(equal, *extra: str) -> dict[str, dict]:
    result = ostiary("apply", str(equal["tmp"] / "corpus.yaml"), "-o", "json", *extra)
    assert result.returncode in (0, 1), result.stderr
    return {r["name"]: r for r in json.loads(result.stdout)["results"]}


def live_patch(response: dict) -> list:
    return json.loads(base64.b64decode(response["patch"])) if "patch" in response else []


def test_apply_gives_every_verdict_message_and_patch_of_the_webhook(equal) -> None:
    offline = apply(equal, *equal["common"], "--trust-records", str(equal["records"]))
    assert set(offline) == set(equal["live"])
    for name, live in equal["live"].items():
        mine = offline[name]
        assert mine["allowed"] is live["allowed"], (name, live, mine["message"])
        assert mine["message"] == (live.get("status") or {}).get("message", ""), name
        assert mine["warnings"] == live.get("warnings", []), name
        assert mine["patch"] == live_patch(live), name
    # the corpus has both verdicts for each anchor, so the comparison is not vacuous
    verdicts = {name: live["allowed"] for name, live in equal["live"].items()}
    assert verdicts == {
        "pinned-a": True,
        "pinned-b": False,
        "pinned-a-unsigned": False,
        "tofu-kept": True,
        "tofu-swapped": False,
        "signer-pem": True,
        "tenant": False,
        "mixed": True,
        "mixed-denied": False,
    }, {n: (r.get("status") or {}).get("message") for n, r in equal["live"].items()}
    assert (
        equal["s_pin"].removeprefix("https://") in offline["pinned-b"]["message"]
        or "root-pins" in (offline["pinned-b"]["message"])
    )


def test_without_the_clusters_pins_and_records_apply_would_allow_what_the_cluster_denies(equal) -> None:
    """Why the options exist: the same run without them allows both attacks, and the signer Secret
    is not found outside the system namespace it lives in."""
    bare = apply(equal, "--policy-dir", str(equal["tmp"] / "policies"), "--ca-file", equal["common"][3])
    assert bare["pinned-b"]["allowed"] is True
    assert bare["tofu-swapped"]["allowed"] is True
    assert bare["signer-pem"]["allowed"] is False


def test_explain_gives_the_webhooks_response(equal) -> None:
    obj = next(o for o in equal["corpus"] if o["metadata"]["name"] == "tofu-swapped")
    review = equal["tmp"] / "review.json"
    review.write_text(json.dumps(admission_review(obj, uid="explain-1")))
    result = ostiary("explain", str(review), *equal["common"], "--trust-records", str(equal["records"]))
    assert result.returncode == 1, result.stderr
    out = json.loads(result.stdout)
    live = equal["live"]["tofu-swapped"]
    assert out["response"]["allowed"] is False
    assert out["response"]["status"]["message"] == live["status"]["message"]
    assert out["images"][0]["trust"]["verified"] is False


def test_captured_data_with_the_same_pins_and_records_gives_the_same_verdicts(equal) -> None:
    offline = apply(
        equal,
        *equal["common"],
        "--trust-records",
        str(equal["records"]),
        "--trust-data",
        str(equal["captured"]),
    )
    for name, live in equal["live"].items():
        assert offline[name]["allowed"] is live["allowed"], (name, offline[name]["message"])
        assert offline[name]["patch"] == live_patch(live), name


def test_a_policy_test_file_takes_the_same_pins_and_records(equal, tmp_path) -> None:
    tmp = equal["tmp"]
    cases = [
        {
            "name": o["metadata"]["name"],
            "object": o,
            "expect": {"allowed": equal["live"][o["metadata"]["name"]]["allowed"]},
        }
        for o in equal["corpus"]
    ]
    test = {
        "apiVersion": "ostiary.dev/v1",
        "kind": "PolicyTest",
        "metadata": {"name": "equal"},
        "spec": {
            "policies": str(tmp / "policies"),
            "trustData": [str(equal["captured"])],
            "rootPins": str(tmp / "root-pins.yaml"),
            "trustRecords": str(equal["records"]),
            "systemNamespace": SYSTEM_NS,
            "trustServerAllow": [equal["common"][-1]],
            "cases": cases,
        },
    }
    (tmp_path / "equal_test.yaml").write_text(yaml.safe_dump(test))
    result = ostiary("test", str(tmp_path / "equal_test.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(cases)}/{len(cases)} passed" in result.stdout


def test_without_records_apply_says_where_the_webhook_may_differ(equal) -> None:
    """A difference apply cannot rule out is said in its output, per image, not only in the docs."""
    common = equal["common"]
    table = ostiary("apply", str(equal["tmp"] / "corpus.yaml"), *common)
    assert "note: " in table.stdout and "no --trust-records were given" in table.stdout
    offline = apply(equal, *common)
    kept = offline["tofu-kept"]["notes"]
    assert kept and "trust pins --json" in kept[0]
    assert offline["pinned-a"]["notes"] == []  # a pinned root is the webhook's anchor too
    given = apply(equal, *common, "--trust-records", str(equal["records"]))
    assert all(r["notes"] == [] for r in given.values())
