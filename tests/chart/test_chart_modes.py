"""Every certificate mode, policy source and option renders what it promises, and mixes are refused."""

from __future__ import annotations

import base64
import datetime

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.chart.chart import (
    NAMESPACE,
    containers,
    hooks,
    kinds,
    only,
    refusal,
    registered_webhooks,
    rendered_objects,
)

FULLNAME = "t-ostiary"
WEBHOOK_KINDS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


def a_ca_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "my-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def webhook_configs(objects: list[dict]) -> list[dict]:
    """Both configurations with the webhooks they end up with (after the register hook)."""
    return [registered_webhooks(objects, kind) for kind in WEBHOOK_KINDS]


def tls_volume_secret(objects: list[dict]) -> str:
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "tls"]
    return volume["secret"]["secretName"]


def tls_secrets(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] == "Secret" and o.get("type") == "kubernetes.io/tls"]


# -- certificates -----------------------------------------------------------------------------------


def test_generate_mode_makes_one_ca_whose_certificate_names_the_service_and_no_injection() -> None:
    objects = rendered_objects()
    secret = only(objects, "Secret", f"{FULLNAME}-tls")
    assert tls_volume_secret(objects) == f"{FULLNAME}-tls"
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    serving = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    assert serving.issuer == ca.subject
    serving.verify_directly_issued_by(ca)
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert f"{FULLNAME}.{NAMESPACE}.svc" in names
    for config in webhook_configs(objects):
        assert "cert-manager.io/inject-ca-from" not in (config["metadata"].get("annotations") or {})
        assert config["webhooks"][0]["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert not kinds(objects) & {"Certificate", "Issuer"}


def test_cert_manager_mode_makes_a_private_ca_chain_and_lets_the_injector_fill_the_bundle() -> None:
    objects = rendered_objects("tls.mode=certManager")
    assert not tls_secrets(objects), "the chart must not make a certificate too"
    selfsigned = only(objects, "Issuer", f"{FULLNAME}-selfsigned")
    assert selfsigned["spec"] == {"selfSigned": {}}
    ca = only(objects, "Certificate", f"{FULLNAME}-ca")
    assert ca["spec"]["isCA"] is True and ca["spec"]["issuerRef"]["name"] == f"{FULLNAME}-selfsigned"
    ca_issuer = only(objects, "Issuer", f"{FULLNAME}-ca")
    assert ca_issuer["spec"]["ca"]["secretName"] == ca["spec"]["secretName"]
    serving = only(objects, "Certificate", f"{FULLNAME}-serving")
    assert serving["spec"]["issuerRef"]["name"] == f"{FULLNAME}-ca"
    assert f"{FULLNAME}.{NAMESPACE}.svc" in serving["spec"]["dnsNames"]
    assert tls_volume_secret(objects) == serving["spec"]["secretName"] != f"{FULLNAME}-tls"
    for config in webhook_configs(objects):
        assert (
            config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
            == f"{NAMESPACE}/{FULLNAME}-serving"
        )
        assert "caBundle" not in config["webhooks"][0]["clientConfig"]


def test_cert_manager_mode_with_an_issuer_of_yours_makes_only_the_serving_certificate() -> None:
    objects = rendered_objects(
        "tls.mode=certManager",
        "tls.certManager.issuerRef.name=corp-ca",
        "tls.certManager.issuerRef.kind=ClusterIssuer",
    )
    assert [o["kind"] for o in objects if o["kind"] in ("Certificate", "Issuer")] == ["Certificate"]
    serving = only(objects, "Certificate")
    assert serving["spec"]["issuerRef"] == {
        "name": "corp-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }


def test_secret_mode_uses_your_secret_and_your_ca_and_makes_nothing() -> None:
    pem = a_ca_pem()
    objects = rendered_objects(
        "tls.mode=secret", "tls.existingSecret=my-tls", values={"tls": {"caBundle": pem}}
    )
    assert not tls_secrets(objects)
    assert not kinds(objects) & {"Certificate", "Issuer"}
    assert tls_volume_secret(objects) == "my-tls"
    for config in webhook_configs(objects):
        assert base64.b64decode(config["webhooks"][0]["clientConfig"]["caBundle"]).decode() == pem
        assert "annotations" not in config["metadata"]


@pytest.mark.parametrize(
    ("sets", "values", "complaint"),
    [
        # A generated certificate must never meet cert-manager's injector, nor be silently ignored.
        (("tls.mode=certManager", "tls.existingSecret=my-tls"), None, "cert-manager's CA injector fills"),
        (
            ("tls.mode=certManager",),
            {"tls": {"caBundle": "-----BEGIN CERTIFICATE-----"}},
            "cert-manager's CA injector fills",
        ),
        (("tls.existingSecret=my-tls",), None, "tls.mode=generate: the chart makes its own certificate"),
        (
            ("tls.certManager.issuerRef.name=corp",),
            None,
            "tls.mode=generate: the chart makes its own certificate",
        ),
        (("tls.mode=secret",), None, "tls.mode=secret needs tls.existingSecret"),
        (("tls.mode=secret", "tls.existingSecret=my-tls"), None, "tls.mode=secret needs tls.caBundle"),
        (
            ("tls.mode=secret", "tls.existingSecret=my-tls", "tls.caBundle=not-a-pem"),
            None,
            "needs tls.caBundle",
        ),
        (
            ("tls.mode=secret", "tls.existingSecret=my-tls", "tls.certManager.issuerRef.name=corp"),
            {"tls": {"caBundle": "-----BEGIN CERTIFICATE-----"}},
            "only used with tls.mode=certManager",
        ),
        (("tls.mode=selfmade",), None, "/tls/mode"),
        (("tls.certManagerInjectFrom=ns/cert",), None, "additional properties 'certManagerInjectFrom'"),
        (("tls.mode=certManager", "tls.certManager.duration=90days"), None, "/tls/certManager/duration"),
    ],
)
def test_mixed_or_incomplete_certificate_settings_are_refused(sets, values, complaint) -> None:
    assert complaint in refusal(*sets, values=values)


# -- safety by default ------------------------------------------------------------------------------


def test_both_containers_are_locked_down_and_have_requests_and_limits() -> None:
    for name, container in containers(rendered_objects()).items():
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"] == {"drop": ["ALL"]}, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert "memory" in container["resources"]["limits"], name


def test_more_than_one_replica_gets_a_disruption_budget_anti_affinity_and_spread() -> None:
    objects = rendered_objects("replicaCount=3")
    assert only(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    [term] = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    [spread] = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert (
        spread["labelSelector"]["matchLabels"]
        == only(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    )

    single = rendered_objects("replicaCount=1")
    assert "PodDisruptionBudget" not in kinds(single)  # it would forbid draining the node
    spec = only(single, "Deployment")["spec"]["template"]["spec"]
    assert "affinity" not in spec and "topologySpreadConstraints" not in spec


def test_priority_class_and_topology_spread_are_values() -> None:
    objects = rendered_objects(
        "priorityClassName=system-cluster-critical",
        values={
            "topologySpreadConstraints": [
                {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}
            ]
        },
    )
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    [spread] = pod["topologySpreadConstraints"]
    assert (spread["maxSkew"], spread["whenUnsatisfiable"]) == (2, "DoNotSchedule")
    assert "/topologySpreadConstraints/0/whenUnsatisfiable" in refusal(
        values={
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": "x", "whenUnsatisfiable": "Sometimes"}
            ]
        }
    )


def test_the_network_policy_admits_only_the_given_peers_to_the_webhook_port() -> None:
    assert "NetworkPolicy" not in kinds(rendered_objects())
    assert "networkPolicy.enabled needs networkPolicy.apiServerPeers" in refusal("networkPolicy.enabled=true")
    objects = rendered_objects(
        "networkPolicy.enabled=true",
        values={
            "networkPolicy": {
                "apiServerPeers": [{"ipBlock": {"cidr": "172.18.0.2/32"}}],
                "metricsPeers": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
                ],
            }
        },
    )
    policy = only(objects, "NetworkPolicy")
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert (
        policy["spec"]["podSelector"]["matchLabels"]
        == only(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    )
    webhook, helm_test, metrics = policy["spec"]["ingress"]
    assert helm_test["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "test"
    assert webhook == {
        "from": [{"ipBlock": {"cidr": "172.18.0.2/32"}}],
        "ports": [{"port": 8443, "protocol": "TCP"}],
    }
    assert {p["port"] for p in metrics["ports"]} == {8443, 8282}
    assert "/networkPolicy/apiServerPeers/0" in refusal(
        "networkPolicy.enabled=true",
        values={"networkPolicy": {"apiServerPeers": [{"cidr": "172.18.0.2/32"}]}},
    )


# -- observability ----------------------------------------------------------------------------------


def test_the_service_monitor_is_opt_in_and_scrapes_both_containers_checking_the_webhook_ca() -> None:
    assert "ServiceMonitor" not in kinds(rendered_objects())
    objects = rendered_objects(
        "metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom"
    )
    monitor = only(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prom"
    service = only(objects, "Service")
    ports = {p["name"] for p in service["spec"]["ports"]}
    ostiary, opa = monitor["spec"]["endpoints"]
    assert {ostiary["port"], opa["port"]} <= ports
    assert ostiary["scheme"] == "https" and ostiary["path"] == "/metrics"
    assert ostiary["tlsConfig"]["ca"]["secret"] == {"name": f"{FULLNAME}-tls", "key": "ca.crt"}
    assert ostiary["tlsConfig"]["serverName"] == f"{FULLNAME}.{NAMESPACE}.svc"
    assert "insecureSkipVerify" not in ostiary["tlsConfig"]

    pem = a_ca_pem()
    mine = rendered_objects(
        "metrics.serviceMonitor.enabled=true",
        "tls.mode=secret",
        "tls.existingSecret=my-tls",
        values={"tls": {"caBundle": pem}},
    )
    endpoint = only(mine, "ServiceMonitor")["spec"]["endpoints"][0]
    ca_map = only(mine, "ConfigMap", endpoint["tlsConfig"]["ca"]["configMap"]["name"])
    assert ca_map["data"]["ca.crt"].strip() == pem.strip()


def test_opa_logs_json_and_its_decision_log_is_an_option() -> None:
    args = containers(rendered_objects())["opa"]["args"]
    assert "--log-format=json" in args and "--set=decision_logs.console=true" not in args
    assert (
        "--set=decision_logs.console=true"
        in containers(rendered_objects("opa.decisionLogs=true"))["opa"]["args"]
    )


# -- policy and Rego sources ------------------------------------------------------------------------

RULE = 'package ostiary.custom.nolatest\n\ndeny contains msg if { false; msg := "x" }\n'
POLICY = {
    "apiVersion": "ostiary.dev/v1",
    "kind": "ClusterImagePolicy",
    "metadata": {"name": "default"},
    "spec": {"repositories": [{"name": "docker.io/library/*", "policy": {"trust": {"enabled": True}}}]},
}


def mounts(container: dict) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}


def volumes(objects: list[dict]) -> dict[str, dict]:
    return {v["name"]: v for v in only(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]}


def test_custom_rego_from_values_and_configmaps_is_mounted_under_the_rego_dir() -> None:
    objects = rendered_objects(
        values={"customRego": {"no-latest.rego": RULE}, "customRegoConfigMaps": ["team-rules"]}
    )
    ostiary = containers(objects)["ostiary"]
    assert "--rego-dir=/etc/ostiary/rego" in ostiary["args"]
    assert mounts(ostiary)["rego-values"] == "/etc/ostiary/rego/values"
    assert mounts(ostiary)["rego-cm-0"] == "/etc/ostiary/rego/team-rules"
    config = only(objects, "ConfigMap", f"{FULLNAME}-config")
    assert config["data"]["no-latest.rego"] == RULE
    assert volumes(objects)["rego-values"]["configMap"]["items"] == [
        {"key": "no-latest.rego", "path": "no-latest.rego"}
    ]
    assert volumes(objects)["rego-cm-0"]["configMap"] == {"name": "team-rules"}
    assert "--rego-dir=/etc/ostiary/rego" not in containers(rendered_objects())["ostiary"]["args"]


def test_cluster_source_creates_policies_from_values_as_resources() -> None:
    objects = rendered_objects(values={"policies": [POLICY]})
    assert only(objects, "ClusterImagePolicy") == POLICY
    args = containers(objects)["ostiary"]["args"]
    assert "--kube" in args and not any(a.startswith("--policy-dir") for a in args)


def test_directory_source_mounts_policies_from_values_and_configmaps_without_cluster_access() -> None:
    objects = rendered_objects(
        "policySource=directory", values={"policies": [POLICY], "policyConfigMaps": ["team"]}
    )
    assert "ClusterImagePolicy" not in kinds(objects)
    ostiary = containers(objects)["ostiary"]
    assert "--policy-dir=/etc/ostiary/policies" in ostiary["args"] and "--kube" not in ostiary["args"]
    assert mounts(ostiary)["policies-values"] == "/etc/ostiary/policies/values"
    assert mounts(ostiary)["policies-cm-0"] == "/etc/ostiary/policies/team"
    [document] = [
        d
        for d in yaml.safe_load_all(only(objects, "ConfigMap", f"{FULLNAME}-config")["data"]["policies.yaml"])
        if d
    ]
    assert document == POLICY
    # Nothing is read from the API: no role, and no webhook for policy resources it does not read.
    release = [o for o in objects if "helm.sh/hook" not in (o["metadata"].get("annotations") or {})]
    assert not kinds(release) & {"ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration"}


@pytest.mark.parametrize(
    ("sets", "values", "complaint"),
    [
        (("policySource=directory",), None, "policySource=directory needs `policies` or `policyConfigMaps`"),
        (("policyConfigMaps[0]=team",), None, "policyConfigMaps are read only with policySource=directory"),
        (("customRegoConfigMaps[0]=values",), None, 'a ConfigMap named "values" cannot be mounted'),
        (("customRegoConfigMaps[0]=Bad_Name",), None, "/customRegoConfigMaps/0"),
        ((), {"customRego": {"no-latest.txt": RULE}}, "'no-latest.txt' does not match pattern"),
        (
            (),
            {"policies": [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}]},
            "/policies/0/kind",
        ),
    ],
)
def test_bad_policy_sources_are_refused(sets, values, complaint) -> None:
    assert complaint in refusal(*sets, values=values)


# -- upgrade and uninstall --------------------------------------------------------------------------


def test_upgrades_keep_a_ready_pod_and_uninstall_deletes_the_webhooks_first() -> None:
    objects = rendered_objects()
    strategy = only(objects, "Deployment")["spec"]["strategy"]
    assert strategy["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
    hook_objects = hooks(objects, "pre-delete")
    assert {o["metadata"]["annotations"]["helm.sh/hook"] for o in hook_objects} == {"pre-delete"}
    job = only(hook_objects, "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:3] == [
        "delete",
        f"mutatingwebhookconfiguration/{FULLNAME}",
        f"validatingwebhookconfiguration/{FULLNAME}",
    ]
    [rule] = only(hook_objects, "ClusterRole")["rules"]
    assert rule["resourceNames"] == [FULLNAME] and set(rule["verbs"]) == {"get", "delete"}
    # The RBAC exists before the Job runs.
    weights = {o["kind"]: int(o["metadata"]["annotations"]["helm.sh/hook-weight"]) for o in hook_objects}
    assert weights["Job"] > max(w for kind, w in weights.items() if kind != "Job")
    assert not hooks(rendered_objects("uninstallHook.enabled=false"), "pre-delete")
