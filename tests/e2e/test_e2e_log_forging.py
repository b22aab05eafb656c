"""Log forging: a value from a request holding a newline cannot start a line in Ostiary's log.

A tenant names an owner whose name carries a newline and a line that reads like one of Ostiary's
records. The real kube-apiserver sends the Pod to the real `ostiary serve` (mutating admission runs
before the API server validates the name); the owner check logs the name. The log must show it
escaped, on the line of the record that quotes it (app/logsafe.py).
"""

from __future__ import annotations

import contextlib

import pytest

from tests.e2e.k8s import eventually

pytestmark = pytest.mark.e2e

FORGED = "2026-01-01 00:00:00,000 INFO ostiary.admission FORGED-RECORD allowed by the operator"


def test_a_newline_in_an_owner_name_is_escaped_in_the_log(kube, namespace, ostiary):
    kube.policy(namespace, [{"name": "registry.example.com/team/app"}], name="team")
    owner = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": f"rs\n{FORGED}\r\x1b[2K",
        "uid": "00000000-0000-0000-0000-000000000001",
        "controller": True,
    }
    with contextlib.suppress(Exception):  # the API server refuses the name after admission
        kube.pod(namespace, "registry.example.com/team/app:1.0", owner=owner)
    eventually(lambda: "FORGED-RECORD" in ostiary.log(2000))
    lines = [line for line in ostiary.log(2000).splitlines() if "FORGED-RECORD" in line]
    assert lines, ostiary.log(200)
    for line in lines:
        assert not line.startswith("2026-01-01"), line  # no line of its own
        assert f"rs\\n{FORGED}\\r\\x1b[2K" in line, line  # the whole value, escaped, where it is quoted
        assert "owner check" in line, line
