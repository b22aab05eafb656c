"""Files mounted from a ConfigMap load once: the chart mounts policies and custom Rego that way.

The kubelet writes a ConfigMap volume atomically: the real files live in `..<timestamp>/`, `..data`
links to that folder and each key is a link `name -> ..data/name`. A recursive walk sees every file
twice; Ostiary must read only the visible names.
"""

from __future__ import annotations

import os
from pathlib import Path

from app.policies.directory import load_custom_rego, load_policy_set

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


def mount_like_the_kubelet(folder: Path, files: dict[str, str], stamp: str = "..2026_12_03_14_00_00.1") -> None:
    """A ConfigMap volume as the kubelet's atomic writer lays it out."""
    real = folder / stamp
    real.mkdir(parents=True)
    for name, text in files.items():
        (real / name).write_text(text)
    os.symlink(stamp, folder / "..data")
    for name in files:
        os.symlink(f"..data/{name}", folder / name)


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
