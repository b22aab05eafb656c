"""The audit (issue 25) through the real kube-apiserver, a real notary-server whose data changes after
admission, and the real OPA: pods admitted by the webhook, then the world changes under them (a tag
re-signed to another digest, a target removed, a policy tightened, a signer key removed); one audit
shows each as fail with the reason, fixing it makes it pass, a trust server or OPA that is down
gives error (never pass), the PolicyReports say exactly that, and nothing else in the cluster changes.

The audits run as the chart's ServiceAccount with the chart's RBAC (audit.enabled=true), so these
tests also prove that role is enough.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.request
import uuid
from xml.etree import ElementTree

import pytest
import yaml

from app.audit.config import AuditConfig
from app.audit.engine import Auditor, run_audit
from app.audit.once import audit_once
from app.audit.reports import REPORT_NAME, ReportWriter
from app.kube.client import RestKubeApi
from app.runtime import Runtime, ServeConfig
from tests.e2e.cluster import REPO, free_port, start_process, tool
from tests.e2e.k8s import eventually, install_crds, load_documents

pytestmark = [pytest.mark.e2e, pytest.mark.world]

REPORT_CRDS = REPO / "tests" / "e2e" / "crds" / "policyreports.yaml"


def audit_rbac() -> list[dict]:
    out = subprocess.run(
        [
            tool("helm"),
            "template",
            "ostiary",
            str(REPO / "helm" / "ostiary"),
            "--namespace",
            "ostiary-system",
            "--set",
            "audit.enabled=true",
            "--show-only",
            "templates/rbac.yaml",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [
        d for d in yaml.safe_load_all(out) if d and d["metadata"]["name"].endswith(("-audit", "-audit-lease"))
    ]


@pytest.fixture(scope="module")
def audit_cluster(admin_client, crds, world_ostiary):
    """The report CRDs and the chart's audit RBAC in the cluster."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    install_crds(admin_client, load_documents(REPORT_CRDS))
    rbac = client.RbacAuthorizationV1Api(admin_client)
    for doc in audit_rbac():
        create = {
            "ClusterRole": lambda d: rbac.create_cluster_role(d),
            "ClusterRoleBinding": lambda d: rbac.create_cluster_role_binding(d),
            "Role": lambda d: rbac.create_namespaced_role("ostiary-system", d),
            "RoleBinding": lambda d: rbac.create_namespaced_role_binding("ostiary-system", d),
        }[doc["kind"]]
        try:
            create(doc)
        except ApiException as exc:
            if exc.status != 409:
                raise
    yield admin_client
    # The audit's RBAC goes with this module: the chart grants it only with audit.enabled, and later
    # tests hold Ostiary's identity to the chart's least privilege without it.
    for doc in audit_rbac():
        name = doc["metadata"]["name"]
        delete = {
            "ClusterRole": lambda n: rbac.delete_cluster_role(n),
            "ClusterRoleBinding": lambda n: rbac.delete_cluster_role_binding(n),
            "Role": lambda n: rbac.delete_namespaced_role(n, "ostiary-system"),
            "RoleBinding": lambda n: rbac.delete_namespaced_role_binding(n, "ostiary-system"),
        }[doc["kind"]]
        try:
            delete(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def config(control_plane, scenario, *extra_servers: str, **kw) -> ServeConfig:
    return ServeConfig(
        kube=True,
        kubeconfig=str(control_plane.kubeconfig("ostiary")),
        ca_file=str(scenario.ca_file),
        system_namespace="ostiary-system",
        trust_server_allow=(scenario.notary_url, *extra_servers),
        decision_log="off",
        **kw,
    )


def lines(run, namespace: str) -> set[tuple[str, str, str, str]]:
    """(object, image, result, message) of one namespace's results."""
    return {
        (f"{r.kind}/{r.name}", r.image, r.result, r.message) for r in run.results if r.namespace == namespace
    }


def snapshot(admin_client, namespace: str) -> dict:
    """Every object the audit must leave alone, by resourceVersion: the namespace's pods, secrets and
    policies, the trust records, and the Leases."""
    from kubernetes import client

    core, custom = client.CoreV1Api(admin_client), client.CustomObjectsApi(admin_client)
    out = {}
    for pod in core.list_namespaced_pod(namespace).items:
        out[f"pod/{pod.metadata.name}"] = pod.metadata.resource_version
    for secret in core.list_namespaced_secret(namespace).items:
        out[f"secret/{secret.metadata.name}"] = secret.metadata.resource_version
    for policy in custom.list_namespaced_custom_object("ostiary.dev", "v1", namespace, "imagepolicies")[
        "items"
    ]:
        out[f"policy/{policy['metadata']['name']}"] = policy["metadata"]["resourceVersion"]
    for record in custom.list_namespaced_custom_object("ostiary.dev", "v1", "ostiary-system", "trustrecords")[
        "items"
    ]:
        out[f"record/{record['metadata']['name']}"] = record["metadata"]["resourceVersion"]
    return out


class AuditWorld:
    """Images of its own (unique repositories) in the shared notary world, admitted into one namespace."""

    def __init__(self, kube, namespace: str, scenario):
        self.kube, self.namespace, self.scenario, self.world = kube, namespace, scenario, scenario.world
        self.host = scenario.registry_host
        u = uuid.uuid4().hex[:6]
        self.repos = {key: f"audit/{u}-{key}" for key in ("resigned", "revoked", "tightened")}
        self.images = {}
        for key, repo in self.repos.items():
            image = self.world.push(repo, "v1", seed=f"{repo}-first")
            self.world.sign(repo, "v1", image.digest, image.size)
            self.images[key] = image
        self.signed_by_alice = scenario["signer-pem"]
        self.secret("alice-key", "alice", scenario.alice_pem)
        self.secret("mallory-key", "mallory", scenario.mallory_pem)

    def ref(self, key: str) -> str:
        return f"{self.host}/{self.repos[key]}:v1"

    def pinned(self, key: str) -> str:
        return f"{self.ref(key)}@{self.images[key].digest}"

    def secret(self, name: str, signer: str, pem: str) -> None:
        self.kube.core.create_namespaced_secret(
            self.namespace, {"metadata": {"name": name}, "data": {"name": b64(signer), "publicKey": b64(pem)}}
        )

    def policy(self, *, tightened: bool = False, server: dict | None = None) -> None:
        def entry(name: str, signers: list[str] = (), trust_server: str | None = None) -> dict:
            trust: dict = {"enabled": True, "trustServer": trust_server or self.scenario.notary_url}
            if signers:
                trust["signerSecrets"] = [{"name": s} for s in signers]
            return {"name": name, "policy": {"trust": trust}}

        server = server or {}
        self.kube.policy(
            self.namespace,
            [
                entry(self.ref("resigned"), trust_server=server.get("resigned")),
                entry(self.ref("revoked")),
                entry(self.ref("tightened"), ["mallory-key"] if tightened else []),
                entry(self.signed_by_alice.reference, ["alice-key"]),
            ],
            name="audited",
        )

    def admit(self) -> None:
        for key in self.repos:
            pod = self.kube.pod(self.namespace, self.ref(key), name=key)
            assert pod["spec"]["containers"][0]["image"] == self.pinned(key)  # pinned at admission
        pod = self.kube.pod(self.namespace, self.signed_by_alice.reference, name="alice")
        assert pod["spec"]["containers"][0]["image"] == self.signed_by_alice.pinned
        deployment = self.kube.deployment(self.namespace, self.ref("resigned"), name="web")
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == self.pinned("resigned")


def expected(w: AuditWorld, ns: str, **verdicts: tuple[str, str]) -> set[tuple[str, str, str, str]]:
    """(object, image, result, message) for every object of `w`; pass unless `verdicts` says otherwise."""
    objects = {
        "Deployment/web": w.pinned("resigned"),
        "Pod/resigned": w.pinned("resigned"),
        "Pod/revoked": w.pinned("revoked"),
        "Pod/tightened": w.pinned("tightened"),
        "Pod/alice": w.signed_by_alice.pinned,
    }
    out = set()
    for name, image in objects.items():
        result, message = verdicts.get(name.split("/")[1], ("pass", "allowed"))
        out.add((name, image, result, message))
    return out


def report_of(admin_client, ns: str) -> dict:
    from kubernetes import client

    return client.CustomObjectsApi(admin_client).get_namespaced_custom_object(
        "wgpolicyk8s.io", "v1alpha2", ns, "policyreports", REPORT_NAME
    )


def expected_report(admin_client, w: AuditWorld, ns: str, rows: set[tuple[str, str, str, str]]) -> list[dict]:
    """The report's results as the policy working group's format spells them (timestamps aside)."""
    from kubernetes import client

    uids = {
        f"Pod/{p.metadata.name}": p.metadata.uid
        for p in client.CoreV1Api(admin_client).list_namespaced_pod(ns).items
    }
    uids["Deployment/web"] = client.AppsV1Api(admin_client).read_namespaced_deployment("web", ns).metadata.uid
    rules = {
        w.pinned("resigned"): w.ref("resigned"),
        w.pinned("revoked"): w.ref("revoked"),
        w.pinned("tightened"): w.ref("tightened"),
        w.signed_by_alice.pinned: w.signed_by_alice.reference,
    }
    results = []
    for name, image, result, message in sorted(rows):
        kind, obj = name.split("/")
        results.append(
            {
                "policy": f"ImagePolicy/{ns}/audited",
                "rule": rules[image],
                "result": result,
                "message": message,
                "source": "ostiary",
                "category": "Image trust",
                "scored": True,
                "resources": [
                    {
                        "apiVersion": "apps/v1" if kind == "Deployment" else "v1",
                        "kind": kind,
                        "namespace": ns,
                        "name": obj,
                        "uid": uids[name],
                    }
                ],
                "properties": {"container": "containers/c0", "image": image},
            }
        )
    return results


def without_timestamps(report: dict) -> list[dict]:
    for entry in report["results"]:
        stamp = entry["timestamp"]
        assert stamp["nanos"] == 0 and abs(stamp["seconds"] - time.time()) < 600, stamp
    return [{k: v for k, v in entry.items() if k != "timestamp"} for entry in report["results"]]


def test_the_audit_shows_what_changed_after_admission_and_passes_once_fixed(
    control_plane, admin_client, audit_cluster, kube, world_namespace, world_scenario
):
    ns = world_namespace
    w = AuditWorld(kube, ns, world_scenario)
    w.policy()
    w.admit()
    cfg = config(control_plane, world_scenario)
    writer = ReportWriter(RestKubeApi.from_kubeconfig(str(control_plane.kubeconfig("ostiary"))))

    before = snapshot(admin_client, ns)
    first = audit_once(cfg, ns)
    assert snapshot(admin_client, ns) == before  # the audit itself changed nothing
    assert lines(first, ns) == expected(w, ns)
    writer.write(first)
    report = report_of(admin_client, ns)
    assert without_timestamps(report) == expected_report(admin_client, w, ns, expected(w, ns))
    assert report["summary"] == {"pass": 5, "fail": 0, "warn": 0, "error": 0, "skip": 0}
    assert report["metadata"]["labels"] == {
        "app.kubernetes.io/managed-by": "ostiary",
        "ostiary.dev/audit": "true",
    }
    writes, version = writer.writes, report["metadata"]["resourceVersion"]
    writer.write(first)  # the same findings: no write at all
    assert writer.writes == writes and report_of(admin_client, ns)["metadata"]["resourceVersion"] == version

    # The world changes under the running pods.
    resigned = w.world.push(w.repos["resigned"], "v1", seed="another build")
    w.world.sign(w.repos["resigned"], "v1", resigned.digest, resigned.size)
    w.world.notary("remove", w.world.gun(w.repos["revoked"]), "v1", "-p")
    w.policy(tightened=True)
    kube.core.delete_namespaced_secret("alice-key", ns)

    before = snapshot(admin_client, ns)
    second = audit_once(cfg, ns)
    assert snapshot(admin_client, ns) == before
    old = w.images["resigned"].digest
    moved = (
        "fail",
        f"digest {old} is not the signed digest of tag v1 (signed: {resigned.digest})",
    )
    failing = expected(
        w,
        ns,
        web=moved,
        resigned=moved,
        revoked=(
            "fail",
            f"tag v1 is not signed in {w.host}/{w.repos['revoked']} (neither targets/releases nor targets has it)",
        ),
        tightened=(
            "fail",
            f"signer mallory (secret mallory-key): {w.host}/{w.repos['tightened']} has no delegation role targets/mallory",
        ),
        alice=("fail", f"required signer (secret alice-key): secret alice-key not found in namespace {ns}"),
    )
    assert lines(second, ns) == failing
    writer.write(second)
    report = report_of(admin_client, ns)
    assert without_timestamps(report) == expected_report(admin_client, w, ns, failing)  # the passes are gone
    assert report["summary"] == {"pass": 0, "fail": 5, "warn": 0, "error": 0, "skip": 0}

    # Fixed: the tag signed for the running digest again, the target back, the policy and key restored.
    w.world.sign(w.repos["resigned"], "v1", old, w.images["resigned"].size)
    w.world.sign(w.repos["revoked"], "v1", w.images["revoked"].digest, w.images["revoked"].size)
    w.policy()
    w.secret("alice-key", "alice", world_scenario.alice_pem)
    third = audit_once(cfg, ns)
    assert lines(third, ns) == expected(w, ns)
    writer.write(third)
    assert without_timestamps(report_of(admin_client, ns)) == expected_report(
        admin_client, w, ns, expected(w, ns)
    )


def test_a_trust_server_or_opa_that_is_down_is_an_error_never_a_pass(
    control_plane, admin_client, audit_cluster, kube, world_namespace, world_scenario, tmp_path
):
    ns = world_namespace
    w = AuditWorld(kube, ns, world_scenario)
    w.policy()
    w.admit()

    # The trust server of one entry stops answering (nothing listens there any more).
    dead = f"https://127.0.0.1:{free_port()}"
    w.policy(server={"resigned": dead})
    run = audit_once(config(control_plane, world_scenario, dead), ns)
    unreachable = (
        "error",
        f"could not be checked: root: notary server {dead} could not be reached (details in Ostiary's log)",
    )
    assert lines(run, ns) == expected(w, ns, web=unreachable, resigned=unreachable)

    # `ostiary audit` prints the same, and exits 1 (something could not be decided).
    argv = [
        str(REPO / ".venv" / "bin" / "ostiary"),
        "audit",
        "--kubeconfig",
        str(control_plane.kubeconfig("ostiary")),
        "-n",
        ns,
        "--ca-file",
        str(world_scenario.ca_file),
        "--system-namespace",
        "ostiary-system",
        "--trust-server-allow",
        world_scenario.notary_url,
        "--trust-server-allow",
        dead,
    ]
    cli = subprocess.run([*argv, "-o", "json"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1, cli.stderr[-2000:]
    printed = json.loads(cli.stdout)
    assert {
        (f"{r['kind']}/{r['name']}", r["image"], r["result"], r["message"]) for r in printed["results"]
    } == lines(run, ns)
    assert printed["summary"] == {"pass": 3, "fail": 0, "warn": 0, "error": 2} and printed["objects"] == 5
    cli = subprocess.run([*argv, "-o", "junit"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1
    suite = ElementTree.fromstring(cli.stdout.split("\n", 1)[1]).find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "0", "2")
    w.policy()
    cli = subprocess.run([*argv, "-o", "table"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stdout + cli.stderr[-2000:]
    assert cli.stdout.splitlines()[-1] == "5 objects, 5 results: 5 pass, 0 fail, 0 warn, 0 error"

    # OPA goes down: every image is an error, none a pass.
    port = free_port()
    opa = start_process(
        "opa-audit",
        [
            tool("opa"),
            "run",
            "--server",
            f"--addr=127.0.0.1:{port}",
            "--log-level=error",
            "--skip-version-check",
        ],
        tmp_path,
    )
    try:
        eventually(lambda: _healthy(f"http://127.0.0.1:{port}/health"), timeout=20, what="OPA up")
        runtime = Runtime(
            config(control_plane, world_scenario, opa_url=f"http://127.0.0.1:{port}", read_only=True)
        ).start()
        try:
            eventually(lambda: runtime.kube.ready and runtime.serving(), timeout=30, what="policies in force")
            auditor = Auditor(runtime.reviewer)
            assert lines(run_audit(runtime.kube.api, auditor, namespace=ns), ns) == expected(w, ns)
            opa.stop()
            run = run_audit(runtime.kube.api, auditor, namespace=ns)
        finally:
            runtime.stop()
    finally:
        opa.stop()
    results = {(o, i, r) for o, i, r, _ in lines(run, ns)}
    assert results == {(o, i, "error") for o, i, _, _ in expected(w, ns)}
    assert all("the policy engine failed" in m for *_, m in lines(run, ns)), lines(run, ns)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_serve_audits_in_the_background_one_replica_at_a_time_and_again_after_a_policy_change(
    control_plane, admin_client, audit_cluster, kube, world_namespace, world_scenario
):
    ns = world_namespace
    w = AuditWorld(kube, ns, world_scenario)
    w.policy()
    w.admit()
    settings = AuditConfig(
        interval=3600, max_rate=500, api_qps=50, lease_duration=15, min_gap=0.5, change_delay=0.5
    )
    first = Runtime(config(control_plane, world_scenario, audit=settings)).start()
    second = None
    try:
        eventually(lambda: first.audit.completed >= 1, timeout=60, what="the first audit")
        assert without_timestamps(report_of(admin_client, ns)) == expected_report(
            admin_client, w, ns, expected(w, ns)
        )
        assert _holder(kube) == first.audit.lease.identity

        # A second replica does not audit while the first holds the lease.
        second = Runtime(config(control_plane, world_scenario, audit=settings)).start()

        def skipped():
            return second.metrics.registry.get_sample_value(
                "ostiary_audit_runs_total", {"outcome": "skipped"}
            )

        eventually(lambda: (skipped() or 0) >= 1, timeout=60, what="the second replica skipping")
        assert second.audit.completed == 0

        # A tightened policy is audited without waiting for the interval.
        done = first.audit.completed
        w.policy(tightened=True)
        eventually(
            lambda: first.audit.completed > done and _failing(first, ns), timeout=60, what="a re-audit"
        )
        report = report_of(admin_client, ns)
        assert report["summary"] == {"pass": 4, "fail": 1, "warn": 0, "error": 0, "skip": 0}
        value = first.metrics.registry.get_sample_value(
            "ostiary_audit_failing_objects",
            {"namespace": ns, "policy": f"ImagePolicy/{ns}/audited", "result": "fail"},
        )
        assert value == 1.0
        assert second.audit.completed == 0

        # The first replica stops and gives the lease up: the second takes it over, and keeps the
        # cluster's rhythm (the last audit is noted on the lease): no audit before the interval is up.
        first.stop()
        eventually(
            lambda: _holder(kube) == second.audit.lease.identity,
            timeout=60,
            what="the second replica holding the lease",
        )
        assert second.audit.lease.audited_at is not None and second.audit.completed == 0
    finally:
        first.stop()
        if second is not None:
            second.stop()


def _failing(runtime, ns: str) -> bool:
    run = runtime.audit.last_run
    return run is not None and any(r.result == "fail" and r.namespace == ns for r in run.results)


def _holder(kube) -> str | None:
    from kubernetes import client

    lease = client.CoordinationV1Api(kube.api_client).read_namespaced_lease("ostiary-audit", "ostiary-system")
    return lease.spec.holder_identity


def test_a_kind_the_api_refuses_to_list_is_reported_as_error_not_dropped(
    control_plane, admin_client, audit_cluster, kube, world_namespace, world_scenario
):
    from kubernetes import client

    ns = world_namespace
    w = AuditWorld(kube, ns, world_scenario)
    w.policy()
    w.admit()
    job = kube.job(ns, w.ref("tightened"))
    cfg = config(control_plane, world_scenario)
    writer = ReportWriter(RestKubeApi.from_kubeconfig(str(control_plane.kubeconfig("ostiary"))))
    first = audit_once(cfg, ns, page_size=2)  # several pages per kind: limit/continue through the API server
    assert (f"Job/{job['metadata']['name']}", w.pinned("tightened"), "pass", "allowed") in lines(first, ns)
    writer.write(first)

    rbac = client.RbacAuthorizationV1Api(admin_client)
    role = rbac.read_cluster_role("ostiary-audit")
    rules = [r for r in role.rules if "batch" not in (r.api_groups or [])]
    rbac.patch_cluster_role(
        "ostiary-audit", {"rules": [admin_client.sanitize_for_serialization(r) for r in rules]}
    )
    ostiary = client.BatchV1Api(control_plane.api_client("ostiary"))
    try:
        eventually(
            lambda: _refused(lambda: ostiary.list_namespaced_job(ns)), timeout=30, what="jobs unlistable"
        )
        second = audit_once(cfg, ns)
    finally:
        rbac.patch_cluster_role(
            "ostiary-audit", {"rules": [admin_client.sanitize_for_serialization(r) for r in role.rules]}
        )
    assert [e.split(":")[0] for e in second.list_errors] == [
        f"listing jobs in namespace {ns} failed",
        f"listing cronjobs in namespace {ns} failed",
    ]
    assert lines(second, ns) == expected(w, ns)  # everything else was decided
    writer.write(second)
    report = report_of(admin_client, ns)
    [carried] = [e for e in report["results"] if e["resources"][0]["kind"] == "Job"]
    assert carried["result"] == "error"
    assert carried["message"].startswith(f"not re-checked: listing jobs in namespace {ns} failed: 403")
    assert carried["message"].endswith("(last result: pass: allowed)")
    assert report["summary"] == {"pass": 5, "fail": 0, "warn": 0, "error": 1, "skip": 0}


def _refused(call) -> bool:
    from kubernetes.client.rest import ApiException

    try:
        call()
    except ApiException as exc:
        return exc.status == 403
    return False
