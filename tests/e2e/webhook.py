"""Ostiary as the test control plane's webhook: `ostiary serve --kube` on loopback, registered by URL.

Ostiary runs as a local process (there is no kubelet), with:
- the chart's RBAC (rendered by helm from helm/ostiary/templates/rbac.yaml) bound to the
  ServiceAccount ``ostiary-system/ostiary``, whose user name the ``ostiary`` token carries — so these
  tests prove the chart's least-privilege role is enough;
- its own OPA (``opa run --server`` on a loopback port, the sidecar's role), which a test may stop and
  start again empty to check the resync;
- a MutatingWebhookConfiguration with the chart's rules, pointing at ``https://127.0.0.1:PORT/admit``.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from app.workloads import webhook_resources
from tests.e2e.cluster import REPO, ControlPlane, Process, free_port, start_process, tool
from tests.support import pki

OSTIARY_BIN = REPO / ".venv" / "bin" / "ostiary"
WEBHOOK_RESOURCES = list(webhook_resources().items())  # the chart's rules, from app/workloads.py
INSTANCE_LABEL = "e2e.ostiary.dev/instance"
RUNNING: list[Ostiary] = []  # every started instance: a policy change is "in force" when all hold it


def chart_rbac(release: str = "ostiary", namespace: str = "ostiary-system") -> list[dict]:
    """The chart's ClusterRole and ClusterRoleBinding, rendered by the pinned helm."""
    out = subprocess.run(
        [
            tool("helm"),
            "template",
            release,
            str(REPO / "helm" / "ostiary"),
            "--namespace",
            namespace,
            "--show-only",
            "templates/rbac.yaml",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def apply_rbac(api_client, documents: list[dict]) -> None:
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    rbac = client.RbacAuthorizationV1Api(api_client)
    for doc in documents:
        create = {
            "ClusterRole": rbac.create_cluster_role,
            "ClusterRoleBinding": rbac.create_cluster_role_binding,
        }[doc["kind"]]
        try:
            create(doc)
        except ApiException as exc:
            if exc.status != 409:
                raise


@dataclass
class Ostiary:
    """One running Ostiary (and its OPA), registered as a webhook for some namespaces."""

    plane: ControlPlane
    name: str
    workdir: Path
    ca_file: str | None = None  # extra CA for Notary servers
    select_instance: bool = False  # only namespaces labelled INSTANCE_LABEL=name
    rego_dir: str | None = None  # custom Rego folder (--rego-dir)
    registry_endpoints: tuple[str, ...] = ()  # HOST=URL (--registry-endpoint), for the signature verifiers
    sigstore_trusted_root: str | None = None  # keyless cosign's trusted_root.json (--sigstore-trusted-root)
    # Trust servers namespace ImagePolicies may name besides the cluster policies' (--trust-server-allow).
    trust_server_allow: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()  # more `ostiary serve` flags
    url: str = ""
    opa_url: str = ""
    opa_port: int = 0
    processes: dict[str, Process] = field(default_factory=dict)
    tls_ca: pki.CA = field(default_factory=pki.CA.create)
    startup_seconds: float = 0.0

    def start(self, timeout: float = 60.0) -> Ostiary:
        begin = time.monotonic()
        if not os.access(OSTIARY_BIN, os.X_OK):
            raise RuntimeError(f"{OSTIARY_BIN} is missing: pip install -e '.[test]' into .venv")
        self.workdir.mkdir(parents=True, exist_ok=True)
        key, cert = self.tls_ca.issue_server(("localhost",), ("127.0.0.1",))
        self.cert_file = pki.write(self.workdir / "tls.crt", pki.cert_pem(cert))
        self.key_file = pki.write(self.workdir / "tls.key", pki.private_key_pem(key))
        self.tls_ca_file = pki.write(self.workdir / "ca.crt", pki.cert_pem(self.tls_ca.cert))
        self.opa_port = free_port()
        self.opa_url = f"http://127.0.0.1:{self.opa_port}"
        self.start_opa()
        self.start_server(timeout)
        self.register()
        RUNNING.append(self)
        self.startup_seconds = time.monotonic() - begin
        return self

    def start_server(self, timeout: float = 60.0) -> None:
        """Start `ostiary serve --kube` against the running OPA (a sidecar that outlives it) and wait for ready."""
        port = free_port() if not self.url else int(self.url.rsplit(":", 1)[1])
        argv = [
            str(OSTIARY_BIN),
            "--log-level",
            "INFO",
            "serve",
            "--kube",
            "--kubeconfig",
            str(self.plane.kubeconfig("ostiary")),
            "--listen",
            f"127.0.0.1:{port}",
            "--tls-cert",
            str(self.cert_file),
            "--tls-key",
            str(self.key_file),
            "--opa-url",
            self.opa_url,
            "--system-namespace",
            "ostiary-system",
        ]
        if self.ca_file:
            argv += ["--ca-file", self.ca_file]
        if self.rego_dir:
            argv += ["--rego-dir", self.rego_dir]
        for endpoint in self.registry_endpoints:
            argv += ["--registry-endpoint", endpoint]
        for server in self.trust_server_allow:
            argv += ["--trust-server-allow", server]
        if self.sigstore_trusted_root:
            argv += ["--sigstore-trusted-root", self.sigstore_trusted_root]
        argv += list(self.extra_args)
        self.processes["ostiary"] = start_process(f"ostiary-{self.name}", argv, self.workdir)
        self.url = f"https://127.0.0.1:{port}"
        self.wait_ready(timeout)

    def stop_server(self) -> None:
        """Stop Ostiary only; its OPA keeps running with whatever it holds (the chart's sidecar topology)."""
        self.processes["ostiary"].stop()

    def opa_modules(self) -> dict[str, str]:
        """Every policy module OPA holds: id -> source."""
        with urllib.request.urlopen(f"{self.opa_url}/v1/policies", timeout=5) as response:
            return {m["id"]: m["raw"] for m in json.loads(response.read())["result"]}

    def put_opa_module(self, module_id: str, source: str) -> None:
        """Write a module into OPA behind Ostiary's back (what an intruder or an old process leaves)."""
        request = urllib.request.Request(
            f"{self.opa_url}/v1/policies/{module_id}",
            data=source.encode(),
            method="PUT",
            headers={"Content-Type": "text/plain"},
        )
        with urllib.request.urlopen(request, timeout=5):
            pass

    def put_opa_data(self, path: str, document: str) -> None:
        """Write a data document into OPA behind Ostiary's back."""
        request = urllib.request.Request(
            f"{self.opa_url}/v1/data/{path}",
            data=document.encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5):
            pass

    def opa_module(self, module_id: str) -> str | None:
        """The source OPA holds under `module_id`, None when it holds none. A policy's id names a
        data document (app/policies/translate.py): its canonical JSON text, as Ostiary writes it."""
        if module_id.startswith("ostiary_policies/"):
            from app.policies.translate import canonical_json

            with urllib.request.urlopen(f"{self.opa_url}/v1/data/{module_id}", timeout=2) as response:
                answer = json.loads(response.read())
            return canonical_json(answer["result"]) if "result" in answer and answer["result"] else None
        try:
            with urllib.request.urlopen(f"{self.opa_url}/v1/policies/{module_id}", timeout=2) as response:
                return json.loads(response.read())["result"]["raw"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def start_opa(self) -> None:
        self.processes["opa"] = start_process(
            f"opa-{self.name}",
            [
                tool("opa"),
                "run",
                "--server",
                f"--addr=127.0.0.1:{self.opa_port}",
                "--log-level=error",
                "--skip-version-check",
            ],
            self.workdir,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.opa_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"OPA did not start:\n{self.processes['opa'].tail()}")

    def stop_opa(self) -> None:
        self.processes["opa"].stop()

    def readyz(self) -> tuple[int, str]:
        context = ssl.create_default_context(cafile=str(self.tls_ca_file))
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", context=context, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            proc = self.processes["ostiary"]
            if proc.popen.poll() is not None:
                raise RuntimeError(f"ostiary exited with {proc.popen.returncode}:\n{proc.tail(60)}")
            status, last = self.readyz()
            if status == 200:
                return
            time.sleep(0.25)
        raise RuntimeError(
            f"ostiary not ready after {timeout}s ({last}):\n{self.processes['ostiary'].tail(60)}"
        )

    def webhook_configuration(self) -> dict:
        expressions = [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": ["kube-system", "ostiary-system"],
            }
        ]
        if self.select_instance:
            expressions.append({"key": INSTANCE_LABEL, "operator": "In", "values": [self.name]})
        else:
            expressions.append({"key": INSTANCE_LABEL, "operator": "DoesNotExist"})
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": f"ostiary-e2e-{self.name}"},
            "webhooks": [
                {
                    "name": f"{self.name}.e2e.ostiary.dev",
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": {
                        "url": f"{self.url}/admit",
                        "caBundle": _b64(pki.cert_pem(self.tls_ca.cert)),
                    },
                    "rules": [
                        {
                            "apiGroups": [group],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": resources,
                            "scope": "Namespaced",
                        }
                        for group, resources in WEBHOOK_RESOURCES
                    ],
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "timeoutSeconds": 10,
                    "reinvocationPolicy": "IfNeeded",
                    "matchPolicy": "Equivalent",
                    "namespaceSelector": {"matchExpressions": expressions},
                }
            ],
        }

    def validating_configuration(self) -> dict:
        """The chart's ValidatingWebhookConfiguration for policy resources, pointing at this Ostiary's /validate."""
        from app.policies.kinds import POLICY_KINDS

        rules = [
            {
                "apiGroups": [kind.group],
                "apiVersions": [kind.version],
                "operations": ["CREATE", "UPDATE"],
                "resources": [kind.plural],
                "scope": "Namespaced" if kind.namespaced else "Cluster",
            }
            for kind in POLICY_KINDS
        ]
        return {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": f"ostiary-e2e-validate-{self.name}"},
            "webhooks": [
                {
                    "name": f"policies.{self.name}.e2e.ostiary.dev",
                    "admissionReviewVersions": ["v1"],
                    "clientConfig": {
                        "url": f"{self.url}/validate",
                        "caBundle": _b64(pki.cert_pem(self.tls_ca.cert)),
                    },
                    "rules": rules,
                    "failurePolicy": "Fail",
                    "sideEffects": "None",
                    "timeoutSeconds": 10,
                    "matchPolicy": "Equivalent",
                }
            ],
        }

    @contextlib.contextmanager
    def validating(self):
        """The validating webhook for policies registered while the block runs (then removed)."""
        from kubernetes import client

        api = client.AdmissionregistrationV1Api(self.plane.api_client("admin"))
        body = self.validating_configuration()
        api.create_validating_webhook_configuration(body)
        try:
            yield body
        finally:
            api.delete_validating_webhook_configuration(body["metadata"]["name"])

    def register(self) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        api = client.AdmissionregistrationV1Api(self.plane.api_client("admin"))
        body = self.webhook_configuration()
        try:
            api.create_mutating_webhook_configuration(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            api.delete_mutating_webhook_configuration(body["metadata"]["name"])
            api.create_mutating_webhook_configuration(body)

    def unregister(self) -> None:
        from kubernetes import client

        with contextlib.suppress(Exception):  # teardown; the control plane goes away anyway
            client.AdmissionregistrationV1Api(
                self.plane.api_client("admin")
            ).delete_mutating_webhook_configuration(f"ostiary-e2e-{self.name}")

    def log(self, lines: int = 80) -> str:
        return self.processes["ostiary"].tail(lines)

    def stop(self) -> None:
        if self in RUNNING:
            RUNNING.remove(self)
        self.unregister()
        for name in ("ostiary", "opa"):
            proc = self.processes.get(name)
            if proc is not None:
                proc.stop()


@contextlib.contextmanager
def running(instance: Ostiary):
    """Start an Ostiary under test, print its log tail if anything fails, always stop it."""
    try:
        instance.start()
        yield instance
    except BaseException:
        print(instance.log(120) if instance.processes.get("ostiary") else "")
        raise
    finally:
        instance.stop()


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def expected_module(obj: dict):
    """The Rego module Ostiary makes of a policy object (the same functions it runs)."""
    from app.policies.kinds import POLICY_KINDS, as_document, object_key, origin_of
    from app.policies.schema import parse_policy_document
    from app.policies.translate import translate

    kind = next(k for k in POLICY_KINDS if k.api_version == obj["apiVersion"] and k.kind == obj["kind"])
    return translate(parse_policy_document(as_document(kind, obj), origin_of(object_key(kind, obj))))


def wait_in_force(obj: dict | None, module_id: str | None = None, timeout: float = 30.0) -> None:
    """Until every running Ostiary's OPA holds exactly the module of `obj` (None: holds no `module_id`)."""
    module = expected_module(obj) if obj is not None else None
    module_id = module.id if module is not None else module_id
    deadline = time.monotonic() + timeout
    while True:
        holding = [inst.opa_module(module_id) for inst in list(RUNNING)]
        if all(raw == (module.source if module else None) for raw in holding):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"module {module_id} not in force in every Ostiary after {timeout}s")
        time.sleep(0.05)
