"""Keyless cosign through the whole path: kube-apiserver -> Ostiary (serve --kube --sigstore-trusted-root)
-> Debian's docker-registry (bundles through the fallback tag) -> OPA -> pinned object.

Keyless signatures are made by a test Sigstore (tests/support/keyless_signing.py: Fulcio-shaped CA,
Rekor-shaped log with signed entry timestamps), trusted through the operator's trusted_root.json —
the public-good root's CAs and logs plus the test ones — given to this Ostiary instance, which serves
the namespaces labelled for it. The real production keyless bundle of the fixtures (an attestation,
../shared/fixtures/signatures/keyless) is replayed too: every proof of it verifies against the
public-good root, and it is still denied, as an attestation is not a signature.
"""

from __future__ import annotations

import contextlib
import json
import uuid

import pytest
from kubernetes import client

from tests.e2e.k8s import denied
from tests.signatures.test_cosign_keyless_admit import ISSUER, REAL_ISSUER, WORKFLOW, _combined_root
from tests.support import cosign_signing as cs
from tests.support.keyless_signing import TestSigstore
from tests.support.simple_signing import SigningWorld

pytestmark = [pytest.mark.e2e]

REAL_HOST = "registry.test:5000"  # the host the fixtures' real bundle names
OTHER_SUBJECT = "https://github.com/evil/app/.github/workflows/x.yml@refs/heads/main"
OTHER_ISSUER = "https://issuer.attacker.example"


@pytest.fixture(scope="module")
def signing(tmp_path_factory):
    """(world, sigstore, registry host, digests): keyless-signed images in a docker-registry."""
    sigstore = TestSigstore("e2e")
    with SigningWorld(tmp_path_factory.mktemp("e2e-keyless") / "w") as w:
        w.replay_fixtures("keyless/cosign-attestation")
        push = cs.Pusher(w.registry_url)
        digests = {}
        for name, subject, issuer in (
            ("good", WORKFLOW, ISSUER),
            ("other-subject", OTHER_SUBJECT, ISSUER),
            ("other-issuer", WORKFLOW, OTHER_ISSUER),
        ):
            d = digests[name] = push.image(f"e2e-keyless/{name}", "v1")
            push.bundle_signature(
                f"e2e-keyless/{name}", d, sigstore.bundle(cs.statement(d), subject=subject, issuer=issuer)
            )
        digests["unsigned"] = push.image("e2e-keyless/unsigned", "v1")
        yield w, sigstore, w.registry_host, digests


@pytest.fixture(scope="module")
def keyless_ostiary(control_plane, admin_client, crds, signing, tmp_path_factory):
    """An Ostiary with the operator's trusted root, for namespaces labelled instance=keyless."""
    from tests.e2e.webhook import Ostiary, apply_rbac, chart_rbac, running

    w, sigstore, host, _ = signing
    with contextlib.suppress(Exception):  # exists already when another fixture made it
        client.CoreV1Api(admin_client).create_namespace({"metadata": {"name": "ostiary-system"}})
    apply_rbac(admin_client, chart_rbac())
    workdir = tmp_path_factory.mktemp("ostiary-keyless")
    root = workdir / "trusted_root.json"
    root.write_bytes(_combined_root(sigstore))
    instance = Ostiary(
        control_plane,
        "keyless",
        workdir / "run",
        select_instance=True,
        registry_endpoints=(f"{host}={w.registry_url}", f"{REAL_HOST}={w.registry_url}"),
        sigstore_trusted_root=str(root),
    )
    with running(instance):
        yield instance


@pytest.fixture
def keyless_namespace(admin_client, keyless_ostiary) -> str:
    from tests.e2e.webhook import INSTANCE_LABEL

    name = f"e2e-keyless-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(admin_client).create_namespace(
        {"metadata": {"name": name, "labels": {INSTANCE_LABEL: "keyless"}}}
    )
    yield name
    with contextlib.suppress(Exception):
        client.CoreV1Api(admin_client).delete_namespace(name)


def keyless_policy(kube, namespace: str, pattern: str, identity: dict) -> None:
    kube.policy(
        namespace, [{"name": pattern, "policy": {"cosign": {"identities": [identity]}}}], name="keyless"
    )


def test_a_keyless_signed_image_is_admitted_and_pinned(kube, keyless_namespace, signing):
    _, _, host, digests = signing
    keyless_policy(kube, keyless_namespace, f"{host}/e2e-keyless/*", {"issuer": ISSUER, "subject": WORKFLOW})
    image = f"{host}/e2e-keyless/good:v1"
    pod = kube.pod(keyless_namespace, image)
    assert pod["spec"]["containers"][0]["image"] == f"{image}@{digests['good']}"
    deployment = kube.deployment(keyless_namespace, image)
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == f"{image}@{digests['good']}"


@pytest.mark.parametrize(
    ("name", "identity", "reason"),
    [
        # a certificate of the right issuer for another workflow: the wrong identity
        ("other-subject", {"issuer": ISSUER, "subject": WORKFLOW}, "no identity accepts it"),
        # the right workflow name, certified by another OIDC issuer
        ("other-issuer", {"issuer": ISSUER, "subject": WORKFLOW}, f"certificate of issuer {OTHER_ISSUER}"),
        ("unsigned", {"issuer": ISSUER, "subject": WORKFLOW}, "no signature found"),
    ],
)
def test_the_wrong_identity_or_issuer_is_denied_with_the_reason(
    kube, keyless_namespace, signing, name, identity, reason
):
    _, _, host, _ = signing
    keyless_policy(kube, keyless_namespace, f"{host}/e2e-keyless/*", identity)
    message = denied(kube.pod, keyless_namespace, f"{host}/e2e-keyless/{name}:v1")
    assert "cosign keyless requirement" in message and reason in message, message
    if name == "other-subject":
        assert json.dumps(OTHER_SUBJECT)[1:-1] in message, message  # whose certificate it was


def test_the_real_keyless_attestation_is_denied(kube, keyless_namespace):
    keyless_policy(
        kube,
        keyless_namespace,
        f"{REAL_HOST}/keyless/*",
        {"issuer": REAL_ISSUER, "subject": "cody@soyland.com"},
    )
    message = denied(kube.pod, keyless_namespace, f"{REAL_HOST}/keyless/cosign-attestation:empty")
    assert "an attestation (predicateType 'https://cosign.sigstore.dev/attestation/v1')" in message, message
