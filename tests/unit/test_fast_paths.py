"""The pieces issue 12 added to make warm admissions cheap, tested for staying correct: kept plans,
kept facts documents, OPA's garbage-collector setting. (Their speed is the benchmark's business:
scripts/bench_admit.py, docs/performance.md.)"""

from __future__ import annotations

import json

from app.admission.plans import MAX_IMAGES, MAX_KEY_CHARS, PlanCache
from app.opa.process import OPA_GOGC, opa_environment
from tests.trust.forge import DIGEST_A, DIGEST_B, ForgedRepo, load


class Generation:
    def __init__(self) -> None:
        self.value = 0

    def __call__(self) -> int:
        return self.value


def test_a_plan_is_found_under_its_generation_only():
    gen = Generation()
    plans = PlanCache(gen)
    key = plans.key("default", [(0, "nginx:1")])
    assert plans.get(key) is None
    plans.put(key, [{"id": 0}])
    assert plans.get(key) == [{"id": 0}]
    assert plans.get(plans.key("default", [(0, "nginx:1")])) == [{"id": 0}]
    assert plans.get(plans.key("team-a", [(0, "nginx:1")])) is None  # another namespace
    assert plans.get(plans.key("default", [(1, "nginx:1")])) is None  # another position
    gen.value += 1  # the module set is changing
    assert plans.get(key) is None
    assert plans.get(plans.key("default", [(0, "nginx:1")])) is None


def test_a_plan_queried_while_the_modules_changed_is_not_kept():
    gen = Generation()
    plans = PlanCache(gen)
    key = plans.key("default", [(0, "nginx:1")])
    gen.value += 1  # a write to OPA began (or ended) between the key and the answer
    plans.put(key, [{"id": 0}])
    assert plans.get(key) is None and plans.get(plans.key("default", [(0, "nginx:1")])) is None
    assert len(plans) == 0


def test_plans_of_an_older_generation_are_dropped():
    gen = Generation()
    plans = PlanCache(gen)
    for i in range(10):
        plans.put(plans.key("default", [(0, f"app{i}:1")]), [{"id": 0}])
    assert len(plans) == 10
    gen.value += 2
    plans.put(plans.key("default", [(0, "app:1")]), [{"id": 0}])
    assert len(plans) == 1


def test_hostile_sizes_are_not_kept():
    plans = PlanCache(Generation())
    assert plans.key("default", [(i, "a:1") for i in range(MAX_IMAGES + 1)]) is None
    assert plans.key("default", [(0, "a" * (MAX_KEY_CHARS + 1))]) is None
    plans.put(None, [{"id": 0}])
    assert plans.get(None) is None and len(plans) == 0


def test_kept_facts_are_the_facts_and_each_caller_gets_its_own_document():
    repo = ForgedRepo(targets={"latest": DIGEST_A, "v2": DIGEST_B})
    trusted = load(repo.build())
    first = trusted.facts("latest", None, [])
    again = trusted.facts("latest", None, [])
    assert again == first and again is not first
    first["signers"] = ["changed by a caller"]  # what the Reviewer does with its copy
    assert trusted.facts("latest", None, [])["signers"] == []
    other = trusted.facts("v2", None, [])
    assert other["targets"]["v2"]["released"] == "sha256:" + DIGEST_B
    assert first["targets"]["latest"]["released"] == "sha256:" + DIGEST_A
    fresh = load(repo.build()).facts("latest", None, [], server="https://other.example.com")
    assert fresh["server"] == "https://other.example.com"
    assert trusted.facts("latest", None, [], server="https://other.example.com")["server"] == fresh["server"]


def test_opa_gets_a_gogc_unless_the_operator_set_one():
    assert opa_environment({"PATH": "/bin"}) == {"PATH": "/bin", "GOGC": OPA_GOGC}
    assert opa_environment({"GOGC": "100"})["GOGC"] == "100"


def test_json_out_falls_back_where_orjson_refuses():
    from app import jsonio

    huge = {"spec": {"replicas": 10**30}, "ok": [True, None, "é"]}
    assert json.loads(jsonio.dumps(huge)) == huge  # an integer beyond 64 bits: the standard library
    assert json.loads(jsonio.dumps({1: "a"})) == {"1": "a"}
    assert jsonio.dumps({"a": [1, "b"]}) == b'{"a":[1,"b"]}'
    assert json.loads(jsonio.dumps({"t": object()}, default=lambda _: "x")) == {"t": "x"}
    assert jsonio.loads(b'{"result": {"allowed": true}}') == {"result": {"allowed": True}}


def test_decision_log_lines_stay_ascii(tmp_path):
    from app.decisionlog import DecisionLog

    path = tmp_path / "decisions.log"
    log = DecisionLog.open(str(path))
    body = {"request": {"uid": "u", "userInfo": {"username": "zoë"}, "object": {}}}
    log.begin()
    log.write(body, {"response": {"allowed": True}}, None, 0.01)
    line = path.read_bytes()
    assert line.isascii() and json.loads(line)["user"]["username"] == "zoë"


def test_decision_log_pins_come_from_the_decision_not_from_decoding_the_patch():
    from app.admission.review import Outcome
    from app.decisionlog import build_record

    pin = "sha256:" + "a" * 64
    ops = [{"op": "replace", "path": "/spec/containers/0/image", "value": f"reg.example/app:v1@{pin}"}]
    answer = {"response": {"allowed": True, "patch": "not base64 at all"}}
    record = build_record({"request": {"uid": "u"}}, answer, Outcome(True, "allowed", [], pins=ops), 0.01)
    assert record["patch"] == [
        {"path": "/spec/containers/0/image", "image": f"reg.example/app:v1@{pin}", "digest": pin}
    ]
    denied = build_record(
        {"request": {"uid": "u"}}, {"response": {"allowed": False}}, Outcome(False, "no"), 0.01
    )
    assert denied["patch"] == []
