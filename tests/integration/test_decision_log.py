"""Decision logs through a real `ostiary serve`: one JSON line per admission, every documented field,
OPA's decision ids from a real OPA with decision logging, real trust facts from the notary world, and
never a secret (a pull secret with a recognisable password sits in the policy directory)."""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from tests.integration.test_server import EXAMPLES, Served, example, free_port
from tests.support.procs import die_with_parent

FIELDS = {
    "type",
    "time",
    "uid",
    "namespace",
    "kind",
    "api_version",
    "name",
    "operation",
    "sub_resource",
    "dry_run",
    "user",
    "allowed",
    "verdict",
    "reason",
    "error",
    "message",
    "images",
    "denials",
    "warnings",
    "patch",
    "opa_decision_ids",
    "opa_ms",
    "latency_ms",
}
IMAGE_FIELDS = {"image", "container", "path", "verdict", "entry", "trust", "reasons", "warnings", "pin"}
TRUST_FIELDS = {
    "verified",
    "server",
    "gun",
    "signed_digest",
    "refused",
    "signed_by_roles",
    "root",
    "error",
    "error_role",
    "signers",
}
PASSWORD = "pull-secret-password-Zq81xK"  # recognisable: must never appear in a decision log


@pytest.fixture()
def served():
    instances = []

    def start(*args, **kw):
        s = Served(*args, **kw)
        instances.append(s)
        return s

    yield start
    for s in instances:
        s.stop()


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_lines(path: Path, count: int, timeout: float = 10.0) -> list[dict]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            break
        time.sleep(0.05)
    return records(path)


def with_uid(review: dict) -> dict:
    review = json.loads(json.dumps(review))
    review["request"]["uid"] = str(uuid.uuid4())
    return review


def pull_secret(namespace: str) -> dict:
    auth = base64.b64encode(f"robot:{PASSWORD}".encode()).decode()
    config = json.dumps(
        {"auths": {"registry.example.com": {"username": "robot", "password": PASSWORD, "auth": auth}}}
    )
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "regcred", "namespace": namespace},
        "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
    }


def secret_forms() -> list[str]:
    return [
        PASSWORD,
        base64.b64encode(f"robot:{PASSWORD}".encode()).decode()[:16],
        base64.b64encode(PASSWORD.encode()).decode()[:12],
        "dockerconfigjson",
        "regcred-contents",
    ]


def test_one_line_per_admission_with_every_field_and_no_secret(served, tmp_path):
    policies = tmp_path / "policies"
    policies.mkdir()
    for f in (EXAMPLES / "policies").iterdir():
        (policies / f.name).write_text(f.read_text())
    (policies / "pull-secret.json").write_text(json.dumps(pull_secret("default")))
    log = tmp_path / "decisions.jsonl"
    s = served("--policy-dir", str(policies), "--decision-log", str(log))
    s.wait_ready()
    allowed = with_uid(example("deployment-mirror.json"))
    allowed["request"]["object"]["spec"]["template"]["spec"]["imagePullSecrets"] = [{"name": "regcred"}]
    allowed["request"]["userInfo"] = {
        "username": "alice",
        "groups": ["developers", "system:authenticated"],
        "extra": {"token-hint": [PASSWORD]},
    }
    denied = with_uid(example("deployment-unlisted.json"))
    configmap = with_uid(denied)
    configmap["request"]["kind"] = {"group": "", "version": "v1", "kind": "ConfigMap"}
    configmap["request"]["object"] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cm"},
        "data": {"password": PASSWORD},
    }
    reviews = [allowed, denied, configmap]
    answers = [s.admit(r).json()["response"] for r in reviews]
    assert [a["allowed"] for a in answers] == [True, False, True]
    lines = wait_lines(log, 3)
    assert len(lines) == 3, lines
    for review, line in zip(reviews, lines, strict=False):
        assert set(line) == FIELDS
        assert line["type"] == "ostiary.dev/decision/v1"
        assert line["uid"] == review["request"]["uid"]
        for image in line["images"]:
            assert set(image) == IMAGE_FIELDS
    ok, no, cm = lines
    assert (ok["namespace"], ok["kind"], ok["api_version"], ok["operation"]) == (
        "default",
        "Deployment",
        "apps/v1",
        "CREATE",
    )
    assert ok["name"] == "mirror" and ok["verdict"] == "allowed" and ok["denials"] == []
    assert ok["user"] == {"username": "alice", "groups": ["developers", "system:authenticated"]}
    assert ok["images"][0]["entry"]["repository"] == "registry.example.com/mirror/*"
    assert (
        ok["images"][0]["entry"]["kind"] == "ClusterImagePolicy" and ok["images"][0]["verdict"] == "allowed"
    )
    assert ok["latency_ms"] > 0 and ok["opa_ms"] > 0 and ok["latency_ms"] >= ok["opa_ms"]
    assert no["verdict"] == "denied" and no["allowed"] is False
    assert "no repository entry" in no["denials"][0] and no["message"].startswith(
        "Ostiary denied the request"
    )
    assert no["images"][0]["verdict"] == "denied" and no["images"][0]["entry"] is None
    assert "no repository entry" in no["images"][0]["reasons"][0]
    assert cm["kind"] == "ConfigMap" and cm["images"] == [] and "does not check kind" in cm["warnings"][0]
    text = log.read_text()
    for form in secret_forms():
        assert form not in text


def test_the_default_is_standard_output_and_off_writes_nothing(served):
    s = served("--policy-dir", str(EXAMPLES / "policies"))
    s.wait_ready()
    review = with_uid(example("deployment-mirror.json"))
    assert s.admit(review).json()["response"]["allowed"] is True
    s.stop()
    out = [
        json.loads(line)
        for line in s.proc.stdout.read().splitlines()
        if line.startswith('{"type":"ostiary.dev/decision/v1"')
    ]
    assert [r["uid"] for r in out] == [review["request"]["uid"]]
    quiet = served("--policy-dir", str(EXAMPLES / "policies"), "--decision-log", "off")
    quiet.wait_ready()
    assert quiet.admit(with_uid(review)).json()["response"]["allowed"] is True
    quiet.stop()
    assert "ostiary.dev/decision/v1" not in quiet.proc.stdout.read()


def test_an_unwritable_decision_log_is_a_usage_error(tmp_path):
    from tests.integration.test_server import OSTIARY

    result = subprocess.run(
        [
            OSTIARY,
            "serve",
            "--policy-dir",
            str(EXAMPLES / "policies"),
            "--decision-log",
            str(tmp_path / "missing" / "log"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2 and "--decision-log" in result.stderr


def test_opa_decision_ids_come_from_a_sidecar_opa_with_decision_logs(served, tmp_path, opa_binary):
    port = free_port()
    opa_log = tmp_path / "opa.log"
    with open(opa_log, "wb") as fh:
        opa = subprocess.Popen(
            [
                opa_binary,
                "run",
                "--server",
                "--addr",
                f"127.0.0.1:{port}",
                "--set",
                "decision_logs.console=true",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only prctl
        )
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        log = tmp_path / "decisions.jsonl"
        s = served(
            "--policy-dir",
            str(EXAMPLES / "policies"),
            "--opa-url",
            f"http://127.0.0.1:{port}",
            "--decision-log",
            str(log),
        )
        s.wait_ready()
        assert s.admit(with_uid(example("deployment-mirror.json"))).json()["response"]["allowed"] is True
        (line,) = wait_lines(log, 1)
        ids = line["opa_decision_ids"]
        # no image of this admission needs trust facts: one query, the plan brings the decision
        assert set(ids) == {"plan"}
        time.sleep(0.5)
        logged = [json.loads(x) for x in opa_log.read_text().splitlines() if '"decision_id"' in x]
        by_id = {x["decision_id"]: x.get("path") for x in logged}
        assert by_id.get(ids["plan"]) == "ostiary/main/plan"
    finally:
        opa.terminate()
        opa.wait(10)


def test_trust_summary_and_patch_from_real_notary_data(served, tmp_path, world):
    reg = world.registry_host
    policies = tmp_path / "policies"
    policies.mkdir()
    alice = world.alice_pem
    (policies / "trust.json").write_text(
        json.dumps(
            {
                "apiVersion": "ostiary.dev/v1",
                "kind": "ClusterImagePolicy",
                "metadata": {"name": "world"},
                "spec": {
                    "repositories": [
                        {
                            "name": f"{reg}/ostiary/*",
                            "policy": {"trust": {"enabled": True, "trustServer": world.notary_url}},
                        },
                        {
                            "name": f"{reg}/ostiary/signer-pem",
                            "policy": {
                                "trust": {
                                    "enabled": True,
                                    "trustServer": world.notary_url,
                                    "signerSecrets": [{"name": "alice-signer"}],
                                }
                            },
                        },
                    ]
                },
            }
        )
    )
    (policies / "secrets.json").write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "alice-signer", "namespace": "ostiary-system"},
                "data": {
                    "name": base64.b64encode(b"alice").decode(),
                    "publicKey": base64.b64encode(alice.encode()).decode(),
                },
            }
        )
    )
    (policies / "pull.json").write_text(json.dumps(pull_secret("default")))
    log = tmp_path / "decisions.jsonl"
    s = served("--policy-dir", str(policies), "--ca-file", world.ca_file, "--decision-log", str(log))
    s.wait_ready()
    signed, unsigned, signer = world["signed"], world["unsigned"], world["signer-pem"]
    review = with_uid(example("deployment-mirror.json"))
    spec = review["request"]["object"]["spec"]["template"]["spec"]
    spec["imagePullSecrets"] = [{"name": "regcred"}]
    spec["containers"] = [
        {"name": "a", "image": f"{reg}/{signed.repo}:{signed.tag}"},
        {"name": "b", "image": f"{reg}/{signer.repo}:{signer.tag}"},
    ]
    answer = s.admit(review).json()["response"]
    assert answer["allowed"] is True, answer
    bad = with_uid(review)
    bad["request"]["object"]["spec"]["template"]["spec"]["containers"] = [
        {"name": "a", "image": f"{reg}/{unsigned.repo}:{unsigned.tag}"}
    ]
    assert s.admit(bad).json()["response"]["allowed"] is False
    ok, no = wait_lines(log, 2)
    first, second = ok["images"]
    assert set(first["trust"]) == TRUST_FIELDS
    assert (
        first["trust"]["verified"] is True
        and first["trust"]["signed_digest"] == f"sha256:{signed.digest.removeprefix('sha256:')}"
    )
    assert first["trust"]["gun"] == f"{reg}/{signed.repo}" and first["trust"]["error"] is None
    assert first["pin"] == first["trust"]["signed_digest"]
    assert second["entry"]["repository"] == f"{reg}/ostiary/signer-pem"
    assert second["trust"]["signers"] == [
        {"name": "alice", "secret": "alice-signer", "role": "targets/alice", "error": None}
    ]
    assert [p["path"] for p in ok["patch"]] == [
        "/spec/template/spec/containers/0/image",
        "/spec/template/spec/containers/1/image",
    ]
    assert ok["patch"][0]["digest"] == first["pin"] and ok["patch"][0]["image"].endswith("@" + first["pin"])
    assert no["verdict"] == "denied" and no["images"][0]["trust"]["signed_digest"] is None
    assert "not signed" in no["denials"][0]
    text = log.read_text()
    for form in [*secret_forms(), "BEGIN PUBLIC KEY", alice.splitlines()[1][:24]]:
        assert form not in text
