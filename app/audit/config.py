"""The audit's settings (no imports beyond the standard library: `ostiary --help` reads the defaults)."""

from __future__ import annotations

from dataclasses import dataclass

PASS, FAIL, WARN, ERROR = "pass", "fail", "warn", "error"  # the results (docs/audit.md)
RESULTS = (PASS, FAIL, WARN, ERROR)


@dataclass(frozen=True)
class AuditConfig:
    interval: float = 600.0  # seconds between audits (serve --audit-interval)
    max_rate: float = 50.0  # objects decided per second at most (serve --audit-rate)
    api_qps: float = 5.0  # list requests per second at most (serve --audit-api-qps)
    page_size: int = 250
    lease_duration: int = 60
    min_gap: float = 30.0  # seconds between the starts of two audits, whatever changes
    change_delay: float = 10.0  # seconds after a policy change before its audit (changes come in bursts)
