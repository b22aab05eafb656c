"""The chart refuses bad values at render time and renders the webhook it promises (real helm, no API server)."""

from __future__ import annotations

import pytest

from tests.chart.chart import registered_webhooks, render, rendered_objects


def mutating_webhook(*sets: str) -> dict:
    [hook] = registered_webhooks(rendered_objects(*sets), "MutatingWebhookConfiguration")["webhooks"]
    return hook


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ("replicaCount=two", "/replicaCount"),
        ("webhook.failurePolicy=Maybe", "/webhook/failurePolicy"),
        ("webhok.failurePolicy=Fail", "additional properties 'webhok'"),
        ("tls.existingSecrets=x", "additional properties 'existingSecrets'"),
        ("webhook.timeoutSeconds=31", "/webhook/timeoutSeconds"),
        ("image.digest=latest", "/image/digest"),
        ("uninstallHook.image.tag=", "/uninstallHook/image/tag"),
        ("opa.auth.enabled=yes", "/opa/auth/enabled"),
        ("validatingWebhook.timeoutSeconds=0", "/validatingWebhook/timeoutSeconds"),
        ("networkPolicy.enable=true", "additional properties 'enable'"),
    ],
)
def test_the_schema_refuses_bad_values(value: str, complaint: str) -> None:
    done = render(value)
    assert done.returncode != 0
    assert complaint in done.stderr, done.stderr


def test_the_admission_budget_must_fit_the_webhook_timeout_with_margin() -> None:
    done = render("budgetSeconds=9", "webhook.timeoutSeconds=10")
    assert done.returncode != 0
    assert "must not exceed webhook.timeoutSeconds" in done.stderr
    assert render("budgetSeconds=8", "webhook.timeoutSeconds=10").returncode == 0
    assert render("budgetSeconds=20", "webhook.timeoutSeconds=25").returncode == 0


def test_defaults_exclude_the_release_namespace_kube_system_and_opted_out_namespaces() -> None:
    expressions = mutating_webhook()["namespaceSelector"]["matchExpressions"]
    by_key = {e["key"]: e for e in expressions}
    names = by_key["kubernetes.io/metadata.name"]
    assert names["operator"] == "NotIn" and set(names["values"]) == {"kube-system", "ostiary-system"}
    assert by_key["ostiary.dev/ignore"] == {
        "key": "ostiary.dev/ignore",
        "operator": "NotIn",
        "values": ["true"],
    }
    assert "ostiary.dev/ignore" not in {
        e["key"] for e in mutating_webhook("webhook.optOutLabel=")["namespaceSelector"]["matchExpressions"]
    }


def extracted_workloads() -> set[tuple[str, str]]:
    """(group, resource) of every workload kind Ostiary extracts a pod spec from (app/workloads.py)."""
    from app.workloads import webhook_resources

    return {(group, resource) for group, resources in webhook_resources().items() for resource in resources}


def test_the_webhook_rules_cover_exactly_the_extracted_workload_kinds() -> None:
    covered = {
        (group, resource)
        for rule in mutating_webhook()["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert covered == extracted_workloads()


def objects_of(kind: str, *sets: str) -> list[dict]:
    return [o for o in rendered_objects(*sets) if o["kind"] == kind]


def validating_webhook(*sets: str) -> dict:
    [hook] = registered_webhooks(rendered_objects(*sets), "ValidatingWebhookConfiguration")["webhooks"]
    return hook


def test_the_validating_webhook_checks_every_policy_kind_ostiary_reads_on_the_same_service_and_ca() -> None:
    from app.kube.source import POLICY_KINDS

    objects = rendered_objects()  # one render: each one generates its own CA
    [hook] = registered_webhooks(objects, "ValidatingWebhookConfiguration")["webhooks"]
    [mutating] = registered_webhooks(objects, "MutatingWebhookConfiguration")["webhooks"]
    assert hook["clientConfig"]["service"]["path"] == "/validate"
    assert hook["clientConfig"]["service"] | {"path": "/admit"} == mutating["clientConfig"]["service"]
    assert hook["clientConfig"]["caBundle"] == mutating["clientConfig"]["caBundle"]
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None"
    covered = {
        (group, version, resource, rule["scope"])
        for rule in hook["rules"]
        for group in rule["apiGroups"]
        for version in rule["apiVersions"]
        for resource in rule["resources"]
    }
    wanted = {
        (k.group, k.version, k.plural, "Namespaced" if k.namespaced else "Cluster") for k in POLICY_KINDS
    }
    assert covered == wanted
    # Deleting a policy is never blocked by a broken Ostiary.
    assert all(rule["operations"] == ["CREATE", "UPDATE"] for rule in hook["rules"])


def test_the_validating_webhook_failure_policy_and_switch_are_values() -> None:
    assert validating_webhook("validatingWebhook.failurePolicy=Fail")["failurePolicy"] == "Fail"
    assert objects_of("ValidatingWebhookConfiguration", "validatingWebhook.enabled=false") == []
    assert render("validatingWebhook.failurePolicy=Sometimes").returncode != 0
