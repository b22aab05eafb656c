"""One tenant's policy cannot take down every admission (issue 27), through real `ostiary serve
--policy-dir` and its real OPA, from the side of a tenant who writes a bad ImagePolicy:

- an ImagePolicy with an invalid repository name, or over a bound (app/policies/bounds.py), is
  refused alone: its namespace is denied with a reason naming it (fail closed for that tenant),
  other namespaces and the cluster policies stay in force, and /readyz names the refused policy;
- a bad ClusterImagePolicy still keeps the whole set out (not ready at start), as before;
- `ostiary check` says which bound a policy is over, with its measured size.
"""

from __future__ import annotations

import subprocess

import requests

from tests.integration.helpers import pod_spec, review, workload
from tests.integration.test_server import OSTIARY, free_port, served  # noqa: F401 - fixture

CLUSTER = """apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: allow-docker-hub}
spec:
  repositories:
    - name: 'docker.io/*'
"""
GOOD_TENANT = """apiVersion: ostiary.dev/v1
kind: ImagePolicy
metadata: {name: good, namespace: team-good}
spec:
  repositories:
    - name: 'quay.io/good/*'
"""
# A typo: a tag after ':' that is empty. The schema takes it (a string); the translator refuses it.
BAD_NAME = """apiVersion: ostiary.dev/v1
kind: ImagePolicy
metadata: {name: typo, namespace: team-bad}
spec:
  repositories:
    - name: 'docker.io/library/nginx:'
"""
BAD_CLUSTER = """apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: typo}
spec:
  repositories:
    - name: 'docker.io/library/nginx:'
"""


def _many(entries: int, namespace: str = "team-bad", name: str = "huge") -> str:
    lines = [
        "apiVersion: ostiary.dev/v1",
        "kind: ImagePolicy",
        f"metadata: {{name: {name}, namespace: {namespace}}}",
        "spec:",
        "  repositories:",
    ]
    lines += [f"    - name: 'registry{i % 20}.example.com/team{i}/app-*'" for i in range(entries)]
    return "\n".join(lines) + "\n"


def _directory(tmp_path, **files: str):
    policies = tmp_path / "policies"
    policies.mkdir()
    for name, text in files.items():
        (policies / f"{name}.yaml").write_text(text)
    return policies


def _verdict(s, namespace: str, image: str) -> tuple[bool, str]:
    body = review(workload("Pod", pod_spec(image), namespace=namespace), namespace=namespace)
    response = s.admit(body).json()["response"]
    return response["allowed"], (response.get("status") or {}).get("message", "")


def _readyz(s) -> tuple[int, str]:
    r = requests.get(s.base + "/readyz", timeout=10)
    return r.status_code, r.json()["reason"]


def _only_the_bad_namespace_is_denied(s, policy: str) -> None:
    code, why = _readyz(s)
    assert code == 200, why
    assert f"ImagePolicy team-bad/{policy}" in why, why
    allowed, message = _verdict(s, "team-bad", "docker.io/library/nginx:1.25")
    assert allowed is False
    assert f"ImagePolicy team-bad/{policy} is refused by Ostiary" in message, message
    # the cluster policies still decide elsewhere, and another tenant's policy too
    assert _verdict(s, "default", "docker.io/library/nginx:1.25") == (True, "")
    assert _verdict(s, "team-good", "quay.io/good/app:1")[0] is True
    allowed, message = _verdict(s, "team-good", "docker.io/library/nginx:1.25")
    assert allowed is False and "no repository entry in the ImagePolicies of namespace team-good" in message


def test_an_invalid_image_policy_denies_only_its_own_namespace(served, tmp_path):  # noqa: F811 - the fixture
    policies = _directory(tmp_path, cluster=CLUSTER, good=GOOD_TENANT, bad=BAD_NAME)
    s = served("--policy-dir", str(policies))
    s.wait_ready()
    _only_the_bad_namespace_is_denied(s, "typo")
    code, why = _readyz(s)
    assert "empty tag" in why, why


def test_an_image_policy_over_a_bound_denies_only_its_own_namespace(served, tmp_path):  # noqa: F811 - the fixture
    policies = _directory(tmp_path, cluster=CLUSTER, good=GOOD_TENANT, bad=_many(30))
    s = served("--policy-dir", str(policies), "--max-policy-entries", "20")
    s.wait_ready()
    _only_the_bad_namespace_is_denied(s, "huge")
    code, why = _readyz(s)
    assert "30 entries, over the bound of 20 entries per policy" in why, why


def test_a_namespace_over_its_size_bound_denies_only_itself(served, tmp_path):  # noqa: F811 - the fixture
    # two policies of 40 entries each: each fits alone, together they are over the namespace's bound
    policies = _directory(
        tmp_path,
        cluster=CLUSTER,
        good=GOOD_TENANT,
        bad1=_many(40, name="half-a"),
        bad2=_many(41, name="half-b"),
    )
    # (policies are data documents: about 15,500 bytes each here, 31,000 together)
    s = served("--policy-dir", str(policies), "--max-namespace-policy-bytes", "25000")
    s.wait_ready()
    code, why = _readyz(s)
    assert code == 200 and "ImagePolicy team-bad/half-b" in why and "over the bound of 25000 bytes" in why, (
        why
    )
    assert "team-bad/half-a" not in why, why  # the smaller one is kept
    allowed, message = _verdict(s, "team-bad", "docker.io/library/nginx:1.25")
    assert allowed is False and "ImagePolicy team-bad/half-b is refused by Ostiary" in message, message
    assert _verdict(s, "default", "docker.io/library/nginx:1.25") == (True, "")
    assert _verdict(s, "team-good", "quay.io/good/app:1")[0] is True


def test_a_bad_cluster_policy_still_keeps_the_whole_set_out(served, tmp_path):  # noqa: F811 - the fixture
    policies = _directory(tmp_path, cluster=CLUSTER, good=GOOD_TENANT, bad=BAD_CLUSTER)
    s = served("--policy-dir", str(policies))
    s.wait()
    code, why = _readyz(s)
    assert code == 503 and "nothing in force" in why and "bad.yaml#0" in why and "empty tag" in why, why
    assert _verdict(s, "default", "docker.io/library/nginx:1.25")[0] is False


def test_check_says_which_bound_a_policy_is_over(tmp_path):
    policies = _directory(tmp_path, cluster=CLUSTER, bad=_many(30))
    done = subprocess.run(
        [OSTIARY, "check", "--policy-dir", str(policies), "--max-policy-entries", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "30 entries, over the bound of 20 entries per policy" in done.stderr, done.stderr
    assert "[over-bound]" in done.stderr and "FAIL" in done.stdout
    done = subprocess.run(
        [OSTIARY, "check", "--policy-dir", str(policies), "--max-namespace-policy-bytes", "10000"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "bytes of policy data in OPA, over the bound of 10000 bytes" in done.stderr, done.stderr
    # the CRDs' own bound: more entries than any flag allows
    (policies / "bad.yaml").write_text(_many(501))
    done = subprocess.run(
        [OSTIARY, "check", "--policy-dir", str(policies)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1 and "501 entries, over the bound of 500 entries per policy" in done.stderr, (
        done.stderr
    )
