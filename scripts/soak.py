#!/usr/bin/env python3
"""Soak: mixed admissions against `ostiary serve` for a long time, every verdict checked.

    .venv/bin/python scripts/soak.py --minutes 30 --out docs/soak

What it runs (all real parts, on loopback): a notary-server + notary-signer + docker-registry
(tests/support/world.py) holding signed, unsigned, untrusted and signer-signed images; `ostiary
serve` the way the README starts it, with its own OPA, a policy directory and `--ca-file`.
Load threads send Deployments, Pods and CronJobs from several namespaces, each with a verdict
known in advance (pinned digest included). Every minute the policy directory changes: a
ClusterImagePolicy entry that admits `REG/soak/toggle/*` without trust is added or removed, and
the toggle image is checked against the state in force (requests for it are held back while a
change is being picked up, then the first answer after the change must already obey it).

It reports wrong verdicts, HTTP errors (5xx and others) and transport errors, and samples every
few seconds the RSS, open files and threads of the Ostiary processes (gunicorn master and worker)
and of OPA. Output: OUT/soak.json (samples and totals), OUT/soak.md (a table), OUT/soak.png
(needs matplotlib: `.venv/bin/pip install matplotlib`; skipped with a message otherwise).
Exit status 1 when any verdict was wrong or any 5xx was seen.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts import harness
from scripts.harness import SYSTEM_NS
from tests.support.world import NotaryWorld, Scenario

NAMESPACES = ("default", "team-a", "team-b", "strict")


# ---------------------------------------------------------------------- policies and reviews


def policies(reg: str, notary: str, alice_pem: str, toggle: bool) -> dict[str, dict]:
    trust = harness.trust_policy(notary)
    alice = harness.trust_policy(notary, "alice")
    docs = {
        "cluster.json": harness.cluster_policy(
            "soak",
            [
                {"name": f"{reg}/ostiary/*", "policy": trust},
                {"name": f"{reg}/ostiary/signer-pem", "policy": alice},
            ],
        ),
        # an ImagePolicy reads signer secrets from its own namespace, a ClusterImagePolicy from the system one
        **{f"alice-{ns}.json": harness.signer_secret("alice", ns, alice_pem) for ns in (SYSTEM_NS, "strict")},
        # namespace "strict" has its own policy: only the signer image is allowed there
        "strict.json": harness.image_policy(
            "strict", "strict", [{"name": f"{reg}/ostiary/signer-pem", "policy": alice}]
        ),
    }
    if toggle:
        docs["toggle.json"] = harness.cluster_policy(
            "toggle", [{"name": f"{reg}/soak/toggle/*", "policy": {}}]
        )
    return docs


def review(kind: str, namespace: str, images: list[str]) -> dict:
    return harness.review(kind, namespace, images, name="soak", rich=False)


@dataclass
class Case:
    name: str
    images: list[str]
    allowed_in: dict[str, bool]  # namespace -> expected verdict
    pins: dict[str, str]  # image -> pinned reference expected in the patch
    toggle: bool = False  # verdict depends on the toggle policy


def cases(scenario: Scenario, toggle_image: str) -> list[Case]:
    signed, pem = scenario["signed"], scenario["signer-pem"]
    unsigned, no_trust = scenario["unsigned"], scenario["no-trust"]
    lenient = {"default": True, "team-a": True, "team-b": True, "strict": False}
    return [
        Case("signed", [signed.reference] * 3, lenient, {signed.reference: signed.pinned}),
        Case("signer", [pem.reference], {ns: True for ns in NAMESPACES}, {pem.reference: pem.pinned}),
        Case(
            "mixed",
            [signed.reference, pem.reference],
            lenient,
            {signed.reference: signed.pinned, pem.reference: pem.pinned},
        ),
        Case("unsigned", [signed.reference, unsigned.reference], {ns: False for ns in NAMESPACES}, {}),
        Case("no-trust", [no_trust.reference], {ns: False for ns in NAMESPACES}, {}),
        Case("already-pinned", [signed.pinned], lenient, {}),
        Case("toggle", [toggle_image], {}, {}, toggle=True),
    ]


# ---------------------------------------------------------------------- the verdict oracle


@dataclass
class Totals:
    sent: int = 0
    wrong: int = 0
    http_5xx: int = 0
    http_other: int = 0
    transport: int = 0
    wrong_examples: list[str] = field(default_factory=list)
    by_case: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def problem(self, text: str) -> None:
        """A wrong verdict (the caller holds the lock)."""
        self.wrong += 1
        if len(self.wrong_examples) < 20:
            self.wrong_examples.append(text)


def check(case: Case, namespace: str, toggle_on: bool, resp: dict) -> str | None:
    expected = toggle_on if case.toggle else case.allowed_in[namespace]
    if namespace == "strict" and case.toggle:
        expected = False  # the namespace policy replaces every cluster policy
    got = bool(resp.get("allowed"))
    if got != expected:
        msg = (resp.get("status") or {}).get("message", "")
        return f"{case.name} in {namespace}: allowed={got}, expected {expected} ({msg[:200]})"
    if got and case.pins:
        patch = json.loads(base64.b64decode(resp["patch"])) if resp.get("patch") else []
        values = {op.get("value") for op in patch if isinstance(op.get("value"), str)}  # image pins
        missing = [p for p in case.pins.values() if p not in values]
        if missing:
            return f"{case.name} in {namespace}: patch lacks {missing}"
    return None


# ---------------------------------------------------------------------- the run


class Soak:
    """Load threads checking every verdict, a policy toggled every period, the processes sampled."""

    def __init__(self, args: argparse.Namespace, world: NotaryWorld, scenario: Scenario, base: Path) -> None:
        self.args, self.world, self.scenario = args, world, scenario
        self.reg = world.registry_host
        self.toggle_image = f"{self.reg}/soak/toggle/app:v1"
        self.policy_dir = base / "policies"
        self.totals = Totals()
        self.stop = threading.Event()
        self.samples: list[dict] = []
        self.changes = 0
        # While a policy change is being picked up, answers for the toggle image are not checked;
        # every other image must keep its verdict through the reload.
        self.toggle, self.changing, self.generation = False, False, 0
        self.write_policies()
        self.server = harness.ostiary_serve("ostiary", base, self.policy_dir, ca_file=world.ca_file)
        self.cases = cases(scenario, self.toggle_image)

    def write_policies(self) -> None:
        docs = policies(self.reg, self.world.notary_url, self.scenario.alice_pem, self.toggle)
        harness.write_policies(self.policy_dir, docs)

    # ------------------------------------------------------------------ load

    def load(self) -> None:
        """One load thread: random case, namespace and kind, until stopped."""
        http = requests.Session()
        rnd = random.Random()
        while not self.stop.is_set():
            case = rnd.choice(self.cases)
            if case.toggle and self.changing:
                continue
            self.send(http, case, rnd.choice(NAMESPACES), rnd.choice(("Deployment", "Pod", "CronJob")))

    def send(self, http: requests.Session, case: Case, namespace: str, kind: str) -> None:
        body = review(kind, namespace, case.images)
        toggle_now, generation = self.toggle, self.generation
        totals = self.totals
        started = time.monotonic()
        try:
            r = http.post(f"{self.server.url}/admit", json=body, timeout=30)
        except requests.RequestException as exc:
            with totals.lock:
                totals.sent += 1
                totals.transport += 1
                totals.wrong_examples.append(f"transport: {exc.__class__.__name__}")
            return
        elapsed = time.monotonic() - started
        unsettled = case.toggle and (self.changing or self.generation != generation)
        with totals.lock:
            totals.sent += 1
            totals.by_case[case.name] += 1
            totals.latencies.append(elapsed)
            if r.status_code >= 500:
                totals.http_5xx += 1
            elif r.status_code != 200:
                totals.http_other += 1
            elif not unsettled:
                problem = check(case, namespace, toggle_now, r.json().get("response") or {})
                if problem:
                    totals.problem(problem)

    # ------------------------------------------------------------------ policy changes

    def flip_policy(self) -> None:
        """Change the toggle policy and wait (holding the load back) until the server obeys it."""
        self.changing = True
        self.generation += 1
        self.toggle = not self.toggle
        try:
            self.write_policies()
            if not self.obeyed(30):
                with self.totals.lock:
                    self.totals.problem(f"policy change to toggle={self.toggle} not in force after 30 s")
        finally:
            self.generation += 1
            self.changing = False

    def obeyed(self, seconds: float) -> bool:
        """Whether the toggle image's verdict follows the toggle within `seconds`."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            try:
                r = requests.post(
                    f"{self.server.url}/admit", json=review("Pod", "default", [self.toggle_image]), timeout=10
                )
                if r.status_code == 200 and r.json()["response"]["allowed"] == self.toggle:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.2)
        return False

    # ------------------------------------------------------------------ the loop

    def sample(self, t: float) -> None:
        with self.totals.lock:
            sent, wrong, e5 = self.totals.sent, self.totals.wrong, self.totals.http_5xx
        self.samples.append(
            {"t": round(t, 1), "sent": sent, "wrong": wrong, "http_5xx": e5, "procs": self.server.stats()}
        )

    def run(self) -> None:
        workers = [threading.Thread(target=self.load, daemon=True) for _ in range(self.args.threads)]
        for w in workers:
            w.start()
        t0 = time.monotonic()
        end = t0 + self.args.minutes * 60
        next_flip = t0 + self.args.policy_period
        next_sample = t0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                self.sample(now - t0)
                next_sample += self.args.sample_period
            if now >= next_flip:
                self.flip_policy()
                self.changes += 1
                next_flip += self.args.policy_period
            time.sleep(0.5)
        self.stop.set()
        for w in workers:
            w.join(timeout=35)


def lock_out_dir(out: Path) -> TextIO:
    """One soak per output directory: two runs sharing it would rewrite each other's policies (a
    first run of this script did exactly that, and its "wrong verdicts" were the other run's)."""
    lock = (out / ".soak.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise SystemExit(f"another soak is running with --out {out}; give another directory") from None
    return lock


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--policy-period", type=float, default=60.0, help="seconds between policy changes")
    ap.add_argument("--sample-period", type=float, default=10.0)
    ap.add_argument("--out", default="soak-out")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_out_dir(out)
    world, scenario = harness.start_world()
    soak: Soak | None = None
    try:
        soak = Soak(args, world, scenario, out / "run")
        soak.run()
        return report(out, args, soak.totals, soak.samples, soak.changes)
    finally:
        if soak is not None:
            soak.server.close()
        world.stop()
        lock.close()


def _series(samples: list[dict], name: str, key: str) -> list[float]:
    return [sum(p[key] for p in s["procs"] if p["name"] == name) for s in samples]


def report(out: Path, args: argparse.Namespace, totals: Totals, samples: list[dict], changes: int) -> int:
    lat = sorted(totals.latencies) or [0.0]

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000

    summary = {
        "minutes": args.minutes,
        "threads": args.threads,
        "policy_changes": changes,
        "admissions": totals.sent,
        "wrong_verdicts": totals.wrong,
        "http_5xx": totals.http_5xx,
        "http_other": totals.http_other,
        "transport_errors": totals.transport,
        "by_case": dict(totals.by_case),
        "p50_ms": round(pct(0.50), 1),
        "p99_ms": round(pct(0.99), 1),
        "max_ms": round(lat[-1] * 1000, 1),
        "examples": totals.wrong_examples,
    }
    (out / "soak.json").write_text(json.dumps({"summary": summary, "samples": samples}, indent=1))
    header = (
        "| minute | admissions | wrong | 5xx | Ostiary RSS MiB | Ostiary fds | Ostiary threads "
        "| OPA RSS MiB | OPA fds | OPA threads |"
    )
    rows = [header, "|" + "---|" * 10]
    step = max(1, len(samples) // 16)
    for s in samples[::step] + ([samples[-1]] if samples else []):
        o = [p for p in s["procs"] if p["name"] == "ostiary"]
        q = [p for p in s["procs"] if p["name"] == "opa"]
        rows.append(
            f"| {s['t'] / 60:.1f} | {s['sent']} | {s['wrong']} | {s['http_5xx']} "
            f"| {sum(p['rss_mib'] for p in o):.0f} | {sum(p['fds'] for p in o)} "
            f"| {sum(p['threads'] for p in o)} | {sum(p['rss_mib'] for p in q):.0f} "
            f"| {sum(p['fds'] for p in q)} | {sum(p['threads'] for p in q)} |"
        )
    text = [
        "# Soak run",
        "",
        "```",
        json.dumps({k: v for k, v in summary.items() if k != "examples"}, indent=1),
        "```",
        "",
        *rows,
        "",
    ]
    if totals.wrong_examples:
        text += ["Problems seen:", "", *[f"- {e}" for e in totals.wrong_examples], ""]
    (out / "soak.md").write_text("\n".join(text))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t = [s["t"] / 60 for s in samples]
        fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
        for ax, key, label in zip(
            axes, ("rss_mib", "fds", "threads"), ("RSS (MiB)", "open files", "threads"), strict=True
        ):
            ax.plot(t, _series(samples, "ostiary", key), label="Ostiary (master + worker)")
            ax.plot(t, _series(samples, "opa", key), label="OPA")
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0)
            ax.legend(loc="lower right")
        axes[-1].set_xlabel("minutes")
        fig.suptitle(f"Ostiary soak: {totals.sent} admissions, {totals.wrong} wrong, {totals.http_5xx} 5xx")
        fig.tight_layout()
        fig.savefig(out / "soak.png", dpi=90)
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
    print((out / "soak.md").read_text())
    return 1 if totals.wrong or totals.http_5xx or totals.transport else 0


if __name__ == "__main__":
    raise SystemExit(main())
