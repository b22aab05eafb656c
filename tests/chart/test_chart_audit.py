"""The chart's audit values (docs/audit.md): off by default (no extra role, no CRD, no flag); on, the
flags reach `serve`, the audit roles are added, the report CRDs are rendered from the same file the
e2e tests install, kept on uninstall; refused values are refused (real helm)."""

from __future__ import annotations

import yaml

from tests.chart.chart import containers, only, refusal, rendered_objects
from tests.e2e.cluster import REPO


def test_the_audit_is_off_by_default() -> None:
    objects = rendered_objects()
    assert not [a for a in containers(objects)["ostiary"]["args"] if a.startswith("--audit")]
    assert not [
        o for o in objects if "audit" in o["metadata"]["name"] or o["kind"] == "CustomResourceDefinition"
    ]


def test_enabled_it_passes_the_flags_and_adds_its_roles_and_the_report_crds() -> None:
    objects = rendered_objects(
        "audit.enabled=true", "audit.intervalSeconds=900", "audit.objectsPerSecond=20", "audit.apiQPS=2"
    )
    args = [a for a in containers(objects)["ostiary"]["args"] if a.startswith("--audit")]
    assert args == ["--audit", "--audit-interval=900", "--audit-rate=20", "--audit-api-qps=2"]
    role = only(objects, "ClusterRole", "t-ostiary-audit")
    verbs = {(tuple(r["apiGroups"]), tuple(r["resources"])): r["verbs"] for r in role["rules"]}
    assert verbs[(("",), ("pods", "replicationcontrollers"))] == ["list"]
    assert verbs[(("wgpolicyk8s.io",), ("policyreports", "clusterpolicyreports"))] == [
        "get",
        "list",
        "create",
        "patch",
        "delete",
    ]
    lease = only(objects, "Role", "t-ostiary-audit-lease")
    assert {"resourceNames": ["ostiary-audit"]}.items() <= lease["rules"][1].items()
    crds = [o for o in objects if o["kind"] == "CustomResourceDefinition"]
    shipped = [
        d
        for d in yaml.safe_load_all(
            (REPO / "helm" / "ostiary" / "files" / "policyreports.wgpolicyk8s.io.yaml").read_text()
        )
        if d
    ]
    assert crds == shipped
    assert {c["metadata"]["annotations"]["helm.sh/resource-policy"] for c in crds} == {"keep"}
    assert [o for o in objects if o["kind"] == "CustomResourceDefinition"] and not [
        o
        for o in rendered_objects("audit.enabled=true", "audit.installReportCRDs=false")
        if o["kind"] == "CustomResourceDefinition"
    ]


def test_an_interval_under_30_seconds_is_refused() -> None:
    assert "intervalSeconds" in refusal("audit.enabled=true", "audit.intervalSeconds=5")
