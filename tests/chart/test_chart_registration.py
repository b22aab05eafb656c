"""Install-time safety (registration.mode): no webhook is registered before the webhook pods are ready.

Rendered with the real helm. The behaviour against an API server (the hook's ServiceAccount doing
exactly what the Job does, a failed hook leaving no webhook) is in tests/e2e/test_e2e_helm.py; the
Job itself running on a kubelet is the real-node suite's.
"""

from __future__ import annotations

import yaml

from tests.chart.chart import hooks, kinds, only, registered_webhooks, rendered_objects
from tests.chart.test_chart_modes import FULLNAME, NAMESPACE, WEBHOOK_KINDS

REGISTER = f"{FULLNAME}-register"


def release_objects(objects: list[dict]) -> list[dict]:
    return [o for o in objects if "helm.sh/hook" not in (o["metadata"].get("annotations") or {})]


def test_by_default_the_release_registers_no_webhook_and_the_hook_adds_them_after_the_rollout() -> None:
    objects = rendered_objects()
    for kind in WEBHOOK_KINDS:
        config = only(release_objects(objects), kind)
        # Created by Helm with the release (so `helm uninstall`, even --no-hooks, removes them), inert.
        assert not config.get("webhooks"), f"{kind} carries webhooks before any pod is ready"

    post = hooks(objects, "post-install")
    assert post == hooks(objects, "post-upgrade") == hooks(objects, "post-rollback")
    job = only(post, "Job", REGISTER)
    pod = job["spec"]["template"]["spec"]
    [wait] = pod["initContainers"]
    [apply] = pod["containers"]
    # First the rollout (every replica updated and available), with a deadline ...
    assert wait["args"] == [
        "rollout",
        "status",
        f"deployment/{FULLNAME}",
        f"--namespace={NAMESPACE}",
        "--timeout=180s",
    ]
    # ... and only if it succeeds (init containers run to success first), the webhooks.
    assert apply["args"] == [
        "apply",
        "--server-side",
        "--field-manager=ostiary-register",
        "--force-conflicts",
        "--filename=/etc/ostiary/register/mutating.yaml",
        "--filename=/etc/ostiary/register/validating.yaml",
    ]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["activeDeadlineSeconds"] > 180
    assert wait["image"] == apply["image"] == "registry.k8s.io/kubectl:v1.34.3"
    [volume] = [v for v in pod["volumes"] if v["name"] == "webhooks"]
    source = only(post, "ConfigMap", volume["configMap"]["name"])
    assert set(source["data"]) == {"mutating.yaml", "validating.yaml"}
    # What it applies is exactly the configuration immediate mode would have created.
    for kind in WEBHOOK_KINDS:
        applied = registered_webhooks(objects, kind)["webhooks"]
        [hook] = applied
        assert hook["clientConfig"]["service"]["name"] == FULLNAME
        assert (
            hook["clientConfig"]["caBundle"] == only(objects, "Secret", f"{FULLNAME}-tls")["data"]["ca.crt"]
        )

    # The RBAC exists before the Job, the ConfigMap too; a failed Job stays for inspection.
    weights = {
        (o["kind"], o["metadata"]["name"]): int(o["metadata"]["annotations"]["helm.sh/hook-weight"])
        for o in post
    }
    assert all(w < weights[("Job", REGISTER)] for key, w in weights.items() if key != ("Job", REGISTER))
    assert (
        job["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    )


def test_the_register_hook_may_touch_only_this_releases_deployment_and_two_configurations() -> None:
    post = hooks(rendered_objects(), "post-install")
    [cluster_rule] = only(post, "ClusterRole", REGISTER)["rules"]
    assert cluster_rule == {
        "apiGroups": ["admissionregistration.k8s.io"],
        "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
        "resourceNames": [FULLNAME],
        "verbs": ["get", "patch"],  # no create (resourceNames cannot restrict it), no delete
    }
    [rule] = only(post, "Role", REGISTER)["rules"]
    assert rule == {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "resourceNames": [FULLNAME],
        "verbs": ["get", "list", "watch"],
    }
    binding = only(post, "ClusterRoleBinding", REGISTER)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": REGISTER, "namespace": NAMESPACE}]
    assert only(post, "Job", REGISTER)["spec"]["template"]["spec"]["serviceAccountName"] == REGISTER


def test_directory_mode_registers_only_the_mutating_webhook_after_the_rollout() -> None:
    objects = rendered_objects("policySource=directory", "policyConfigMaps[0]=team")
    post = hooks(objects, "post-install")
    assert set(only(post, "ConfigMap", REGISTER)["data"]) == {"mutating.yaml"}
    args = only(post, "Job", REGISTER)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--filename=/etc/ostiary/register/validating.yaml" not in args
    assert only(post, "ClusterRole", REGISTER)["rules"][0]["resources"] == ["mutatingwebhookconfigurations"]
    assert "ValidatingWebhookConfiguration" not in kinds(objects)


def test_immediate_mode_registers_the_webhooks_with_the_release_and_has_no_register_hook() -> None:
    objects = rendered_objects("registration.mode=immediate", "registration.timeoutSeconds=30")
    assert not hooks(objects, "post-install") and not hooks(objects, "post-upgrade")
    for kind in WEBHOOK_KINDS:
        assert only(release_objects(objects), kind)["webhooks"], kind


def test_the_wait_deadline_and_image_are_values() -> None:
    objects = rendered_objects(
        "registration.timeoutSeconds=600",
        "uninstallHook.image.repository=mirror.example/kubectl",
        "uninstallHook.image.tag=v1",
    )
    job = only(hooks(objects, "post-install"), "Job", REGISTER)
    [wait] = job["spec"]["template"]["spec"]["initContainers"]
    assert "--timeout=600s" in wait["args"] and job["spec"]["activeDeadlineSeconds"] == 660
    assert wait["image"] == "mirror.example/kubectl:v1"


def test_the_registered_webhooks_equal_across_modes() -> None:
    """afterReady applies what immediate mode would create (same values, same CA source)."""
    pem_values = {"tls": {"mode": "certManager"}}
    after = rendered_objects(values=pem_values)
    now = rendered_objects("registration.mode=immediate", values=pem_values)
    for kind in WEBHOOK_KINDS:
        assert registered_webhooks(after, kind)["webhooks"] == only(now, kind)["webhooks"]
        assert only(release_objects(after), kind)["metadata"] == only(now, kind)["metadata"]
    applied = yaml.safe_load(
        only(hooks(after, "post-install"), "ConfigMap", REGISTER)["data"]["mutating.yaml"]
    )
    assert set(applied) == {"apiVersion", "kind", "metadata", "webhooks"}
    assert applied["metadata"] == {"name": FULLNAME}, "labels and annotations stay Helm's (the injector's)"
