#!/usr/bin/env python3
"""What one hostile client costs `ostiary serve`: worker memory and a normal admission's answer time.

    .venv/bin/python scripts/attack_bench.py [--seconds 20] [--plans 4200] [--only crlf,...] [--json out.json]

For each attack (tests/support/attacks.py; issue 20 items 3, 4, 5, 7, 8) it starts a fresh
`ostiary serve --policy-dir examples/policies` (gunicorn, its own OPA), runs the attack from one
loopback address for --seconds (the plan flood: until its requests are sent) while a normal
admission (examples/reviews/deployment-mirror.json, expected allowed) is sent from another
address every 0.25 s, and samples the worker's RSS every 0.2 s. It prints, per attack: the
worker's RSS before, its highest RSS during the attack (VmHWM), the slowest and median probe,
how many probes got a wrong answer or none within --bound (5 s), and whether gunicorn had to
replace the worker.

  crlf         one connection sending `\\r\\n` as fast as the server reads
  promises     20 connections announcing 4 MiB bodies, 1 KB sent each, held open
  connections  1100 connections with half a request line from one address (cap 1000)
  plans        --plans reviews of 64 long images, each in a namespace of its own (a plan to keep)
  decode       8 clients posting 7 MiB of `[{},{},...]` again and again

Exit status 1 when a probe failed or the worker was replaced.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.test_server import EXAMPLES, Served  # noqa: E402
from tests.support import attacks  # noqa: E402


def make(name: str, port: int, plans: int) -> attacks.Attack:
    if name == "crlf":
        return attacks.CrlfFlood(port)
    if name == "promises":
        return attacks.PromisedBodies(port, count=20, length=4 * attacks.MIB)
    if name == "connections":
        return attacks.ConnectionHog(port, count=1100)
    if name == "plans":
        return attacks.PlanFlood(port, threads=4, total=plans)
    if name == "decode":
        return attacks.DecodeBombs(port, threads=8)
    raise SystemExit(f"unknown attack {name!r}")


ATTACKS = ("crlf", "promises", "connections", "plans", "decode")


def run(name: str, seconds: float, plans: int, bound: float) -> dict:
    served = Served("--policy-dir", str(EXAMPLES / "policies"))
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(served.proc.stdout), daemon=True).start()
    try:
        served.wait_ready()
        worker = attacks.Worker(served.proc.pid)
        body = (EXAMPLES / "reviews" / "deployment-mirror.json").read_bytes()
        before = worker.rss_mb()
        prober = attacks.Prober(served.port, body, timeout=bound).start()
        attack = make(name, served.port, plans).start()
        started = time.monotonic()
        highest = before
        while True:
            time.sleep(0.2)
            if not worker.restarted():
                try:
                    highest = max(highest, worker.rss_mb())
                except (OSError, KeyError):
                    pass
            elapsed = time.monotonic() - started
            if isinstance(attack, attacks.PlanFlood):
                if attack.done.is_set() or elapsed > 900:
                    break
            elif elapsed >= seconds:
                break
        restarted = worker.restarted()
        peak = highest if restarted else max(highest, worker.peak_mb())
        attack.stop()
        probes = prober.stop()
        times = [p.seconds for p in probes]
        return {
            "attack": name,
            "seconds": round(time.monotonic() - started, 1),
            "rss_before_mb": round(before, 1),
            "rss_peak_mb": round(peak, 1),
            "probes": len(probes),
            "probe_failed": len(prober.failures()),
            "probe_median_s": round(statistics.median(times), 3) if times else None,
            "probe_max_s": round(max(times), 3) if times else None,
            "worker_restarted": restarted,
            "server_answers": dict(attack.answers),
            "first_failure": prober.failures()[0].said if prober.failures() else "",
        }
    finally:
        served.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each attack runs")
    parser.add_argument("--bound", type=float, default=5.0, help="seconds a normal admission may take")
    parser.add_argument("--plans", type=int, default=4200, help="reviews the plan flood sends")
    parser.add_argument("--only", default=",".join(ATTACKS), help="comma-separated attacks")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = []
    print(
        f"{'attack':<12} {'secs':>5} {'RSS before':>10} {'RSS peak':>9} {'probes':>6} {'failed':>6} "
        f"{'median s':>8} {'max s':>6} {'restarted':>9}"
    )
    for name in args.only.split(","):
        r = run(name, args.seconds, args.plans, args.bound)
        results.append(r)
        print(
            f"{r['attack']:<12} {r['seconds']:>5} {r['rss_before_mb']:>8} MB {r['rss_peak_mb']:>6} MB "
            f"{r['probes']:>6} {r['probe_failed']:>6} {r['probe_median_s']!s:>8} {r['probe_max_s']!s:>6} "
            f"{r['worker_restarted']!s:>9}   {r['server_answers']} {r['first_failure'][:120]}",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any(r["probe_failed"] or r["worker_restarted"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
