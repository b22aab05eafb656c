"""The chart installs into a real apiserver: objects valid, generated certificate wired, kept on upgrade.

Nothing runs the pods (no kubelet), so this checks what the API server stores, not a running
webhook; the webhook here only selects namespaces labelled for it, so it cannot block other tests.
"""

from __future__ import annotations

import base64
import subprocess

import pytest
from cryptography import x509
from kubernetes import client

from tests.e2e.cluster import REPO, tool

pytestmark = pytest.mark.e2e

RELEASE, NAMESPACE = "helm-e2e", "ostiary-system"
FULLNAME = f"{RELEASE}-ostiary"


def helm(control_plane, *args: str) -> str:
    argv = [tool("helm"), "--kubeconfig", str(control_plane.kubeconfig("admin")), *args]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_helm_lint_is_clean():
    done = subprocess.run([tool("helm"), "lint", "--strict", str(REPO / "helm" / "ostiary")],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_chart_installs_upgrades_and_uninstalls(control_plane, admin_client, crds):
    chart = str(REPO / "helm" / "ostiary")
    selector = ["--set", "webhook.namespaceSelectorExpressions[0].key=e2e.ostiary.dev/helm",
                "--set", "webhook.namespaceSelectorExpressions[0].operator=Exists"]
    helm(control_plane, "install", RELEASE, chart, "--namespace", NAMESPACE, "--create-namespace", *selector)
    try:
        core, apps = client.CoreV1Api(admin_client), client.AppsV1Api(admin_client)
        admission = client.AdmissionregistrationV1Api(admin_client)
        rbac = client.RbacAuthorizationV1Api(admin_client)

        deployment = apps.read_namespaced_deployment(FULLNAME, NAMESPACE)
        containers = {c.name: c for c in deployment.spec.template.spec.containers}
        assert set(containers) == {"ostiary", "opa"}
        assert containers["opa"].image.startswith("openpolicyagent/opa:")
        assert "--addr=127.0.0.1:8181" in containers["opa"].args
        assert "--kube" in containers["ostiary"].args
        assert deployment.spec.template.spec.security_context.run_as_non_root
        assert deployment.spec.template.spec.service_account_name == FULLNAME
        role = rbac.read_cluster_role(FULLNAME)
        secrets_rule = next(r for r in role.rules if "secrets" in (r.resources or []))
        assert secrets_rule.verbs == ["get"]

        secret = core.read_namespaced_secret(f"{FULLNAME}-tls", NAMESPACE)
        webhook = admission.read_mutating_webhook_configuration(FULLNAME).webhooks[0]
        assert webhook.client_config.ca_bundle == secret.data["ca.crt"]
        assert webhook.client_config.service.name == FULLNAME and webhook.client_config.service.path == "/admit"
        assert webhook.failure_policy == "Fail" and webhook.side_effects == "None"
        assert webhook.timeout_seconds == 10
        resources = {res for rule in webhook.rules for res in rule.resources}
        assert {"pods", "pods/ephemeralcontainers", "deployments", "replicasets", "statefulsets", "daemonsets",
                "jobs", "cronjobs", "replicationcontrollers"} <= resources
        cert = x509.load_pem_x509_certificate(base64.b64decode(secret.data["tls.crt"]))
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
        assert f"{FULLNAME}.{NAMESPACE}.svc" in names

        # An upgrade keeps the generated CA and certificate (looked up, not made again).
        helm(control_plane, "upgrade", RELEASE, chart, "--namespace", NAMESPACE, *selector)
        again = core.read_namespaced_secret(f"{FULLNAME}-tls", NAMESPACE)
        assert again.data == secret.data
        assert admission.read_mutating_webhook_configuration(FULLNAME).webhooks[0].client_config.ca_bundle == \
            secret.data["ca.crt"]
    finally:
        helm(control_plane, "uninstall", RELEASE, "--namespace", NAMESPACE)
    names = [w.metadata.name for w in
             client.AdmissionregistrationV1Api(admin_client).list_mutating_webhook_configuration().items]
    assert FULLNAME not in names
