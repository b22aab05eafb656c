"""Files mounted from a ConfigMap load once: the chart mounts policies and custom Rego that way.

The kubelet writes a ConfigMap volume atomically: the real files live in `..<timestamp>/`, `..data`
links to that folder and each key is a link `name -> ..data/name`. A recursive walk sees every file
twice; Ostiary must read only the visible names.
"""

from __future__ import annotations

from pathlib import Path

from app.policies.directory import load_custom_rego, load_policy_set
from tests.chart.chart import mount_like_the_kubelet

POLICY = """\
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: only-library}
spec:
  repositories:
    - name: "docker.io/library/*"
      policy: {trust: {enabled: true}}
"""

REGO = """\
package ostiary.custom.nolatest

default refused := false
"""


def test_a_mounted_configmap_of_policies_loads_each_policy_once(tmp_path: Path) -> None:
    mount_like_the_kubelet(tmp_path / "policies" / "values", {"policies.yaml": POLICY})
    loaded = load_policy_set(tmp_path / "policies", "ostiary-system")
    assert [p.name for p in loaded.policies] == ["only-library"]


def test_a_mounted_configmap_of_rego_loads_each_module_once(tmp_path: Path) -> None:
    # A complete rule with a default: two copies of it would not even compile together.
    mount_like_the_kubelet(tmp_path / "rego" / "team-rules", {"no-latest.rego": REGO})
    [module] = load_custom_rego(tmp_path / "rego")
    assert module.id == "ostiary/custom/team-rules/no-latest"
    assert module.package == "ostiary.custom.nolatest"
