"""The chart installs into a real apiserver: objects valid, generated certificate wired, kept on upgrade.

Nothing runs the pods (no kubelet), so this checks what the API server stores, not a running
webhook; the mutating webhook here only selects namespaces labelled for it, so it cannot block
other tests. The tests play the kubelet's part for the hook Jobs (register after install and
upgrade, uninstall before delete): they do what the Job's containers do, with the Job's own
ServiceAccount, and report the Job complete (or failed). The real Jobs run on the real-node suite.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from kubernetes import client, dynamic
from kubernetes.client.rest import ApiException
from kubernetes.dynamic.exceptions import ResourceNotFoundError

from tests.chart.chart import mount_like_the_kubelet
from tests.e2e.cluster import REPO, free_port, start_process, tool
from tests.e2e.webhook import INSTANCE_LABEL, OSTIARY_BIN, apply_rbac, chart_rbac
from tests.support import pki

# The chart's own objects are checked here (dry run, Pod Security), not admitted: the namespaces these
# tests use are outside every Ostiary instance the e2e suite registers (whichever ran before).
NOT_ADMITTED = {INSTANCE_LABEL: "none"}

pytestmark = pytest.mark.e2e

RELEASE, NAMESPACE = "helm-e2e", "ostiary-system"
FULLNAME = f"{RELEASE}-ostiary"
CHART = str(REPO / "helm" / "ostiary")
SELECTOR = [
    "--set",
    "webhook.namespaceSelectorExpressions[0].key=e2e.ostiary.dev/helm",
    "--set",
    "webhook.namespaceSelectorExpressions[0].operator=Exists",
]


def helm_argv(control_plane, *args: str) -> list[str]:
    return [tool("helm"), "--kubeconfig", str(control_plane.kubeconfig("admin")), *args]


def helm(control_plane, *args: str) -> str:
    done = subprocess.run(
        helm_argv(control_plane, *args), check=False, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_helm_lint_is_clean():
    done = subprocess.run(
        [tool("helm"), "lint", "--strict", CHART], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def wait_for(predicate, timeout: float = 60.0, what: str = "condition", log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + (f":\n{log()}" if log else ""))


def service_account_client(control_plane, admin_client, namespace: str, name: str):
    """An API client authenticated as a ServiceAccount (a token from the TokenRequest API)."""
    request = client.CoreV1Api(admin_client).create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 600}}
    )
    configuration = client.Configuration()
    configuration.host = control_plane.url
    configuration.ssl_ca_cert = str(control_plane.ca_file)
    configuration.api_key = {"authorization": f"Bearer {request.status.token}"}
    return client.ApiClient(configuration)


def hook_job(admin_client, name: str):
    batch = client.BatchV1Api(admin_client)
    return wait_for(
        lambda: next(
            (j for j in batch.list_namespaced_job(NAMESPACE).items if j.metadata.name == name), None
        ),
        what=f"the hook Job {name}",
    )


def report_job(admin_client, job, succeeded: bool) -> None:
    """What the Job controller writes when the Job's pod ends (the kubelet's and controller's part)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if succeeded:
        status = {
            "startTime": now,
            "completionTime": now,
            "succeeded": 1,
            "ready": 0,
            "active": 0,
            "conditions": [
                {
                    "type": "SuccessCriteriaMet",
                    "status": "True",
                    "lastTransitionTime": now,
                    "lastProbeTime": now,
                },
                {"type": "Complete", "status": "True", "lastTransitionTime": now, "lastProbeTime": now},
            ],
        }
    else:
        status = {
            "startTime": now,
            "failed": 1,
            "active": 0,
            "ready": 0,
            "conditions": [
                {
                    "type": "FailureTarget",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "lastTransitionTime": now,
                    "lastProbeTime": now,
                },
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "lastTransitionTime": now,
                    "lastProbeTime": now,
                },
            ],
        }
    client.BatchV1Api(admin_client).patch_namespaced_job_status(
        job.metadata.name, NAMESPACE, {"status": status}
    )


def webhooks_registered(admin_client, fullname: str) -> dict[str, list]:
    """The webhooks each configuration of the release holds now ([] for an inert one)."""
    admission = client.AdmissionregistrationV1Api(admin_client)
    found = {}
    for kind, read in (
        ("mutating", admission.read_mutating_webhook_configuration),
        ("validating", admission.read_validating_webhook_configuration),
    ):
        try:
            found[kind] = read(fullname).webhooks or []
        except ApiException as exc:
            assert exc.status == 404
    return found


def service_account_kubeconfig(control_plane, admin_client, namespace: str, name: str, folder: Path) -> Path:
    """A kubeconfig with a ServiceAccount's token (TokenRequest), as a pod of that account has."""
    request = client.CoreV1Api(admin_client).create_namespaced_service_account_token(
        name, namespace, {"spec": {"expirationSeconds": 600}}
    )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "hook",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {"server": control_plane.url, "certificate-authority": str(control_plane.ca_file)},
            }
        ],
        "users": [{"name": name, "user": {"token": request.status.token}}],
        "contexts": [{"name": "hook", "context": {"cluster": "e2e", "user": name, "namespace": namespace}}],
    }
    return pki.write(folder / f"kubeconfig-{name}.yaml", yaml.safe_dump(config))


def run_hook_container(container, kubeconfig: Path, mounts: dict[str, Path], folder: Path, args=None):
    """The container's command with the pinned kubectl (the hook image's entrypoint), its mounts
    mapped to local folders, its HOME as in the pod."""
    argv = list(args if args is not None else container.args)
    for mount_path, local in mounts.items():
        argv = [a.replace(mount_path, str(local)) for a in argv]
    home = folder / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
    return subprocess.run(
        [tool("kubectl"), *argv], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def roll_out_without_a_kubelet(admin_client, fullname: str) -> None:
    """The Deployment's status as the controller writes it once every replica is updated and ready."""
    apps = client.AppsV1Api(admin_client)
    deployment = apps.read_namespaced_deployment(fullname, NAMESPACE)
    replicas = deployment.spec.replicas
    apps.patch_namespaced_deployment_status(
        fullname,
        NAMESPACE,
        {
            "status": {
                "observedGeneration": deployment.metadata.generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
            }
        },
    )


def play_the_register_hook(
    control_plane, admin_client, fullname: str = FULLNAME, succeed: bool = True
) -> dict:
    """The post-install/post-upgrade Job, run with the pinned kubectl and the Job's own ServiceAccount:
    its wait container (exactly its arguments when the pods are `succeed`-ed ready; with a 3 s timeout
    when they never get ready) and, only if that succeeded, its apply container on the hook
    ConfigMap's files. Reports the Job's outcome as the Job controller would. Returns what was
    registered when the Job started."""
    job = hook_job(admin_client, f"{fullname}-register")
    before = webhooks_registered(admin_client, fullname)
    pod = job.spec.template.spec
    [wait] = pod.init_containers
    [apply] = pod.containers
    as_hook = service_account_client(control_plane, admin_client, NAMESPACE, pod.service_account_name)
    # Its role reaches this Deployment and the two configurations, by name, and nothing more.
    with pytest.raises(ApiException) as refused:
        client.AppsV1Api(as_hook).list_namespaced_deployment(NAMESPACE)
    assert refused.value.status == 403
    admission = client.AdmissionregistrationV1Api(as_hook)
    with pytest.raises(ApiException) as refused:
        admission.list_mutating_webhook_configuration()
    assert refused.value.status == 403
    with pytest.raises(ApiException) as refused:
        admission.create_mutating_webhook_configuration({"metadata": {"name": f"{fullname}-other"}})
    assert refused.value.status == 403
    with pytest.raises(ApiException) as refused:
        admission.delete_mutating_webhook_configuration(fullname)
    assert refused.value.status == 403

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        kubeconfig = service_account_kubeconfig(
            control_plane, admin_client, NAMESPACE, pod.service_account_name, folder
        )
        # The ConfigMap volume, as the kubelet mounts it.
        [volume] = [v for v in pod.volumes if v.name == "webhooks"]
        [mount] = [m for m in apply.volume_mounts if m.name == "webhooks"]
        source = client.CoreV1Api(admin_client).read_namespaced_config_map(volume.config_map.name, NAMESPACE)
        mount_like_the_kubelet(folder / "register", dict(source.data))
        mounts = {mount.mount_path: folder / "register"}
        if succeed:
            roll_out_without_a_kubelet(admin_client, fullname)
            waited = run_hook_container(wait, kubeconfig, mounts, folder)
        else:
            waited = run_hook_container(
                wait,
                kubeconfig,
                mounts,
                folder,
                [a if not a.startswith("--timeout=") else "--timeout=3s" for a in wait.args],
            )
        assert (waited.returncode == 0) == succeed, waited.stdout + waited.stderr
        if waited.returncode == 0:
            applied = run_hook_container(apply, kubeconfig, mounts, folder)
            assert applied.returncode == 0, applied.stdout + applied.stderr
            assert "serverside-applied" in applied.stdout, applied.stdout
        else:
            assert "timed out" in waited.stderr, waited.stderr
    report_job(admin_client, job, succeeded=succeed)
    return before


def helm_with_register_hook(
    control_plane, admin_client, *args: str, fullname: str = FULLNAME
) -> tuple[str, dict]:
    """`helm install|upgrade` (which waits for the register hook), with the hook played."""
    process = subprocess.Popen(
        helm_argv(control_plane, *args, "--timeout", "90s"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        before = play_the_register_hook(control_plane, admin_client, fullname)
        output, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    return output, before


def play_the_uninstall_hook(control_plane, admin_client) -> dict:
    """Run the pre-delete Job's work as its ServiceAccount, then report it complete. Returns what
    the API held when the webhooks were gone: proof that they went first."""
    batch = client.BatchV1Api(admin_client)
    job = wait_for(
        lambda: next(
            (
                j
                for j in batch.list_namespaced_job(NAMESPACE).items
                if j.metadata.name == f"{FULLNAME}-uninstall"
            ),
            None,
        ),
        what="the pre-delete Job",
    )
    pod = job.spec.template.spec
    [container] = pod.containers
    assert container.args[:3] == [
        "delete",
        f"mutatingwebhookconfiguration/{FULLNAME}",
        f"validatingwebhookconfiguration/{FULLNAME}",
    ]
    as_hook = client.AdmissionregistrationV1Api(
        service_account_client(control_plane, admin_client, NAMESPACE, pod.service_account_name)
    )
    # Its role reaches these two objects and nothing else.
    with pytest.raises(ApiException) as refused:
        as_hook.list_mutating_webhook_configuration()
    assert refused.value.status == 403
    as_hook.delete_mutating_webhook_configuration(FULLNAME)
    as_hook.delete_validating_webhook_configuration(FULLNAME)

    apps = client.AppsV1Api(admin_client)
    still_there = {
        "deployment": apps.read_namespaced_deployment(FULLNAME, NAMESPACE).metadata.name,
        "service": client.CoreV1Api(admin_client).read_namespaced_service(FULLNAME, NAMESPACE).metadata.name,
    }
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    batch.patch_namespaced_job_status(
        job.metadata.name,
        NAMESPACE,
        {
            "status": {
                "startTime": now,
                "completionTime": now,
                "succeeded": 1,
                "ready": 0,
                "active": 0,
                "conditions": [
                    {
                        "type": "SuccessCriteriaMet",
                        "status": "True",
                        "lastTransitionTime": now,
                        "lastProbeTime": now,
                    },
                    {"type": "Complete", "status": "True", "lastTransitionTime": now, "lastProbeTime": now},
                ],
            }
        },
    )
    return still_there


def test_the_chart_installs_upgrades_and_uninstalls(control_plane, admin_client, crds):
    uninstalled = False
    try:
        notes, before = helm_with_register_hook(
            control_plane,
            admin_client,
            "install",
            RELEASE,
            CHART,
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            *SELECTOR,
        )
        # When the register hook started, nothing was registered: the configurations were empty.
        assert before == {"mutating": [], "validating": []}
        assert f"kubectl -n {NAMESPACE} rollout status deployment/{FULLNAME}" in notes
        assert "validatingwebhookconfiguration" in notes and "--dry-run=server" in notes

        core, apps = client.CoreV1Api(admin_client), client.AppsV1Api(admin_client)
        admission = client.AdmissionregistrationV1Api(admin_client)
        rbac = client.RbacAuthorizationV1Api(admin_client)

        deployment = apps.read_namespaced_deployment(FULLNAME, NAMESPACE)
        containers = {c.name: c for c in deployment.spec.template.spec.containers}
        assert set(containers) == {"ostiary", "opa"}
        assert containers["opa"].image.startswith("openpolicyagent/opa:")
        assert "--addr=127.0.0.1:8181" in containers["opa"].args
        assert "--authentication=token" in containers["opa"].args
        assert "--kube" in containers["ostiary"].args
        for container in containers.values():
            assert (
                container.security_context.run_as_non_root
                and container.security_context.read_only_root_filesystem
            )
            assert container.security_context.capabilities.drop == ["ALL"]
        assert deployment.spec.template.spec.service_account_name == FULLNAME
        role = rbac.read_cluster_role(FULLNAME)
        secrets_rule = next(r for r in role.rules if "secrets" in (r.resources or []))
        assert secrets_rule.verbs == ["get"]

        secret = core.read_namespaced_secret(f"{FULLNAME}-tls", NAMESPACE)
        token = core.read_namespaced_secret(f"{FULLNAME}-opa-token", NAMESPACE)
        webhook = admission.read_mutating_webhook_configuration(FULLNAME).webhooks[0]
        validating = admission.read_validating_webhook_configuration(FULLNAME).webhooks[0]
        assert webhook.client_config.ca_bundle == secret.data["ca.crt"] == validating.client_config.ca_bundle
        assert (
            webhook.client_config.service.name == FULLNAME and webhook.client_config.service.path == "/admit"
        )
        assert validating.client_config.service.path == "/validate" and validating.failure_policy == "Ignore"
        assert webhook.failure_policy == "Fail" and webhook.side_effects == "None"
        assert webhook.timeout_seconds == 10
        resources = {res for rule in webhook.rules for res in rule.resources}
        assert {
            "pods",
            "pods/ephemeralcontainers",
            "deployments",
            "replicasets",
            "statefulsets",
            "daemonsets",
            "jobs",
            "cronjobs",
            "replicationcontrollers",
        } <= resources
        cert = x509.load_pem_x509_certificate(base64.b64decode(secret.data["tls.crt"]))
        names = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
        assert f"{FULLNAME}.{NAMESPACE}.svc" in names
        assert client.PolicyV1Api(admin_client).read_namespaced_pod_disruption_budget(FULLNAME, NAMESPACE)

        # An upgrade with values changed keeps the generated CA, certificate and OPA token (looked up,
        # not made again) and applies the change.
        _, before = helm_with_register_hook(
            control_plane,
            admin_client,
            "upgrade",
            RELEASE,
            CHART,
            "--namespace",
            NAMESPACE,
            *SELECTOR,
            "--set",
            "replicaCount=3",
            "--set",
            "customRego.no-latest\\.rego=package ostiary.custom.nolatest",
        )
        # Helm's upgrade left the webhooks the hook applied in place (served by the old pods).
        assert [w.name for w in before["mutating"]] == ["admit.ostiary.dev"]
        assert [w.name for w in before["validating"]] == ["validate.ostiary.dev"]
        again = core.read_namespaced_secret(f"{FULLNAME}-tls", NAMESPACE)
        assert again.data == secret.data
        assert core.read_namespaced_secret(f"{FULLNAME}-opa-token", NAMESPACE).data == token.data
        upgraded = apps.read_namespaced_deployment(FULLNAME, NAMESPACE)
        assert upgraded.spec.replicas == 3
        assert "--rego-dir=/etc/ostiary/rego" in upgraded.spec.template.spec.containers[0].args
        assert (
            upgraded.spec.template.metadata.annotations["checksum/opa-auth"]
            == deployment.spec.template.metadata.annotations["checksum/opa-auth"]
        )
        assert (
            admission.read_mutating_webhook_configuration(FULLNAME).webhooks[0].client_config.ca_bundle
            == secret.data["ca.crt"]
        )

        # A rollback runs the register hook too (post-rollback): the webhooks stay registered, the
        # Deployment is the first revision's again.
        _, before = helm_with_register_hook(
            control_plane, admin_client, "rollback", RELEASE, "1", "--namespace", NAMESPACE
        )
        assert [w.name for w in before["mutating"]] == ["admit.ostiary.dev"]
        assert apps.read_namespaced_deployment(FULLNAME, NAMESPACE).spec.replicas == 2
        assert (
            webhooks_registered(admin_client, FULLNAME)["mutating"][0].client_config.ca_bundle
            == secret.data["ca.crt"]
        )

        # Uninstall: the pre-delete hook removes both webhooks while the Deployment and Service
        # still exist; Helm waits for it, then removes the rest.
        uninstall = subprocess.Popen(
            helm_argv(control_plane, "uninstall", RELEASE, "--namespace", NAMESPACE, "--timeout", "90s"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            still_there = play_the_uninstall_hook(control_plane, admin_client)
            output, _ = uninstall.communicate(timeout=90)
        finally:
            if uninstall.poll() is None:
                uninstall.kill()
        assert uninstall.returncode == 0, output
        print(output)
        uninstalled = True
        assert still_there == {"deployment": FULLNAME, "service": FULLNAME}
    finally:
        if not uninstalled:
            subprocess.run(
                helm_argv(control_plane, "uninstall", RELEASE, "--namespace", NAMESPACE, "--no-hooks"),
                check=False,
                capture_output=True,
                timeout=120,
            )
    admission = client.AdmissionregistrationV1Api(admin_client)
    assert FULLNAME not in [w.metadata.name for w in admission.list_mutating_webhook_configuration().items]
    assert FULLNAME not in [w.metadata.name for w in admission.list_validating_webhook_configuration().items]
    with pytest.raises(ApiException) as gone:
        client.AppsV1Api(admin_client).read_namespaced_deployment(FULLNAME, NAMESPACE)
    assert gone.value.status == 404
    # The hook cleans up after itself (hook-delete-policy hook-succeeded).
    assert not [
        j
        for j in client.BatchV1Api(admin_client).list_namespaced_job(NAMESPACE).items
        if j.metadata.name == f"{FULLNAME}-uninstall"
    ]


def test_an_uninstall_whose_hook_fails_removes_nothing(control_plane, admin_client, crds):
    """If the hook cannot delete the webhooks, Helm must not delete their server either."""
    release = "helm-e2e-hookfail"
    fullname = f"{release}-ostiary"
    helm(
        control_plane,
        "install",
        release,
        CHART,
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        *SELECTOR,
        "--set",
        "registration.mode=immediate",
    )
    try:
        uninstall = subprocess.Popen(
            helm_argv(control_plane, "uninstall", release, "--namespace", NAMESPACE, "--timeout", "60s"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            batch = client.BatchV1Api(admin_client)
            job = wait_for(
                lambda: next(
                    (
                        j
                        for j in batch.list_namespaced_job(NAMESPACE).items
                        if j.metadata.name == f"{fullname}-uninstall"
                    ),
                    None,
                ),
                what="the hook Job",
            )
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            batch.patch_namespaced_job_status(
                job.metadata.name,
                NAMESPACE,
                {
                    "status": {
                        "startTime": now,
                        "failed": 4,
                        "active": 0,
                        "ready": 0,
                        "conditions": [
                            {
                                "type": "FailureTarget",
                                "status": "True",
                                "reason": "BackoffLimitExceeded",
                                "lastTransitionTime": now,
                                "lastProbeTime": now,
                            },
                            {
                                "type": "Failed",
                                "status": "True",
                                "reason": "BackoffLimitExceeded",
                                "lastTransitionTime": now,
                                "lastProbeTime": now,
                            },
                        ],
                    }
                },
            )
            output, _ = uninstall.communicate(timeout=90)
        finally:
            if uninstall.poll() is None:
                uninstall.kill()
        assert uninstall.returncode != 0, output
        assert "pre-delete" in output or "hook" in output, output
        admission = client.AdmissionregistrationV1Api(admin_client)
        assert admission.read_mutating_webhook_configuration(fullname)
        assert admission.read_validating_webhook_configuration(fullname)
        assert client.AppsV1Api(admin_client).read_namespaced_deployment(fullname, NAMESPACE)
        assert client.CoreV1Api(admin_client).read_namespaced_service(fullname, NAMESPACE)
    finally:
        subprocess.run(
            helm_argv(control_plane, "uninstall", release, "--namespace", NAMESPACE, "--no-hooks"),
            check=False,
            capture_output=True,
            timeout=120,
        )
        # A failed hook's objects stay for inspection (hook-delete-policy hook-succeeded); tidy them.
        hook = f"{fullname}-uninstall"
        rbac = client.RbacAuthorizationV1Api(admin_client)
        for delete in (
            lambda: client.BatchV1Api(admin_client).delete_namespaced_job(hook, NAMESPACE),
            lambda: client.CoreV1Api(admin_client).delete_namespaced_service_account(hook, NAMESPACE),
            lambda: rbac.delete_cluster_role_binding(hook),
            lambda: rbac.delete_cluster_role(hook),
        ):
            with contextlib.suppress(ApiException):
                delete()
    admission = client.AdmissionregistrationV1Api(admin_client)
    assert fullname not in [w.metadata.name for w in admission.list_mutating_webhook_configuration().items]


def test_an_install_whose_pods_never_get_ready_registers_no_webhook_and_fails(
    control_plane, admin_client, crds
):
    """The register hook times out (its Job fails: no pod got ready): Helm reports the install failed,
    naming the Job, and no webhook is registered, so nothing in the cluster is refused."""
    release = "helm-e2e-notready"
    fullname = f"{release}-ostiary"
    install = subprocess.Popen(
        helm_argv(
            control_plane,
            "install",
            release,
            CHART,
            "--namespace",
            NAMESPACE,
            "--create-namespace",
            *SELECTOR,
            "--timeout",
            "90s",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        try:
            play_the_register_hook(control_plane, admin_client, fullname, succeed=False)
            output, _ = install.communicate(timeout=90)
        finally:
            if install.poll() is None:
                install.kill()
        print(output)
        assert install.returncode != 0, output
        assert f"{fullname}-register" in output and "post-install" in output, output
        assert webhooks_registered(admin_client, fullname) == {"mutating": [], "validating": []}
        # The failed Job stays for `kubectl logs` / `describe`.
        assert hook_job(admin_client, f"{fullname}-register").status.failed == 1
    finally:
        subprocess.run(
            helm_argv(control_plane, "uninstall", release, "--namespace", NAMESPACE, "--no-hooks"),
            check=False,
            capture_output=True,
            timeout=120,
        )
        # A failed hook's objects stay for inspection; tidy them.
        hook = f"{fullname}-register"
        rbac = client.RbacAuthorizationV1Api(admin_client)
        core = client.CoreV1Api(admin_client)
        for delete in (
            lambda: client.BatchV1Api(admin_client).delete_namespaced_job(hook, NAMESPACE),
            lambda: core.delete_namespaced_service_account(hook, NAMESPACE),
            lambda: core.delete_namespaced_config_map(hook, NAMESPACE),
            lambda: rbac.delete_namespaced_role_binding(hook, NAMESPACE),
            lambda: rbac.delete_namespaced_role(hook, NAMESPACE),
            lambda: rbac.delete_cluster_role_binding(hook),
            lambda: rbac.delete_cluster_role(hook),
        ):
            with contextlib.suppress(ApiException):
                delete()
    # `helm uninstall --no-hooks` removed the (empty) configurations: they are release objects.
    assert webhooks_registered(admin_client, fullname) == {}


# -- server-side dry run of every rendered object ---------------------------------------------------


def a_ca_pem() -> str:
    from tests.chart.test_chart_modes import a_ca_pem as make

    return make()


DRY_RUN_MATRIX = {
    "defaults": {},
    "one replica, no auth, no hook": {
        "replicaCount": 1,
        "opa": {"auth": {"enabled": False}},
        "uninstallHook": {"enabled": False},
    },
    "cert-manager": {"tls": {"mode": "certManager"}},
    "own secret": {"tls": {"mode": "secret", "existingSecret": "my-tls"}},
    "network policy and monitoring": {
        "networkPolicy": {
            "enabled": True,
            "apiServerPeers": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
            "metricsPeers": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}],
        },
        "metrics": {"serviceMonitor": {"enabled": True}},
        "priorityClassName": "",
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
        ],
    },
    "cluster policies and rego": {
        "policies": [
            {
                "apiVersion": "ostiary.dev/v1",
                "kind": "ClusterImagePolicy",
                "metadata": {"name": "dry"},
                "spec": {
                    "repositories": [{"name": "docker.io/library/*", "policy": {"trust": {"enabled": True}}}]
                },
            }
        ],
        "customRego": {"no-latest.rego": "package ostiary.custom.nolatest\n"},
        "customRegoConfigMaps": ["team-rules"],
    },
    "directory source": {
        "policySource": "directory",
        "policyConfigMaps": ["team-policies"],
        "notaryCABundle": "PEM",
        "policies": [
            {
                "apiVersion": "ostiary.dev/v1",
                "kind": "ClusterImagePolicy",
                "metadata": {"name": "dry"},
                "spec": {"repositories": [{"name": "docker.io/library/*"}]},
            }
        ],
    },
    "immediate registration": {"registration": {"mode": "immediate"}},
    "every added value": {
        "policySource": "directory",
        "policyConfigMaps": ["team-policies"],
        "stateVolume": {"type": "persistentVolumeClaim", "existingClaim": "ostiary-state"},
        "rootPins": {"configMap": "notary-pins"},
        "global": {"imageRegistry": "mirror.example:5000"},
        "fullnameOverride": "gate",
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
        "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
        "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
        "networkPolicy": {
            "enabled": True,
            "apiServerPeers": [{"ipBlock": {"cidr": "10.0.0.1/32"}}],
            "metricsPeers": [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}],
        },
        "metrics": {
            "serviceMonitor": {"enabled": True},
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        },
    },
}

# Kinds of other projects' CRDs, not installed in the end-to-end API server.
THIRD_PARTY = {
    ("cert-manager.io/v1", "Issuer"),
    ("cert-manager.io/v1", "Certificate"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}


def matrix_values(case: str) -> dict:
    values = json.loads(json.dumps(DRY_RUN_MATRIX[case]))
    if values.get("tls", {}).get("mode") == "secret":
        values["tls"]["caBundle"] = a_ca_pem()
    if values.get("notaryCABundle") == "PEM":
        values["notaryCABundle"] = a_ca_pem()
    return values


@pytest.mark.parametrize("case", list(DRY_RUN_MATRIX))
def test_every_rendered_object_passes_a_server_side_dry_run(control_plane, admin_client, crds, case):
    values = matrix_values(case)
    namespace = "ostiary-dry-run"
    try:
        client.CoreV1Api(admin_client).create_namespace(
            {"metadata": {"name": namespace, "labels": NOT_ADMITTED}}
        )
    except ApiException as exc:
        assert exc.status == 409
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        json.dump(values, file)
        file.flush()
        done = subprocess.run(
            [tool("helm"), "template", "dry", CHART, "--namespace", namespace, "--values", file.name],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    api = dynamic.DynamicClient(admin_client)
    checked, unserved = [], set()
    for obj in objects:
        try:
            resource = api.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
        except ResourceNotFoundError:
            unserved.add((obj["apiVersion"], obj["kind"]))
            continue
        target = {"namespace": obj["metadata"].get("namespace", namespace)} if resource.namespaced else {}
        try:
            resource.create(body=obj, dry_run="All", **target)
        except ApiException as exc:
            raise AssertionError(
                f"{case}: {obj['kind']} {obj['metadata']['name']} refused: {exc.body}"
            ) from None
        checked.append(obj["kind"])
    assert unserved <= THIRD_PARTY, unserved
    assert {"Deployment", "Service", "MutatingWebhookConfiguration"} <= set(checked)


def restricted_namespace(admin_client) -> str:
    """A namespace where the API server's PodSecurity admission enforces the "restricted" level."""
    name = "ostiary-restricted"
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        **NOT_ADMITTED,
    }
    try:
        client.CoreV1Api(admin_client).create_namespace({"metadata": {"name": name, "labels": labels}})
    except ApiException as exc:
        assert exc.status == 409
    return name


def test_the_pod_security_admission_refuses_a_pod_below_restricted(admin_client):
    """The check below can fail: a pod that asks for root is refused in the restricted namespace."""
    namespace = restricted_namespace(admin_client)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {"runAsUser": 0}}]},
    }
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(admin_client).create_namespaced_pod(namespace, pod, dry_run="All")
    assert refused.value.status == 403 and "restricted" in refused.value.body


@pytest.mark.parametrize(
    "case",
    ["defaults", "one replica, no auth, no hook", "directory source", "own secret", "every added value"],
)
def test_every_pod_the_chart_makes_meets_the_restricted_pod_security_standard(admin_client, case):
    """Both containers of the webhook pod, the hooks' pods (register, uninstall) and the `helm test`
    pod, as real Pods through the API server's PodSecurity admission at level restricted (server-side
    dry run)."""
    namespace = restricted_namespace(admin_client)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        json.dump(matrix_values(case), file)
        file.flush()
        done = subprocess.run(
            [tool("helm"), "template", "psa", CHART, "--namespace", namespace, "--values", file.name],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    templates = [(o["kind"], o["spec"]["template"]) for o in objects if o["kind"] in ("Deployment", "Job")]
    templates += [
        ("Pod", {"metadata": o["metadata"], "spec": o["spec"]}) for o in objects if o["kind"] == "Pod"
    ]
    assert {"Deployment", "Job", "Pod"} <= {kind for kind, _ in templates}
    for kind, template in templates:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"psa-{kind.lower()}-",
                "labels": template["metadata"].get("labels", {}),
            },
            "spec": template["spec"],
        }
        try:
            client.CoreV1Api(admin_client).create_namespaced_pod(namespace, pod, dry_run="All")
        except ApiException as exc:
            raise AssertionError(f"{case}: the {kind}'s pod is not restricted: {exc.body}") from None


# -- custom Rego from a ConfigMap, reloaded without a restart (customRegoConfigMaps) ----------------


def swap_configmap(folder, files: dict[str, str], stamp: str) -> None:
    """What the kubelet does when a mounted ConfigMap changes: a new `..<timestamp>` folder, `..data`
    relinked to it atomically, links for new keys, links of removed keys and the old folder gone."""

    old = os.readlink(folder / "..data")
    (folder / stamp).mkdir()
    for name, text in files.items():
        (folder / stamp / name).write_text(text)
    os.symlink(stamp, folder / "..data.tmp")
    os.replace(folder / "..data.tmp", folder / "..data")
    for entry in folder.iterdir():
        if not entry.name.startswith("..") and entry.name not in files:
            entry.unlink()
    for name in files:
        if not (folder / name).is_symlink():
            os.symlink(f"..data/{name}", folder / name)
    shutil.rmtree(folder / old)


def opa_module_ids(opa_url: str) -> set[str]:

    with urllib.request.urlopen(f"{opa_url}/v1/policies", timeout=5) as response:
        return {p["id"] for p in json.loads(response.read())["result"]}


def test_custom_rego_from_a_configmap_reloads_in_cluster_mode_without_a_restart(
    control_plane, admin_client, crds, tmp_path
):
    """The chart mounts customRegoConfigMaps under --rego-dir; an edit must reach OPA in place."""

    try:
        client.CoreV1Api(admin_client).create_namespace({"metadata": {"name": "ostiary-system"}})
    except ApiException as exc:
        assert exc.status == 409
    apply_rbac(admin_client, chart_rbac())
    rules = tmp_path / "rego" / "team-rules"
    first = 'package ostiary.custom.first\n\ndeny contains msg if { false; msg := "first" }\n'
    second = 'package ostiary.custom.second\n\ndeny contains msg if { false; msg := "second" }\n'
    mount_like_the_kubelet(rules, {"first.rego": first}, stamp="..2026_12_03_14_00_00.1")

    ca = pki.CA.create()
    key, cert = ca.issue_server(("localhost",), ("127.0.0.1",))
    cert_file = pki.write(tmp_path / "tls.crt", pki.cert_pem(cert))
    key_file = pki.write(tmp_path / "tls.key", pki.private_key_pem(key))
    opa_port, port = free_port(), free_port()
    opa_url = f"http://127.0.0.1:{opa_port}"
    opa = start_process(
        "opa-rego-reload",
        [
            tool("opa"),
            "run",
            "--server",
            f"--addr=127.0.0.1:{opa_port}",
            "--log-level=error",
            "--skip-version-check",
        ],
        tmp_path,
    )
    ostiary = None
    try:
        wait_for(lambda: _answers(f"{opa_url}/health"), 20, "OPA")
        ostiary = start_process(
            "ostiary-rego-reload",
            [
                str(OSTIARY_BIN),
                "serve",
                "--kube",
                "--kubeconfig",
                str(control_plane.kubeconfig("ostiary")),
                "--listen",
                f"127.0.0.1:{port}",
                "--tls-cert",
                str(cert_file),
                "--tls-key",
                str(key_file),
                "--opa-url",
                opa_url,
                "--system-namespace",
                "ostiary-system",
                "--rego-dir",
                str(tmp_path / "rego"),
            ],
            tmp_path,
        )
        context = ssl.create_default_context(
            cafile=str(pki.write(tmp_path / "ca.crt", pki.cert_pem(ca.cert)))
        )

        def ready() -> bool:
            assert ostiary.popen.poll() is None, ostiary.tail(60)
            return _answers(f"https://127.0.0.1:{port}/readyz", context)

        def why() -> str:
            try:
                urllib.request.urlopen(f"https://127.0.0.1:{port}/readyz", timeout=2, context=context)
                return "ready"
            except urllib.error.HTTPError as exc:
                return (
                    exc.read().decode()
                    + "\n"
                    + "\n".join(line for line in ostiary.tail(200).splitlines() if "GET /readyz" not in line)
                )

        wait_for(ready, 60, "ostiary ready", log=why)
        custom = {i for i in opa_module_ids(opa_url) if i.startswith("ostiary/custom/")}
        assert custom == {"ostiary/custom/team-rules/first"}, "loaded once, not also from ..<timestamp>"

        swap_configmap(rules, {"second.rego": second}, stamp="..2026_12_03_14_05_00.2")
        wait_for(
            lambda: (
                {i for i in opa_module_ids(opa_url) if i.startswith("ostiary/custom/")}
                == {"ostiary/custom/team-rules/second"}
            ),
            30,
            "the edited ConfigMap in OPA",
            log=why,
        )
        assert ostiary.popen.poll() is None, "reloaded in place, not by a restart"
        wait_for(ready, 30, "ostiary ready again", log=why)
    finally:
        if ostiary is not None:
            ostiary.stop()
        opa.stop()


def _answers(url: str, context=None) -> bool:

    try:
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
