"""One tenant's refused ImagePolicy fails closed for its own namespace only (issue 27 item 2), through
the real kube-apiserver, the real OPA and `ostiary serve --kube`.

The attacker's side: a namespace whose own policy forbids an image must never see that image
admitted because its policy was refused (broken, or over a bound) and the ClusterImagePolicies
decided instead, as if the namespace had no policy at all.
"""

from __future__ import annotations

import statistics
import time

import pytest

from app.policies.bounds import DEFAULT_SCOPE_BYTES
from tests.e2e.k8s import admitted_soon, denied, denied_soon, eventually, unique

pytestmark = pytest.mark.e2e


# Team names long enough that two 500-entry policies of one namespace are over its bound (1216 KiB
# at the default 256Mi) together while each fits alone (the policy documents are about 580 bytes per
# entry plus four times the name: 690 and 720 KB here), and short enough for a repository path (255).
SMALL, BIG = "small-" + "s" * 200, "bigger-name-so-larger-" + "b" * 200


def _entries(count: int, team: str, host: str) -> list[dict]:
    return [{"name": f"{host}/{team}{i}/app-*"} for i in range(count)]


def _latencies(kube, namespace: str, image: str, forbidden: str, rounds: int = 5) -> list[float]:
    """Admit `image` and deny `forbidden` in `namespace` `rounds` times each; the seconds each took."""
    took = []
    for _ in range(rounds):
        begin = time.monotonic()
        kube.pod(namespace, image, dry_run=True)
        took.append(time.monotonic() - begin)
        begin = time.monotonic()
        message = denied(kube.pod, namespace, forbidden, dry_run=True)
        took.append(time.monotonic() - begin)
        assert "refused by Ostiary" not in message, message
    return took


@pytest.fixture
def fallback_host(kube, ostiary):
    """A ClusterImagePolicy that admits every image of one registry host (the operator's wide default)."""
    host = f"{unique('wide')}.example.com"
    name = unique("wide")
    kube.policy(None, [{"name": f"{host}/*"}], name=name)
    yield host
    kube.delete_policy(None, name)


def test_a_broken_namespace_policy_never_falls_back_to_the_cluster_policies(
    kube, namespace, ostiary, fallback_host
):
    kube.policy(namespace, [{"name": f"{fallback_host}/ok/*"}], name="strict")
    kube.pod(namespace, f"{fallback_host}/ok/app:1")
    denied(kube.pod, namespace, f"{fallback_host}/forbidden/app:1")  # the namespace's own policy decides

    # The tenant's policy turns invalid (a name that is no image pattern: the CRD accepts it).
    broken = kube.policy(
        namespace, [{"name": f"{fallback_host}/ok/*"}, {"name": "a b"}], name="strict", wait=False
    )
    kube.wait_policy(namespace, "strict", broken["metadata"]["generation"], status="False")
    # What the namespace's policy forbade is still denied, and so is everything else there, naming it.
    for image in (f"{fallback_host}/forbidden/app:1", f"{fallback_host}/ok/app:1"):
        # the status is written when the refusal is made; OPA takes it in moments later (meanwhile
        # the namespace's previous policy still decides, never the cluster's)
        message = denied_soon(kube, namespace, image, containing=f"ImagePolicy {namespace}/strict is refused")
        assert f"ImagePolicy {namespace}/strict is refused by Ostiary" in message, message
        assert "whitespace" in message, message
    eventually(lambda: f"{namespace}/strict" in ostiary.readyz()[1], timeout=10)  # the probe's next round
    assert ostiary.readyz()[0] == 200

    # Fixed: the namespace's policy decides again.
    kube.policy(namespace, [{"name": f"{fallback_host}/ok/*"}], name="strict")
    admitted_soon(kube, namespace, f"{fallback_host}/ok/app:1")
    denied(kube.pod, namespace, f"{fallback_host}/forbidden/app:1")


def test_an_oversized_and_a_broken_policy_in_one_namespace_leave_the_others_as_they_were(
    kube, namespace, ostiary, fallback_host
):
    other = unique("e2e-other")
    kube.core.create_namespace({"metadata": {"name": other}})
    try:
        kube.policy(other, [{"name": f"{fallback_host}/other/*"}], name="p")
        allowed, forbidden = f"{fallback_host}/other/app:1", "quay.io/other/app:1"
        before = _latencies(kube, other, allowed, forbidden)

        # The tenant: two 500-entry policies (over the namespace's bound together) and a broken one.
        kube.policy(namespace, _entries(500, SMALL, fallback_host), name="small")
        big = kube.policy(namespace, _entries(500, BIG, fallback_host), name="big", wait=False)
        bad = kube.policy(namespace, [{"name": "a b"}], name="bad", wait=False)
        kube.wait_policy(namespace, "big", big["metadata"]["generation"], status="False", timeout=60)
        kube.wait_policy(namespace, "bad", bad["metadata"]["generation"], status="False", timeout=60)
        for image in (f"{fallback_host}/{SMALL}1/app-x:1", f"{fallback_host}/{BIG}1/app-x:1"):
            # any denial is fail-closed; wait for the refusal itself (OPA takes it in moments after the status)
            message = denied_soon(kube, namespace, image, containing="is refused by Ostiary")
            assert "is refused by Ostiary" in message and "every image in namespace" in message, message
        assert f"over the bound of {DEFAULT_SCOPE_BYTES} bytes" in message and "whitespace" in message, (
            message
        )

        # The other namespace: the same answers, and no slower than admissions can stand.
        during = _latencies(kube, other, allowed, forbidden)
        print(
            f"\nother namespace: median {statistics.median(before) * 1000:.0f} ms before, "
            f"{statistics.median(during) * 1000:.0f} ms with the refused namespace (max {max(during):.2f} s)"
        )
        assert max(during) < 5.0, during  # far under the webhook's 10 s timeout, whatever the load
    finally:
        kube.core.delete_namespace(other)
        for name in ("small", "big", "bad"):
            kube.delete_policy(namespace, name, wait=False)
