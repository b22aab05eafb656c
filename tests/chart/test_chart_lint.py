"""`helm lint --strict` is clean over the chart's main value sets (real helm)."""

from __future__ import annotations

import subprocess

import pytest

from tests.chart.chart import CHART
from tests.chart.test_chart_modes import a_ca_pem
from tests.e2e.cluster import tool

VALUE_SETS = {
    "defaults": [],
    "cert-manager": ["--set", "tls.mode=certManager"],
    "cert-manager, your issuer": ["--set", "tls.mode=certManager,tls.certManager.issuerRef.name=corp"],
    "directory source": [
        "--set",
        "policySource=directory,policyConfigMaps[0]=team,customRegoConfigMaps[0]=rules",
    ],
    "hardened and monitored": [
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "networkPolicy.apiServerPeers[0].ipBlock.cidr=10.0.0.1/32",
        "--set",
        "metrics.serviceMonitor.enabled=true,priorityClassName=high",
    ],
    "every added value": [
        "--set",
        "policySource=directory,policyConfigMaps[0]=team,stateVolume.type=persistentVolumeClaim",
        "--set",
        "stateVolume.existingClaim=state,rootPins.secret=pins,global.imageRegistry=mirror.example",
        "--set",
        "fullnameOverride=gate,extraEnv[0].name=A,extraEnv[0].value=b,registration.timeoutSeconds=60",
        "--set",
        "networkPolicy.enabled=true,networkPolicy.apiServerPeers[0].ipBlock.cidr=10.0.0.1/32",
        "--set",
        "networkPolicy.metricsPeers[0].podSelector.matchLabels.app=prometheus",
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.grafanaDashboard.enabled=true",
    ],
    "immediate registration": ["--set", "registration.mode=immediate"],
    "minimal": [
        "--set",
        "replicaCount=1,opa.auth.enabled=false,uninstallHook.enabled=false",
        "--set",
        "validatingWebhook.enabled=false,opa.decisionLogs=true",
    ],
}


@pytest.mark.parametrize("case", list(VALUE_SETS))
def test_helm_lint_strict_is_clean(case) -> None:
    done = subprocess.run(
        [tool("helm"), "lint", "--strict", CHART, *VALUE_SETS[case]],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_helm_lint_strict_is_clean_with_your_own_certificate(tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(a_ca_pem())
    done = subprocess.run(
        [
            tool("helm"),
            "lint",
            "--strict",
            CHART,
            "--set",
            "tls.mode=secret,tls.existingSecret=mine",
            "--set-file",
            f"tls.caBundle={ca}",
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
