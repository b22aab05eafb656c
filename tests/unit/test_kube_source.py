"""The cluster policy source against a fake API and a fake PolicySync: what reaches OPA, what is reported."""

from __future__ import annotations

import threading
import time

import pytest

from app.kube.client import KubeError, WatchExpired
from app.kube.events import resource_path
from app.kube.source import KubePolicySource, collection_path
from app.kube.store import KubeObjectStore
from app.kube.timings import KubeTimings
from app.opa.client import OpaError, OpaModuleRefused
from app.policies.kinds import POLICY_KINDS, as_document
from app.policies.schema import parse_policy_document
from app.policies.translate import translate

OSTIARY_CIP, OSTIARY_IP = POLICY_KINDS[1], POLICY_KINDS[0]
PORTIERIS_CIP = POLICY_KINDS[3]


def _is_refusal(module) -> bool:
    """A refusal put in place of a namespace's policy (translate.refused_module: a data document)."""
    import json

    return module.is_data and bool(json.loads(module.source)["policy"].get("refused"))


def policy(
    kind="ClusterImagePolicy",
    name="base",
    namespace=None,
    repos=("*",),
    group="ostiary.dev/v1",
    rv="1",
    generation=1,
    uid=None,
    spec=None,
):
    meta = {
        "name": name,
        "uid": uid or f"uid-{name}",
        "resourceVersion": rv,
        "generation": generation,
        "managedFields": [{"manager": "kubectl"}],
    }
    if namespace:
        meta["namespace"] = namespace
    return {
        "apiVersion": group,
        "kind": kind,
        "metadata": meta,
        "spec": spec if spec is not None else {"repositories": [{"name": r} for r in repos]},
    }


class FakeApi:
    """Collections by path; watches replay scripted events, then end (like a server timeout)."""

    def __init__(self, served=("ostiary.dev/v1",)):
        self.served = set(served)
        self.items: dict[str, list[dict]] = {}
        self.rv = 10
        self.watch_scripts: dict[str, list] = {}
        self.watch_calls: list[tuple[str, str]] = []
        self.lists: list[str] = []
        self.events: list[dict] = []
        self.patches: list[tuple[str, dict]] = []
        self.gets: list[str] = []

    def group_version_served(self, group, version):
        return f"{group}/{version}" in self.served

    def list(self, path):
        self.lists.append(path)
        group_version = path.split("/apis/")[1].rsplit("/", 1)[0]
        if group_version not in self.served:
            raise KubeError(404, "not found")
        return {"items": list(self.items.get(path, [])), "metadata": {"resourceVersion": str(self.rv)}}

    def watch(self, path, resource_version, timeout_seconds):
        self.watch_calls.append((path, resource_version))
        script = self.watch_scripts.get(path) or []
        step = script.pop(0) if script else None
        if isinstance(step, Exception):
            raise step
        yield from step or []
        time.sleep(0.01)

    def create(self, path, body):
        self.events.append(body)
        return body

    def patch(self, path, body, content_type=None):
        self.patches.append((path, body))
        return body

    def get(self, path):
        self.gets.append(path)
        return {"metadata": {"name": path.rsplit("/", 1)[1]}}


class FakeSync:
    def __init__(self):
        self.modules: dict[str, object] = {}
        self.calls: list[tuple] = []
        self.refuse: set[str] = set()
        self.refuse_source: str | None = None  # only modules whose text holds this are refused
        self.down = False
        self.lost = False
        # PolicySync's hold: the ids of the modules asked for that OPA does not hold, and why
        self.held: set[str] = set()
        self.held_back: str | None = None

    def not_held(self):
        return set(self.held) if self.held_back is not None else set()

    def _check(self, ids, sources=None):
        if self.down:
            raise OpaError("OPA at http://127.0.0.1:1 is unreachable: ConnectionError")
        for mid, text in zip(ids, sources or [""] * len(ids), strict=True):
            if mid in self.refuse and (self.refuse_source is None or self.refuse_source in text):
                raise OpaModuleRefused(mid, f"{mid}:3: rego_parse_error: unexpected")

    def replace_all(self, modules):
        modules = list(modules)
        self._check([m.id for m in modules], [m.source for m in modules])
        self.calls.append(("replace_all", sorted(m.id for m in modules)))
        self.modules = {m.id: m for m in modules}

    def upsert(self, module):
        self._check([module.id], [module.source])
        self.calls.append(("upsert", module.id))
        self.modules[module.id] = module

    def remove(self, module_id):
        self._check([])
        self.calls.append(("remove", module_id))
        self.modules.pop(module_id, None)

    def resync(self):
        self._check([])
        self.calls.append(("resync",))
        self.lost = False

    def repair(self):
        """PolicySync.repair: the difference it found and repaired, or None."""
        self._check([])
        if not self.lost:
            return None
        self.calls.append(("resync",))
        self.lost = False
        return "lost"


def source(api, sync, opa_check_interval: float = 5.0, **kw) -> KubePolicySource:
    return KubePolicySource(
        api,
        sync=sync,
        translate=kw.pop("translate", translate),
        parse=parse_policy_document,
        opa_repair=sync.repair,
        timings=KubeTimings(retry_interval=0.01, opa_check_interval=opa_check_interval),
        **kw,
    )


CIP_PATH = collection_path(OSTIARY_CIP)
IP_PATH = collection_path(OSTIARY_IP)


# ----------------------------------------------------------------------------- pure helpers


def test_as_document_keeps_only_what_the_parser_reads():
    doc = as_document(OSTIARY_CIP, {**policy(), "status": {"conditions": []}})
    assert doc == {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ClusterImagePolicy",
        "metadata": {"name": "base", "uid": "uid-base"},
        "spec": {"repositories": [{"name": "*"}]},
    }
    parse_policy_document(doc, "x")  # and the strict parser takes it


def test_a_refusal_is_typed_and_names_the_module_but_unreachable_is_not():
    exc = OpaModuleRefused("ostiary_policies/cluster/a", "ostiary_policies/cluster/ab:3: parse error")
    assert exc.module_id == "ostiary_policies/cluster/a" and "parse error" in exc.errors
    assert isinstance(exc, OpaError)
    assert not isinstance(OpaError("OPA at http://127.0.0.1:8181 is unreachable"), OpaModuleRefused)


def test_the_collection_path_of_a_namespaced_kind_lists_all_namespaces():
    assert IP_PATH == "/apis/ostiary.dev/v1/imagepolicies"
    assert resource_path(OSTIARY_IP, "ns", "p") == "/apis/ostiary.dev/v1/namespaces/ns/imagepolicies/p"
    assert resource_path(OSTIARY_CIP, None, "p") == "/apis/ostiary.dev/v1/clusterimagepolicies/p"


# ----------------------------------------------------------------------------- full sync


def test_full_sync_pushes_every_policy_at_once():
    api, sync = FakeApi(), FakeSync()
    api.items[CIP_PATH] = [policy()]
    api.items[IP_PATH] = [policy("ImagePolicy", "team", "apps")]
    versions = source(api, sync).full_sync()
    assert sync.calls == [
        ("replace_all", ["ostiary_policies/cluster/base", "ostiary_policies/namespaced/apps/team"])
    ]
    assert set(versions) == {OSTIARY_IP, OSTIARY_CIP}


def test_missing_ostiary_crds_fail_the_sync_naming_the_fix():
    api, sync = FakeApi(served=()), FakeSync()
    with pytest.raises(KubeError, match="install the Ostiary CRDs"):
        source(api, sync).full_sync()


def test_portieris_groups_are_read_only_when_served():
    api, sync = FakeApi(), FakeSync()
    source(api, sync).full_sync()
    assert not any("portieris" in p or "securityenforcement" in p for p in api.lists)

    api.served.add("portieris.cloud.ibm.com/v1")
    api.items[collection_path(PORTIERIS_CIP)] = [policy(name="legacy", group="portieris.cloud.ibm.com/v1")]
    sync2 = FakeSync()
    source(api, sync2).full_sync()
    assert "ostiary_policies/cluster/legacy" in sync2.modules


def test_ready_only_after_the_first_full_sync():
    api, sync = FakeApi(), FakeSync()
    sync.down = True
    src = source(api, sync, opa_check_interval=0.05)
    src.start()
    try:
        assert not src.wait_ready(0.2)
        sync.down = False
        assert src.wait_ready(5)
    finally:
        src.stop()


# ----------------------------------------------------------------------------- watch events


def synced(api=None, sync=None, **kw):
    api, sync = api or FakeApi(), sync or FakeSync()
    api.items.setdefault(CIP_PATH, [policy()])
    src = source(api, sync, **kw)
    src.full_sync()
    sync.calls.clear()
    api.events.clear()
    api.patches.clear()
    return api, sync, src


def test_added_modified_deleted_reach_opa_one_module_at_a_time():
    _api, sync, src = synced()
    src.handle_event(OSTIARY_IP, "ADDED", policy("ImagePolicy", "team", "apps"))
    src.handle_event(
        OSTIARY_IP, "MODIFIED", policy("ImagePolicy", "team", "apps", repos=("nginx",), rv="2", generation=2)
    )
    src.handle_event(OSTIARY_IP, "DELETED", policy("ImagePolicy", "team", "apps", rv="3"))
    mid = "ostiary_policies/namespaced/apps/team"
    assert sync.calls == [("upsert", mid), ("upsert", mid), ("remove", mid)]
    assert "docker.io/library/nginx" not in str(sync.modules)


def test_a_status_only_change_pushes_nothing_and_writes_nothing():
    api, sync, src = synced()
    obj = policy(rv="5")
    obj["status"] = {
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Applied",
                "message": "in force as OPA module ostiary_policies/cluster/base",
                "observedGeneration": 1,
            }
        ]
    }
    src.handle_event(OSTIARY_CIP, "MODIFIED", obj)
    assert sync.calls == []
    assert api.patches == []


def test_an_invalid_policy_is_reported_and_not_in_force():
    api, sync, src = synced()
    bad = policy(name="bad", spec={"repositories": [{"name": "nginx", "policy": {"trsut": {}}}]})
    src.handle_event(OSTIARY_CIP, "ADDED", bad)
    assert "ostiary_policies/cluster/bad" not in sync.modules
    assert [e["reason"] for e in api.events] == ["PolicyRejected"]
    event = api.events[0]
    assert event["involvedObject"]["name"] == "bad" and event["metadata"]["namespace"] == "default"
    assert "trsut" in event["message"]
    ((path, body),) = api.patches
    assert path.endswith("/clusterimagepolicies/bad/status")
    assert body["status"]["conditions"][0]["status"] == "False"
    # The same failure again is not reported twice.
    src.handle_event(
        OSTIARY_CIP, "MODIFIED", {**bad, "metadata": {**bad["metadata"], "resourceVersion": "9"}}
    )
    assert len(api.events) == 1


def test_a_policy_that_turns_invalid_is_taken_out_of_force():
    api, sync, src = synced()
    assert "ostiary_policies/cluster/base" in sync.modules
    src.handle_event(
        OSTIARY_CIP, "MODIFIED", policy(rv="2", generation=2, spec={"repositories": [{"name": "a b"}]})
    )
    assert "ostiary_policies/cluster/base" not in sync.modules
    assert api.events and api.events[0]["reason"] == "PolicyRejected"


def test_a_module_opa_refuses_is_reported_and_the_rest_applies():
    api, sync = FakeApi(), FakeSync()
    api.items[CIP_PATH] = [policy(), policy(name="broken")]
    sync.refuse.add("ostiary_policies/cluster/broken")
    src = source(api, sync)
    src.full_sync()
    assert set(sync.modules) == {"ostiary_policies/cluster/base"}
    assert [e["involvedObject"]["name"] for e in api.events] == ["broken"]
    assert "OPA refused" in api.events[0]["message"]
    # and an event for a module OPA refuses leaves the previous version out of force too
    src.handle_event(OSTIARY_CIP, "MODIFIED", policy(rv="3", generation=2, repos=("quay.io/*",)))
    assert "ostiary_policies/cluster/base" in sync.modules
    sync.refuse.add("ostiary_policies/cluster/base")
    src.handle_event(OSTIARY_CIP, "MODIFIED", policy(rv="4", generation=3, repos=("gcr.io/*",)))
    assert "ostiary_policies/cluster/base" not in sync.modules


def test_opa_unreachable_during_an_event_is_not_blamed_on_the_policy():
    api, sync, src = synced()
    sync.down = True
    src.handle_event(OSTIARY_CIP, "ADDED", policy(name="new"))
    assert api.events == []
    sync.down = False
    src.handle_event(OSTIARY_CIP, "ADDED", policy(name="newer"))  # the next change pushes everything
    assert sync.calls[-1][0] == "replace_all"
    assert {"ostiary_policies/cluster/new", "ostiary_policies/cluster/newer"} <= set(sync.modules)


def test_the_ostiary_group_wins_over_a_portieris_copy_of_the_same_name():
    api, sync = FakeApi(served=("ostiary.dev/v1", "portieris.cloud.ibm.com/v1")), FakeSync()
    api.items[CIP_PATH] = [policy(name="same", repos=("quay.io/*",))]
    api.items[collection_path(PORTIERIS_CIP)] = [
        policy(name="same", group="portieris.cloud.ibm.com/v1", uid="portieris-uid")
    ]
    source(api, sync).full_sync()
    assert "quay.io" in sync.modules["ostiary_policies/cluster/same"].source
    assert [e["involvedObject"]["apiVersion"] for e in api.events] == ["portieris.cloud.ibm.com/v1"]
    assert "conflicts with" in api.events[0]["message"]


# ----------------------------------------------------------------------------- watching and recovery


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_a_watch_error_relists_and_pushes_everything_again():
    api, sync, src = synced()
    api.watch_scripts[CIP_PATH] = [
        [("ADDED", policy(name="w1", rv="11"))],
        WatchExpired(410, "too old"),
        KubeError(0, "connection reset"),
    ]
    api.items[CIP_PATH] = [policy(), policy(name="w1", rv="11"), policy(name="w2", rv="12")]
    thread = threading.Thread(target=src._watch_loop, args=(OSTIARY_CIP, "10"), daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: sum(1 for c in sync.calls if c[0] == "replace_all") >= 2)
    finally:
        src.stop()
    assert ("upsert", "ostiary_policies/cluster/w1") in sync.calls
    assert "ostiary_policies/cluster/w2" in sync.modules
    assert api.watch_calls[0] == (CIP_PATH, "10")
    assert api.watch_calls[1] == (CIP_PATH, "11")  # resumes from the last event seen


def test_a_deleted_policy_disappears_on_relist():
    api, sync, src = synced()
    api.items[CIP_PATH] = []
    src._relist(OSTIARY_CIP)
    assert sync.modules == {}


def test_opa_losing_its_modules_triggers_a_resync():
    _api, sync, src = synced()
    assert src.check_opa()
    sync.lost = True
    assert not src.check_opa()
    assert ("resync",) in sync.calls


def test_discovery_starts_watching_a_portieris_group_that_appears():
    api, sync, src = synced()
    api.served.add("portieris.cloud.ibm.com/v1")
    api.items[collection_path(PORTIERIS_CIP)] = [policy(name="legacy", group="portieris.cloud.ibm.com/v1")]
    src.discover()
    try:
        assert "ostiary_policies/cluster/legacy" in sync.modules
        assert wait_for(lambda: any(p == collection_path(PORTIERIS_CIP) for p, _ in api.watch_calls))
    finally:
        src.stop()


# ----------------------------------------------------------------------------- object store


def test_secrets_are_read_one_by_one_and_cached_briefly():
    now = [0.0]
    api = FakeApi()
    store = KubeObjectStore(api, ttl=10, clock=lambda: now[0])
    assert store.get_secret("ns", "alice")["metadata"]["name"] == "alice"
    assert store.get_secret("ns", "alice")
    assert api.gets == ["/api/v1/namespaces/ns/secrets/alice"]
    now[0] = 11
    store.get_service_account("ns", "default")
    store.get_secret("ns", "alice")
    assert api.gets[1:] == [
        "/api/v1/namespaces/ns/serviceaccounts/default",
        "/api/v1/namespaces/ns/secrets/alice",
    ]


# ----------------------------------------------------------------------------- the JSON client's pure parts


def test_watch_errors_become_exceptions_and_410_asks_for_a_relist():
    from app.kube.client import _watch_event

    assert _watch_event({"type": "ADDED", "object": {"kind": "X"}}) == ("ADDED", {"kind": "X"})
    with pytest.raises(WatchExpired):
        _watch_event({"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}})
    with pytest.raises(KubeError) as caught:
        _watch_event({"type": "ERROR", "object": {"code": 500, "message": "boom"}})
    assert caught.value.status == 500 and not isinstance(caught.value, WatchExpired)


def test_object_paths_for_core_and_group_kinds():
    from app.kube.client import object_path

    assert object_path("v1", "secrets", "ns", "a") == "/api/v1/namespaces/ns/secrets/a"
    assert object_path("apps/v1", "replicasets", "ns", "web") == "/apis/apps/v1/namespaces/ns/replicasets/web"
    assert (
        object_path("ostiary.dev/v1", "clusterimagepolicies", None)
        == "/apis/ostiary.dev/v1/clusterimagepolicies"
    )
    assert object_path("v1", "secrets", "ns", "a/../b") == "/api/v1/namespaces/ns/secrets/a%2F..%2Fb"


def test_the_runtime_wires_source_store_and_owners_to_one_api():
    from app.kube.runtime import KubeRuntime

    api, sync = FakeApi(), FakeSync()
    api.items[CIP_PATH] = [policy()]
    runtime = KubeRuntime(
        kubeconfig=None, system_namespace="ostiary-system", sync=sync, translate=translate, api=api
    )
    assert not runtime.ready
    runtime.start()
    try:
        assert runtime.wait_ready(5)
        assert runtime.ready and "ostiary_policies/cluster/base" in sync.modules
        assert runtime.store.get_secret("ns", "s") is not None
        assert runtime.owners.approved_by_owner({"metadata": {}}, "ns", []) is None
    finally:
        runtime.stop()


# ----------------------------------------------------------------------------- a refused namespace fails closed

REFUSAL = "ostiary_policies/namespaced/{}/{}"


def _refused(sync, namespace, name) -> str:
    module = sync.modules.get(REFUSAL.format(namespace, name))
    assert module is not None and _is_refusal(module), sync.modules.keys()
    return module.source


def test_an_invalid_image_policy_denies_its_namespace_not_the_others():
    """The namespace is never left to the ClusterImagePolicies: a refusal takes the policy's place."""
    api, sync = FakeApi(), FakeSync()
    api.items[CIP_PATH] = [policy()]
    api.items[IP_PATH] = [
        policy("ImagePolicy", "team", "apps", spec={"repositories": [{"name": "a b"}]}),
        policy("ImagePolicy", "good", "apps", repos=("quay.io/*",)),
        policy("ImagePolicy", "other", "web", repos=("gcr.io/*",)),
    ]
    src = source(api, sync)
    src.full_sync()
    assert "whitespace" in _refused(sync, "apps", "team")
    assert "gcr.io" in sync.modules["ostiary_policies/namespaced/web/other"].source
    assert "ostiary_policies/cluster/base" in sync.modules
    (event,) = api.events
    assert (
        event["involvedObject"]["name"] == "team"
        and "every image in namespace apps is denied" in (event["message"])
    )
    assert list(src.refused()) == ["ImagePolicy.ostiary.dev apps/team"]
    # fixed: the refusal goes, the policy is in force
    src.handle_event(OSTIARY_IP, "MODIFIED", policy("ImagePolicy", "team", "apps", rv="5", generation=2))
    assert not _is_refusal(sync.modules[REFUSAL.format("apps", "team")])
    assert src.refused() == {}


def test_an_image_policy_over_a_bound_or_refused_by_opa_denies_its_namespace():
    from app.policies.bounds import Bounds, bounded

    api, sync = FakeApi(), FakeSync()
    api.items[IP_PATH] = [
        policy("ImagePolicy", "huge", "apps", repos=tuple(f"r{i}.example.com/*" for i in range(20))),
        policy("ImagePolicy", "broken", "ops", repos=("quay.io/*",)),
        policy("ImagePolicy", "fine", "web", repos=("gcr.io/*",)),
    ]
    # OPA refuses the policy's own module (it names quay.io), not the refusal put at its id
    sync.refuse.add(REFUSAL.format("ops", "broken"))
    sync.refuse_source = "quay.io"
    bounds = Bounds(max_entries=10)
    src = source(api, sync, bounds=bounds, translate=bounded(translate, bounds))
    src.full_sync()
    assert "over the bound of 10 entries" in _refused(sync, "apps", "huge")
    assert "OPA refused" in _refused(sync, "ops", "broken")
    assert "gcr.io" in sync.modules["ostiary_policies/namespaced/web/fine"].source


def test_one_refusal_per_namespace_whatever_the_number_of_refused_policies():
    api, sync = FakeApi(), FakeSync()
    api.items[IP_PATH] = [
        policy("ImagePolicy", f"bad{i}", "apps", spec={"repositories": [{"name": "a b"}]}) for i in range(5)
    ]
    src = source(api, sync)
    src.full_sync()
    refusals = [mid for mid, m in sync.modules.items() if _is_refusal(m)]
    assert refusals == [REFUSAL.format("apps", "bad0")]
    assert "bad4" in sync.modules[refusals[0]].source
    assert len(src.refused()) == 5 and len(api.events) == 5


def test_a_portieris_twin_of_a_policy_in_force_refuses_nothing():
    api, sync = FakeApi(served=("ostiary.dev/v1", "portieris.cloud.ibm.com/v1")), FakeSync()
    api.items[IP_PATH] = [policy("ImagePolicy", "same", "apps", repos=("quay.io/*",))]
    api.items[collection_path(POLICY_KINDS[2])] = [
        policy(
            "ImagePolicy",
            "same",
            "apps",
            group="portieris.cloud.ibm.com/v1",
            uid="p",
            spec={"repositories": [{"name": "a b"}]},
        )
    ]
    src = source(api, sync)
    src.full_sync()
    assert "quay.io" in sync.modules[REFUSAL.format("apps", "same")].source
    assert src.refused() == {}


def test_a_held_back_policy_says_so_in_its_status_and_returns_to_applied_when_pushed():
    api, sync = FakeApi(), FakeSync()
    api.items[IP_PATH] = [policy("ImagePolicy", "big", "apps"), policy("ImagePolicy", "ok", "web")]
    src = source(api, sync)
    src.full_sync()

    def ready(name):
        conditions = [b["status"]["conditions"][0] for p, b in api.patches if p.endswith(f"/{name}/status")]
        return conditions[-1]

    assert ready("big")["reason"] == "Applied" and ready("ok")["reason"] == "Applied"
    # the set is held back (OPA died of it): a repair round finds OPA exact on the last set that fitted
    sync.held, sync.held_back = {"ostiary_policies/namespaced/apps/big"}, "OPA died 2 times ..."
    src.check_opa()
    big = ready("big")
    assert (big["status"], big["reason"]) == ("False", "PolicySetHeldBack")
    assert "not in force: OPA keeps the last policy set that fitted: OPA died 2 times" in big["message"]
    assert ready("ok")["reason"] == "Applied"
    patches = len(api.patches)
    src.check_opa()
    assert len(api.patches) == patches  # nothing new: nothing written
    # pushed at last (the cause removed, or its retry time came): Applied again
    sync.held, sync.held_back = set(), None
    src.check_opa()
    assert (ready("big")["status"], ready("big")["reason"]) == ("True", "Applied")


def test_a_held_back_policy_set_is_reported_on_the_policies_left_out():
    api, sync = FakeApi(), FakeSync()
    api.items[CIP_PATH] = [policy()]
    api.items[IP_PATH] = [policy("ImagePolicy", "big", "apps"), policy("ImagePolicy", "ok", "web")]
    src = source(api, sync)
    src.full_sync()
    api.events.clear()
    src.report_held_back("OPA died 2 times ...", {"ostiary_policies/namespaced/apps/big"})
    (event,) = api.events
    assert event["reason"] == "PolicySetHeldBack" and event["involvedObject"]["name"] == "big"
    assert "OPA keeps the last policy set that fitted: OPA died 2 times" in event["message"]
