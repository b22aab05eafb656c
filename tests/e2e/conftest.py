"""End-to-end fixtures: one etcd + kube-apiserver per session, Ostiary's CRDs installed.

The control plane (tests/e2e/cluster.py) is started once and torn down — processes killed, data
removed — when the session ends. A missing binary fails the tests with the command that builds it.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # `pytest` run without `python -m`: make `tests.*` importable
    sys.path.insert(0, str(_ROOT))

from tests.e2e.cluster import ControlPlane
from tests.e2e.k8s import CRD_DIR, install_crds, load_documents


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory) -> ControlPlane:
    plane = ControlPlane(tmp_path_factory.mktemp("kube"))
    try:
        plane.start()
        print(f"\ncontrol plane up in {plane.startup_seconds:.1f}s at {plane.url}")
        yield plane
    finally:
        plane.cleanup()


@pytest.fixture(scope="session")
def admin_client(control_plane):
    return control_plane.api_client("admin")


@pytest.fixture(scope="session")
def crds(admin_client) -> list[dict]:
    documents = [doc for path in sorted(CRD_DIR.glob("*.yaml")) for doc in load_documents(path)]
    install_crds(admin_client, documents)
    return documents


@pytest.fixture
def namespace(admin_client) -> str:
    """A fresh namespace per test (deleted afterwards; nothing finalizes it without a controller-manager)."""
    from kubernetes import client

    name = f"e2e-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(admin_client).create_namespace({"metadata": {"name": name}})
    yield name
    with contextlib.suppress(Exception):  # cleanup only
        client.CoreV1Api(admin_client).delete_namespace(name)


@pytest.fixture(scope="session")
def kube(admin_client):
    from tests.e2e.k8s import Kube

    return Kube(admin_client)


@pytest.fixture(scope="session")
def ostiary(control_plane, admin_client, crds, tmp_path_factory):
    """Ostiary serving the control plane's webhook for every namespace without an instance label."""
    from kubernetes import client

    from tests.e2e.webhook import Ostiary, apply_rbac, chart_rbac, running

    with contextlib.suppress(Exception):  # exists already when another fixture made it
        client.CoreV1Api(admin_client).create_namespace({"metadata": {"name": "ostiary-system"}})
    apply_rbac(admin_client, chart_rbac())
    instance = Ostiary(control_plane, "main", tmp_path_factory.mktemp("ostiary"))
    with running(instance):
        print(f"\nostiary ready and registered in {instance.startup_seconds:.1f}s at {instance.url}")
        yield instance


@pytest.fixture(scope="session")
def world_scenario(world):
    """The real notary-server + docker-registry world (tests/conftest.py), shared with tests/world."""
    return world


@pytest.fixture(scope="session")
def world_ostiary(control_plane, admin_client, crds, ostiary, world_scenario, tmp_path_factory):
    """A second Ostiary that trusts the world's CA, for namespaces labelled e2e.ostiary.dev/instance=world."""
    from tests.e2e.webhook import Ostiary, running

    instance = Ostiary(
        control_plane,
        "world",
        tmp_path_factory.mktemp("ostiary-world"),
        ca_file=str(world_scenario.ca_file),
        select_instance=True,
        # the world's registry serves plain http: the cosign and simple verifiers read it there
        registry_endpoints=(f"{world_scenario.registry_host}={world_scenario.world.registry_url}",),
        # the tests' namespace ImagePolicies name the world's notary-server: the operator allows it
        trust_server_allow=(world_scenario.notary_url,),
    )
    with running(instance):
        yield instance


@pytest.fixture
def world_namespace(admin_client, world_ostiary) -> str:
    from kubernetes import client

    from tests.e2e.webhook import INSTANCE_LABEL

    name = f"e2e-world-{uuid.uuid4().hex[:6]}"
    client.CoreV1Api(admin_client).create_namespace(
        {"metadata": {"name": name, "labels": {INSTANCE_LABEL: "world"}}}
    )
    yield name
    with contextlib.suppress(Exception):
        client.CoreV1Api(admin_client).delete_namespace(name)
