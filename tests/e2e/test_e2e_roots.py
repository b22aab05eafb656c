"""Trust-on-first-use records in the cluster (TrustRecord, app/kube/records.py) against the real
kube-apiserver, written with the chart's RBAC (the `ostiary` service-account token):

- two processes, many concurrent first uses of one (server, GUN), each with its own root: one
  object is created, every process ends up seeing the same root, no version is ever lowered;
- nobody but Ostiary's service account may write TrustRecords;
- through `ostiary serve --kube` (the world Ostiary): an admitted signed pod leaves a record;
- in process, with the real notary-server: first use, recorded, a re-key denied with a Warning Event
  naming the GUN, and a deleted record re-created on the next use.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time

import pytest

from app.kube.client import KubeError, RestKubeApi
from app.kube.records import KubeRecordStore, object_name
from app.notary.state import TrustRecord

pytestmark = [pytest.mark.e2e]

SYSTEM_NS = "ostiary-system"
SERVER = "https://notary.e2e.example"


@pytest.fixture(scope="module")
def records_rbac(control_plane, admin_client, crds):
    from kubernetes import client

    from tests.e2e.webhook import apply_rbac, chart_rbac

    with contextlib.suppress(Exception):  # exists when another fixture made it
        client.CoreV1Api(admin_client).create_namespace({"metadata": {"name": SYSTEM_NS}})
    apply_rbac(admin_client, chart_rbac())
    return str(control_plane.kubeconfig("ostiary"))


def fake_record(gun: str, root: bytes, versions: dict, by: str) -> TrustRecord:
    return TrustRecord(
        server=SERVER,
        gun=gun,
        root=root,
        root_keyids=("ab" * 32,),
        versions=versions,
        first_seen_at="2026-01-01T00:00:00Z",
        first_seen_by=by,
        updated_at="2026-01-01T00:00:00Z",
        updated_by=by,
    )


def _first_use(kubeconfig: str, gun: str, worker: int, rounds: int, start, out) -> None:
    store = KubeRecordStore(RestKubeApi.from_kubeconfig(kubeconfig), SYSTEM_NS)
    mine = f'{{"root-of": {worker}}}'.encode()
    start.wait()
    seen = set()
    for n in range(rounds):
        version = n * 10 + worker

        def change(current, version=version):
            if current is None:
                return fake_record(gun, mine, {"root": 1, "timestamp": version}, f"w{worker}")
            return current.with_versions({"timestamp": version}, f"w{worker}", "t")

        seen.add(store.update(SERVER, gun, change).root)
    out.put((worker, sorted(seen)))


def test_concurrent_first_use_from_two_processes_creates_one_record(records_rbac) -> None:
    gun = f"registry.e2e.example/race/{time.monotonic_ns()}"
    ctx = multiprocessing.get_context("spawn")  # fresh interpreters: no shared connection pool
    start, out = ctx.Event(), ctx.Queue()
    rounds = 15
    procs = [
        ctx.Process(target=_first_use, args=(records_rbac, gun, w, rounds, start, out)) for w in range(2)
    ]
    for p in procs:
        p.start()
    time.sleep(3)  # both interpreters up and waiting
    start.set()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    roots = {root for seen in results.values() for root in seen}
    assert len(roots) == 1, f"the processes saw different roots: {results}"
    store = KubeRecordStore(RestKubeApi.from_kubeconfig(records_rbac), SYSTEM_NS)
    listed = [r for r in store.records() if r.gun == gun]
    assert len(listed) == 1 and listed[0].root in roots
    assert listed[0].versions["timestamp"] == (rounds - 1) * 10 + 1  # the highest either wrote


def test_only_ostiary_may_write_trust_records(records_rbac, control_plane) -> None:
    api_client = control_plane.api_client("admin")
    api_client.set_default_header("Impersonate-User", "mallory")
    api = RestKubeApi(api_client)
    store = KubeRecordStore(api, SYSTEM_NS)
    with pytest.raises(Exception) as refused:
        store.update(
            SERVER,
            "registry.e2e.example/rbac/app",
            lambda current: fake_record("registry.e2e.example/rbac/app", b"{}", {"root": 1}, "mallory"),
        )
    assert "403" in str(refused.value) and "trustrecords.ostiary.dev" in str(refused.value)
    with pytest.raises(KubeError) as read:
        api.list(f"/apis/ostiary.dev/v1/namespaces/{SYSTEM_NS}/trustrecords")
    assert read.value.status == 403


@pytest.mark.world
def test_ostiary_serve_kube_records_what_it_admits(
    kube, world_namespace, world_scenario, world_ostiary, records_rbac
) -> None:
    from tests.e2e.test_e2e_trust import trust_policy

    signed = world_scenario["signed"]
    trust_policy(kube, world_namespace, world_scenario)
    kube.pod(world_namespace, signed.reference)
    store = KubeRecordStore(RestKubeApi.from_kubeconfig(records_rbac), SYSTEM_NS)
    server = world_scenario.notary_url
    record = store.get(server, signed.gun)
    assert record is not None, f"no TrustRecord for {signed.gun}: {[r.gun for r in store.records()]}"
    served = world_scenario.world.tuf(signed.repo, "root").json()["signed"]
    assert list(record.root_keyids) == served["roles"]["root"]["keyids"]
    assert record.versions["targets"] >= 1 and " pid " in record.first_seen_by
    # and the operator sees it with the CLI
    import json
    import subprocess

    from tests.e2e.webhook import OSTIARY_BIN

    listed = subprocess.run(
        [str(OSTIARY_BIN), "trust", "pins", "--kube", "--kubeconfig", records_rbac, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    by_gun = {item["gun"]: item for item in json.loads(listed.stdout)}
    assert by_gun[signed.gun]["rootKeyIDs"] == list(record.root_keyids)


@pytest.mark.world
def test_re_key_is_denied_with_an_event_and_a_deleted_record_is_re_created(
    records_rbac, admin_client, world_scenario
) -> None:
    from kubernetes import client

    from app.images import parse_image
    from app.notary.service import TrustRequest, TrustService
    from app.notary.settings import TrustSettings
    from tests.world.test_roots import Publisher

    w = world_scenario.world
    repo = f"e2e-roots/rekey-{time.monotonic_ns()}"
    gun = w.gun(repo)
    img = w.push(repo, "v1", seed=repo)
    first = Publisher(w, f"e2e-{time.monotonic_ns()}")
    first.init(gun)
    first.sign(gun, "v1", img.digest, img.size)
    store = KubeRecordStore(RestKubeApi.from_kubeconfig(records_rbac), SYSTEM_NS)

    def gather() -> dict:
        service = TrustService(TrustSettings(cache_entries=0), ca_file=w.ca_file, records=store)
        try:
            [facts] = service.gather(
                [TrustRequest(parse_image(f"{gun}:v1"), w.notary_url)], time.monotonic() + 20
            )
        finally:
            service.close()
        return facts

    assert gather()["root_trust"] == "first-use"
    assert gather()["root_trust"] == "recorded"
    first.notary("delete", gun, "--remote")
    again = Publisher(w, f"e2e-rekeyed-{time.monotonic_ns()}")
    again.init(gun)
    again.sign(gun, "v1", img.digest, img.size)
    denied = gather()
    assert (
        denied["verified"] is False and "not the recorded root" in denied["error"] and gun in denied["error"]
    )
    name = object_name(w.notary_url, gun)
    events = (
        client.CoreV1Api(admin_client)
        .list_namespaced_event(SYSTEM_NS, field_selector=f"involvedObject.name={name}")
        .items
    )
    assert any(e.reason == "RootNotTrusted" and gun in e.message and e.type == "Warning" for e in events)
    # the operator accepts the re-key: kubectl delete trustrecord
    client.CustomObjectsApi(admin_client).delete_namespaced_custom_object(
        "ostiary.dev", "v1", SYSTEM_NS, "trustrecords", name
    )
    assert gather()["root_trust"] == "first-use"
    recreated = store.get(w.notary_url, gun)
    assert recreated.how == "first-use"
    assert list(recreated.root_keyids) == w.tuf(repo, "root").json()["signed"]["roles"]["root"]["keyids"]


def test_trust_unpin_kube_removes_the_record_with_the_operators_credentials(
    records_rbac, control_plane
) -> None:
    """`ostiary trust unpin --kube` (the documented way to accept a re-keyed repository in a cluster)
    deletes the GUN's TrustRecord through the real API server; Ostiary's own role cannot."""
    import subprocess

    from app.notary.servers import normalize_trust_server
    from tests.e2e.webhook import OSTIARY_BIN

    server, error = normalize_trust_server(SERVER)
    assert error is None
    gun = f"registry.e2e.example/unpin/app-{time.monotonic_ns()}"
    other = f"{gun}-kept"
    store = KubeRecordStore(RestKubeApi.from_kubeconfig(records_rbac), SYSTEM_NS)
    for name in (gun, other):
        store.update(server, name, lambda current, name=name: fake_record(name, b"{}", {"root": 1}, "e2e"))
    admin = str(control_plane.kubeconfig("admin"))

    def unpin(kubeconfig: str, name: str = gun) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                str(OSTIARY_BIN),
                "trust",
                "unpin",
                f"{name}:v1",
                "--trust-server",
                SERVER,
                "--kube",
                "--kubeconfig",
                kubeconfig,
                "--system-namespace",
                SYSTEM_NS,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    as_ostiary = unpin(records_rbac)
    assert as_ostiary.returncode == 1 and "403" in as_ostiary.stderr, as_ostiary.stderr
    assert store.get(server, gun) is not None

    removed = unpin(admin)
    assert removed.returncode == 0, removed.stderr
    assert "removed the trust record" in removed.stdout and gun in removed.stdout
    assert store.get(server, gun) is None
    assert store.get(server, other) is not None, "only that GUN's record is removed"
    again = unpin(admin)
    assert again.returncode == 1 and "no trust record" in again.stderr, again.stderr


@pytest.mark.world
def test_a_dry_run_leaves_no_trust_record(kube, world_namespace, world_scenario, world_ostiary, records_rbac):
    """`kubectl apply --dry-run=server` of a Pod with a never-seen signed repository: admitted as a
    dry run, and no TrustRecord is created (the webhook promises sideEffects: None)."""
    from tests.e2e.test_e2e_trust import trust_policy

    w = world_scenario.world
    repo = f"ostiary/dry-run-{time.monotonic_ns()}"  # under the trust policy's ostiary/*
    img = w.push(repo, "v1", seed=repo)
    w.sign(repo, "v1", img.digest, img.size)
    trust_policy(kube, world_namespace, world_scenario)
    reference = f"{w.gun(repo)}:v1"
    store = KubeRecordStore(RestKubeApi.from_kubeconfig(records_rbac), SYSTEM_NS)
    pod = kube.pod(world_namespace, reference, dry_run=True)
    assert pod["spec"]["containers"][0]["image"] == f"{reference}@{img.digest}"  # decided and pinned
    assert store.get(world_scenario.notary_url, w.gun(repo)) is None
    kube.pod(world_namespace, reference)  # the real creation records the first use
    assert store.get(world_scenario.notary_url, w.gun(repo)) is not None
