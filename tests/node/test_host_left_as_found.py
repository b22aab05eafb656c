"""A node run leaves the host as it found it (runs first in this folder, before the session's node).

A node of its own starts, runs a pod (the kubelet changes host sysctls, makes cgroups, the bridge
plugin a veth and a network namespace, containerd mounts), stops; then every sysctl the kubelet
touches, the links, the NAT and filter chains, the network namespaces, the cgroups and the processes
are what they were before.
"""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.node.cluster import Node, host_snapshot

pytestmark = pytest.mark.node


def test_a_node_run_leaves_the_host_as_it_found_it(tmp_path):
    before = host_snapshot()
    node = Node(tmp_path / "node", images=("pause",))
    try:
        node.start()
        core = client.CoreV1Api(node.api_client())
        pause = node.pause_image
        core.create_namespaced_pod(
            "default",
            {
                "metadata": {"name": "sleeper"},
                "spec": {
                    "containers": [{"name": "c", "image": pause, "imagePullPolicy": "Never"}],
                    "terminationGracePeriodSeconds": 0,
                    "automountServiceAccountToken": False,
                },
            },
        )
        node._wait(
            lambda: (
                None
                if core.read_namespaced_pod("sleeper", "default").status.phase == "Running"
                else "not running"
            ),
            90,
            "a pod Running",
        )
        during = host_snapshot()
        assert during != before  # the run did change the host (else this test proves nothing)
    finally:
        node.stop()
    after = host_snapshot()
    for key in before:
        assert after[key] == before[key], (
            f"{key} changed by the node run:\nbefore {before[key]}\nafter  {after[key]}"
        )
