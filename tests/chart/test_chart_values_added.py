"""What the image needs, set by the chart (state directory, root pins), the version the chart installs,
and the values users expect: names, a mirror registry, extra env/volumes, `helm test`, alerts, a
dashboard, a checked notaryCABundle, and a ServiceMonitor the chart's own NetworkPolicy lets through
(real helm; the test pod's script runs for real against a TLS server)."""

from __future__ import annotations

import configparser
import json
import re
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

import app
from tests.chart.chart import (
    CHART,
    containers,
    exported_metric_names,
    hooks,
    kinds,
    only,
    refusal,
    registered_webhooks,
    rendered_objects,
)
from tests.chart.test_chart_modes import FULLNAME, NAMESPACE, a_ca_pem
from tests.e2e.cluster import REPO
from tests.support import pki

STATE_DIR = "/var/lib/ostiary"


def pod_spec(objects: list[dict]) -> dict:
    return only(objects, "Deployment")["spec"]["template"]["spec"]


def mounts(container: dict) -> dict[str, dict]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def volumes(objects: list[dict]) -> dict[str, dict]:
    return {v["name"]: v for v in pod_spec(objects)["volumes"]}


DIRECTORY = ("policySource=directory", "policyConfigMaps[0]=team")

# -- a. the state directory -------------------------------------------------------------------------


def test_directory_mode_gives_ostiary_a_writable_state_directory_on_an_empty_dir_by_default() -> None:
    """The directory-mode crash: the image user has no home and the root filesystem is read-only, so
    the default state directory cannot be made; the chart must pass one on a writable volume."""
    objects = rendered_objects(*DIRECTORY)
    ostiary = containers(objects)["ostiary"]
    assert f"--state-dir={STATE_DIR}" in ostiary["args"]
    assert ostiary["securityContext"]["readOnlyRootFilesystem"] is True
    state = mounts(ostiary)["state"]
    assert state["mountPath"] == STATE_DIR and not state.get("readOnly")
    assert volumes(objects)["state"] == {"name": "state", "emptyDir": {"sizeLimit": "64Mi"}}
    assert not any(a.startswith("--state-dir") for a in ostiary["args"] if a != f"--state-dir={STATE_DIR}")


def test_directory_mode_can_keep_records_on_a_claim_of_yours() -> None:
    objects = rendered_objects(
        *DIRECTORY, "stateVolume.type=persistentVolumeClaim", "stateVolume.existingClaim=ostiary-state"
    )
    assert volumes(objects)["state"] == {
        "name": "state",
        "persistentVolumeClaim": {"claimName": "ostiary-state"},
    }


def test_cluster_mode_keeps_records_as_trust_records_and_mounts_no_state() -> None:
    objects = rendered_objects()
    ostiary = containers(objects)["ostiary"]
    assert "--kube" in ostiary["args"] and not any(a.startswith("--state-dir") for a in ostiary["args"])
    assert "state" not in volumes(objects)


@pytest.mark.parametrize(
    ("sets", "complaint"),
    [
        (
            ("stateVolume.type=persistentVolumeClaim", "stateVolume.existingClaim=x"),
            "stateVolume is for policySource=directory",
        ),
        ((*DIRECTORY, "stateVolume.type=persistentVolumeClaim"), "needs stateVolume.existingClaim"),
        ((*DIRECTORY, "stateVolume.existingClaim=x"), "only with stateVolume.type=persistentVolumeClaim"),
        ((*DIRECTORY, "stateVolume.type=hostPath"), "/stateVolume/type"),
    ],
)
def test_bad_state_volumes_are_refused(sets, complaint) -> None:
    assert complaint in refusal(*sets)


def test_every_path_ostiary_writes_is_on_a_writable_volume() -> None:
    """The chart sets what the image needs: nothing in `extraArgs`, and the only paths `serve` writes
    (the state directory, temporary files) are writable mounts."""
    for sets in ((), DIRECTORY):
        objects = rendered_objects(*sets)
        ostiary = containers(objects)["ostiary"]
        writable = {m["mountPath"] for m in ostiary["volumeMounts"] if not m.get("readOnly")}
        assert "/tmp" in writable
        for arg in ostiary["args"]:
            if arg.startswith("--state-dir="):
                assert arg.split("=", 1)[1] in writable


# -- b. version --------------------------------------------------------------------------------------


def test_the_chart_version_app_version_package_version_and_default_image_tag_agree() -> None:
    chart = yaml.safe_load((Path(CHART) / "Chart.yaml").read_text())
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    package = setup["metadata"]["version"]
    assert chart["version"] == chart["appVersion"] == package == app.__version__, (
        f"Chart.yaml version {chart['version']}, appVersion {chart['appVersion']}, setup.cfg {package}, "
        f"app.__version__ {app.__version__}"
    )
    assert containers(rendered_objects())["ostiary"]["image"] == f"ghcr.io/ostiary/ostiary:{package}"
    assert f"REGISTRY/ostiary:{package}" in (REPO / "docs" / "kubernetes.md").read_text()


# -- c. root pins --------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["configMap", "secret"])
def test_root_pins_from_a_configmap_or_secret_are_mounted_and_passed(source: str) -> None:
    objects = rendered_objects(f"rootPins.{source}=notary-pins", "rootPins.key=pins.yaml")
    ostiary = containers(objects)["ostiary"]
    assert "--root-pins=/etc/ostiary/root-pins/pins.yaml" in ostiary["args"]
    assert mounts(ostiary)["root-pins"] == {
        "name": "root-pins",
        "mountPath": "/etc/ostiary/root-pins",
        "readOnly": True,
    }
    volume = volumes(objects)["root-pins"]
    items = [{"key": "pins.yaml", "path": "pins.yaml"}]
    if source == "configMap":
        assert volume["configMap"] == {"name": "notary-pins", "items": items}
    else:
        assert volume["secret"] == {"secretName": "notary-pins", "items": items}
    assert not any(a.startswith("--root-pins") for a in containers(rendered_objects())["ostiary"]["args"])
    assert "not both" in refusal("rootPins.configMap=a", "rootPins.secret=b")


@pytest.mark.parametrize("source", ["configMap", "secret"])
def test_a_sigstore_trusted_root_from_a_configmap_or_secret_is_mounted_and_passed(source: str) -> None:
    objects = rendered_objects(f"sigstoreTrustedRoot.{source}=private-sigstore")
    ostiary = containers(objects)["ostiary"]
    assert "--sigstore-trusted-root=/etc/ostiary/sigstore/trusted_root.json" in ostiary["args"]
    assert mounts(ostiary)["sigstore-root"]["readOnly"] is True
    volume = volumes(objects)["sigstore-root"]
    items = [{"key": "trusted_root.json", "path": "trusted_root.json"}]
    if source == "configMap":
        assert volume["configMap"] == {"name": "private-sigstore", "items": items}
    else:
        assert volume["secret"] == {"secretName": "private-sigstore", "items": items}
    assert not any(a.startswith("--sigstore") for a in containers(rendered_objects())["ostiary"]["args"])
    assert "not both" in refusal("sigstoreTrustedRoot.configMap=a", "sigstoreTrustedRoot.secret=b")


def test_trust_server_allow_list_and_record_cap_are_passed_to_serve() -> None:
    args = containers(
        rendered_objects("trustServerAllow[0]=https://notary.team.example:4443", "maxTrustRecords=500")
    )["ostiary"]["args"]
    assert "--trust-server-allow=https://notary.team.example:4443" in args
    assert "--max-trust-records=500" in args
    assert "--max-trust-records=10000" in containers(rendered_objects())["ostiary"]["args"]
    assert refusal("trustServerAllow[0]=http://plain.example")  # the schema takes https URLs or "*" only


# -- e. ServiceMonitor and NetworkPolicy ------------------------------------------------------------

API = {"networkPolicy": {"enabled": True, "apiServerPeers": [{"ipBlock": {"cidr": "10.0.0.1/32"}}]}}
PROMETHEUS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]


def test_a_service_monitor_behind_the_charts_network_policy_needs_the_prometheus_peers() -> None:
    complaint = refusal("metrics.serviceMonitor.enabled=true", values=API)
    assert "needs networkPolicy.metricsPeers" in complaint and "blocks the scrapes" in complaint
    values = {"networkPolicy": {**API["networkPolicy"], "metricsPeers": PROMETHEUS}}
    objects = rendered_objects("metrics.serviceMonitor.enabled=true", values=values)
    policy = only(objects, "NetworkPolicy")
    monitor = only(objects, "ServiceMonitor")
    service_ports = {p["name"]: p["targetPort"] for p in only(objects, "Service")["spec"]["ports"]}
    container_ports = {
        p["name"]: p["containerPort"] for c in containers(objects).values() for p in c.get("ports", [])
    }
    scraped = {container_ports[service_ports[e["port"]]] for e in monitor["spec"]["endpoints"]}
    admitted = {
        p["port"] for rule in policy["spec"]["ingress"] if rule["from"] == PROMETHEUS for p in rule["ports"]
    }
    assert scraped <= admitted, f"the ServiceMonitor scrapes {scraped}, Prometheus may reach {admitted}"


def test_the_network_policy_lets_this_releases_test_pod_reach_the_webhook_port() -> None:
    objects = rendered_objects(values=API)
    test_pod = only(hooks(objects, "test"), "Pod")
    rules = only(objects, "NetworkPolicy")["spec"]["ingress"]
    [rule] = [r for r in rules if "podSelector" in r["from"][0]]
    selector = rule["from"][0]["podSelector"]["matchLabels"]
    assert selector.items() <= test_pod["metadata"]["labels"].items()
    assert rule["ports"] == [{"port": 8443, "protocol": "TCP"}]
    assert not [
        r
        for r in only(rendered_objects("test.enabled=false", values=API), "NetworkPolicy")["spec"]["ingress"]
        if "podSelector" in r["from"][0]
    ]


# -- f. names, registry, extras ------------------------------------------------------------------------


def test_fullname_override_names_every_object_and_the_webhooks_call_that_service() -> None:
    objects = rendered_objects("fullnameOverride=gate")
    named = {o["metadata"]["name"] for o in objects if o["kind"] not in ("CustomResourceDefinition",)}
    assert not [n for n in named if "t-ostiary" in n], named
    assert {"gate", "gate-tls", "gate-register", "gate-uninstall", "gate-test"} <= named
    hook = registered_webhooks(objects, "MutatingWebhookConfiguration")["webhooks"][0]
    assert hook["clientConfig"]["service"]["name"] == only(objects, "Service")["metadata"]["name"] == "gate"


def test_name_override_replaces_the_charts_name_in_names_and_labels() -> None:
    objects = rendered_objects("nameOverride=gatekeeper")
    deployment = only(objects, "Deployment")
    assert deployment["metadata"]["name"] == "t-gatekeeper"
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "gatekeeper"
    assert only(objects, "Service")["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert "/fullnameOverride" in refusal("fullnameOverride=Not_A_Name")


def all_pod_images(objects: list[dict]) -> dict[str, str]:
    images = {}
    for o in objects:
        spec = o["spec"] if o["kind"] == "Pod" else o.get("spec", {}).get("template", {}).get("spec")
        if not spec:
            continue
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            images[f"{o['kind']}/{o['metadata']['name']}/{c['name']}"] = c["image"]
    return images


def test_a_global_registry_replaces_the_registry_of_every_image_the_chart_runs() -> None:
    plain = all_pod_images(rendered_objects())
    images = all_pod_images(
        rendered_objects("global.imageRegistry=mirror.corp:5000/k8s", "opa.image.digest=sha256:" + "a" * 64)
    )
    assert set(images) == set(plain) and len(images) >= 6
    assert images == {
        "Deployment/t-ostiary/ostiary": "mirror.corp:5000/k8s/ostiary/ostiary:0.2.0",
        "Deployment/t-ostiary/opa": "mirror.corp:5000/k8s/openpolicyagent/opa@sha256:" + "a" * 64,
        "Job/t-ostiary-register/wait-for-ready-webhook-pods": "mirror.corp:5000/k8s/kubectl:v1.34.3",
        "Job/t-ostiary-register/register-webhooks": "mirror.corp:5000/k8s/kubectl:v1.34.3",
        "Job/t-ostiary-uninstall/delete-webhooks": "mirror.corp:5000/k8s/kubectl:v1.34.3",
        "Pod/t-ostiary-test/readyz": "mirror.corp:5000/k8s/ostiary/ostiary:0.2.0",
    }
    assert "/global/imageRegistry" in refusal("global.imageRegistry=https://mirror")


def test_extra_env_volumes_and_mounts_reach_the_ostiary_container() -> None:
    objects = rendered_objects(
        values={
            "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
            "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
            "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
        }
    )
    ostiary = containers(objects)["ostiary"]
    assert {"name": "HTTPS_PROXY", "value": "http://proxy:3128"} in ostiary["env"]
    assert mounts(ostiary)["corp-ca"]["mountPath"] == "/etc/corp-ca"
    assert volumes(objects)["corp-ca"] == {"name": "corp-ca", "configMap": {"name": "corp-ca"}}
    assert "env" not in containers(rendered_objects())["ostiary"]
    assert "/extraVolumeMounts/0" in refusal(values={"extraVolumeMounts": [{"name": "x"}]})


# -- f. notaryCABundle ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bundle", "complaint"),
    [
        ("x", "notaryCABundle must be PEM CA certificates"),
        ("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n", "is not base64 of a DER"),
        (
            "-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----\n",
            "is not base64 of a DER certificate",
        ),
        ("-----BEGIN CERTIFICATE-----\nMIIB\n", "is not terminated"),
    ],
)
def test_a_notary_ca_bundle_that_is_not_pem_is_refused_at_render_time(bundle: str, complaint: str) -> None:
    assert complaint in refusal(values={"notaryCABundle": bundle})


def test_a_pem_notary_ca_bundle_with_comments_and_two_certificates_renders() -> None:
    bundle = f"# corp root\n{a_ca_pem()}\n# corp intermediate\n{a_ca_pem()}"
    objects = rendered_objects(values={"notaryCABundle": bundle})
    assert "--ca-file=/etc/ostiary/notary-ca/notary-ca.pem" in containers(objects)["ostiary"]["args"]
    assert only(objects, "ConfigMap", f"{FULLNAME}-config")["data"]["notary-ca.pem"].strip() == bundle.strip()


# -- f. helm test ----------------------------------------------------------------------------------------


def helm_test_pod(objects: list[dict]) -> dict:
    return only(hooks(objects, "test"), "Pod")


def test_helm_test_is_a_restricted_pod_outside_the_services_selection() -> None:
    objects = rendered_objects()
    pod = helm_test_pod(objects)
    selector = only(objects, "Service")["spec"]["selector"]
    assert not selector.items() <= pod["metadata"]["labels"].items(), "the Service would route to it"
    [container] = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["spec"]["automountServiceAccountToken"] is False
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["SERVICE_NAME"] == f"{FULLNAME}.{NAMESPACE}.svc" and env["SERVICE_PORT"] == "443"
    [ca] = pod["spec"]["volumes"]
    assert ca["secret"]["secretName"] == f"{FULLNAME}-tls"
    assert "Pod" not in kinds(hooks(rendered_objects("test.enabled=false"), "test"))


class _Readyz(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b'{"ready": true}' if self.status == 200 else b'{"ready": false}'
        self.send_response(self.status if self.path == "/readyz" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def run_test_pod_script(
    tmp_path: Path, status: int, *, trusted: bool = True, tls_mode: str = "generate"
) -> subprocess.CompletedProcess[str]:
    """Serve /readyz over TLS for the Service's DNS name on loopback and run the rendered test pod's
    script with the pod's environment (the Service address from the env var, as without cluster DNS)."""
    service = f"{FULLNAME}.{NAMESPACE}.svc"
    ca = pki.CA.create()
    key, cert = ca.issue_server((service,), ("127.0.0.1",))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(
        pki.write(tmp_path / "tls.crt", pki.cert_pem(cert)),
        pki.write(tmp_path / "tls.key", pki.private_key_pem(key)),
    )
    handler = type("Handler", (_Readyz,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ca_pem = pki.cert_pem(ca.cert if trusted else pki.CA.create().cert)
    sets = ["tls.mode=secret", "tls.existingSecret=mine"] if tls_mode == "secret" else []
    values = {"tls": {"caBundle": ca_pem}} if tls_mode == "secret" else None
    try:
        [container] = helm_test_pod(
            rendered_objects(*sets, f"service.port={server.server_address[1]}", values=values)
        )["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        if "CA_FILE" in env:
            env["CA_FILE"] = str(pki.write(tmp_path / "ca.crt", ca_pem))
        env[env["SERVICE_ENV"] + "_SERVICE_HOST"] = "127.0.0.1"
        assert container["command"] == ["python3", "-c"]
        return subprocess.run(
            [sys.executable, "-c", container["args"][0]],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        server.shutdown()
        server.server_close()


def test_the_test_pods_script_passes_only_on_a_ready_webhook_with_the_right_certificate(
    tmp_path: Path,
) -> None:
    ready = run_test_pod_script(tmp_path, 200)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert "/readyz (127.0.0.1): HTTP/1.0 200" in ready.stdout
    not_ready = run_test_pod_script(tmp_path, 503)
    assert not_ready.returncode == 1 and "503" in not_ready.stdout
    impostor = run_test_pod_script(tmp_path, 200, trusted=False)
    assert impostor.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in impostor.stderr
    own_ca = run_test_pod_script(tmp_path, 200, tls_mode="secret")
    assert own_ca.returncode == 0, own_ca.stdout + own_ca.stderr


# -- f. PrometheusRule and Grafana dashboard -------------------------------------------------------


def promql_metrics(expr: str) -> set[str]:
    """Metric names an expression selects (identifiers followed by { or [ or a space-free end)."""
    names = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", expr))
    return names - {"sum", "rate", "absent", "histogram_quantile", "max", "by"}


def known_metric(name: str, exported: set[str]) -> bool:
    """An exported family, a histogram's _bucket series, Prometheus's `up`, or OPA's own histogram."""
    return (
        name in exported
        or name.removesuffix("_bucket") in exported
        or name in {"up", "http_request_duration_seconds_bucket"}
    )


def test_the_prometheus_rule_alerts_on_metrics_ostiary_really_exports() -> None:
    assert "PrometheusRule" not in kinds(rendered_objects("metrics.serviceMonitor.enabled=true"))
    assert "needs metrics.serviceMonitor.enabled" in refusal("metrics.prometheusRule.enabled=true")
    objects = rendered_objects(
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "metrics.prometheusRule.labels.release=prom",
    )
    rule = only(objects, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prom"
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {
        "OstiaryWebhookDown",
        "OstiaryOPANotReady",
        "OstiaryHighDenialRate",
        "OstiaryAdmissionErrors",
        "OstiaryTrustServerErrors",
        "OstiaryTrustNotVerified",
    }
    exported = exported_metric_names()
    for name, alert in alerts.items():
        used = promql_metrics(alert["expr"])
        assert used, name
        assert all(known_metric(m, exported) for m in used), (name, used)
        assert f'namespace="{NAMESPACE}", job="{FULLNAME}"' in alert["expr"], name
        assert alert["labels"]["severity"] in ("warning", "critical")
    # The ServiceMonitor's port names are the endpoint labels the alerts select.
    ports = {e["port"] for e in only(objects, "ServiceMonitor")["spec"]["endpoints"]}
    assert 'endpoint="https"' in alerts["OstiaryWebhookDown"]["expr"] and "https" in ports
    assert 'endpoint="opa-metrics"' in alerts["OstiaryOPANotReady"]["expr"] and "opa-metrics" in ports
    assert "> 0.5" in alerts["OstiaryHighDenialRate"]["expr"]
    assert "[10m]" in alerts["OstiaryAdmissionErrors"]["expr"]


def test_the_grafana_dashboard_is_opt_in_and_charts_metrics_ostiary_really_exports() -> None:
    assert not [o for o in rendered_objects() if o["metadata"]["name"].endswith("-dashboard")]
    objects = rendered_objects("metrics.grafanaDashboard.enabled=true")
    config = only(objects, "ConfigMap", f"{FULLNAME}-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config["data"]["ostiary.json"])
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = set().union(*(promql_metrics(e) for e in exprs))
    exported = exported_metric_names()
    assert all(known_metric(m, exported) for m in used), used
    assert {"ostiary_admission_requests_total", "ostiary_admission_duration_seconds_bucket"} <= used


def _bounds_of(args: list[str]):
    """The bounds `ostiary serve` derives from the chart's bound arguments (its own option parser)."""
    import click
    from click.testing import CliRunner

    from app.cli.options import bounds_options

    seen = {}

    @click.command()
    @bounds_options
    def command(bounds) -> None:
        seen["bounds"] = bounds

    flags = (
        "--opa-memory-limit",
        "--max-policy-entries",
        "--max-namespace-policy-bytes",
        "--max-policy-bytes",
    )
    done = CliRunner().invoke(command, [a for a in args if a.startswith((*flags, "--opa-push-budget"))])
    assert done.exit_code == 0, done.output
    return seen["bounds"]


def test_policy_bounds_follow_the_opa_containers_memory_limit() -> None:
    from app.policies.bounds import DEFAULT_BOUNDS

    args = containers(rendered_objects())["ostiary"]["args"]
    assert "--opa-memory-limit=256Mi" in args and "--max-policy-entries=500" in args
    assert not any(a.startswith(("--max-policy-bytes", "--max-namespace", "--opa-push")) for a in args)
    assert _bounds_of(args) == DEFAULT_BOUNDS  # 1216 KiB, 2432 KiB, 2560 KiB pushed at once
    # A larger OPA: every byte bound grows with it; a smaller one shrinks them.
    larger = _bounds_of(containers(rendered_objects("opa.resources.limits.memory=1Gi"))["ostiary"]["args"])
    smaller = _bounds_of(containers(rendered_objects("opa.resources.limits.memory=192Mi"))["ostiary"]["args"])
    assert smaller.max_push_bytes < DEFAULT_BOUNDS.max_push_bytes < larger.max_push_bytes
    assert smaller.max_total_bytes < DEFAULT_BOUNDS.max_total_bytes < larger.max_total_bytes
    assert larger.max_scope_bytes == larger.max_total_bytes // 2
    # A limit in bytes renders as digits, not as a float in exponent form.
    args = containers(rendered_objects("opa.resources.limits.memory=536870912"))["ostiary"]["args"]
    assert "--opa-memory-limit=536870912" in args


def test_each_policy_bound_is_a_value() -> None:
    values = {
        "policyBounds": {
            "maxEntries": 200,
            "maxNamespaceBytes": 262144,
            "maxTotalBytes": 2097152,
            "opaPushBudget": 3145728,
        }
    }
    args = containers(rendered_objects(values=values))["ostiary"]["args"]
    for arg in (
        "--max-policy-entries=200",
        "--max-namespace-policy-bytes=262144",
        "--max-policy-bytes=2097152",
        "--opa-push-budget=3145728",
    ):
        assert arg in args, args
    bounds = _bounds_of(args)
    assert (bounds.max_entries, bounds.max_scope_bytes, bounds.max_total_bytes, bounds.max_push_bytes) == (
        200,
        262144,
        2097152,
        3145728,
    )
    assert refusal("policyBounds.maxEntries=501")  # the CRDs' maxItems
    assert refusal("policyBounds.maxTotalBytes=0")
    assert refusal("policyBounds.unknown=1")
