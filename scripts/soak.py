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
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.world import NotaryWorld, build_scenario, free_port

SYSTEM_NS = "ostiary-system"
NAMESPACES = ("default", "team-a", "team-b", "strict")


# ---------------------------------------------------------------------- policies and reviews


def policies(reg: str, notary: str, alice_pem: str, toggle: bool) -> dict[str, dict]:
    import base64

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    trust: dict = {"trust": {"enabled": True, "trustServer": notary}}
    alice = {"trust": {"enabled": True, "trustServer": notary, "signerSecrets": [{"name": "alice"}]}}
    docs = {
        "cluster.json": {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": "soak"},
            "spec": {
                "repositories": [
                    {"name": f"{reg}/ostiary/*", "policy": trust},
                    {"name": f"{reg}/ostiary/signer-pem", "policy": alice},
                ]
            },
        },
        # an ImagePolicy reads signer secrets from its own namespace, a ClusterImagePolicy from the system one
        **{
            f"alice-{ns}.json": {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "alice", "namespace": ns},
                "data": {"name": b64("alice"), "publicKey": b64(alice_pem)},
            }
            for ns in (SYSTEM_NS, "strict")
        },
        # namespace "strict" has its own policy: only the signer image is allowed there
        "strict.json": {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ImagePolicy",
            "metadata": {"name": "strict", "namespace": "strict"},
            "spec": {"repositories": [{"name": f"{reg}/ostiary/signer-pem", "policy": alice}]},
        },
    }
    if toggle:
        docs["toggle.json"] = {
            "apiVersion": "ostiary.dev/v1",
            "kind": "ClusterImagePolicy",
            "metadata": {"name": "toggle"},
            "spec": {"repositories": [{"name": f"{reg}/soak/toggle/*", "policy": {}}]},
        }
    return docs


def write_policies(directory: Path, docs: dict[str, dict]) -> None:
    for old in directory.glob("*.json"):
        if old.name not in docs:
            old.unlink()
    for name, doc in docs.items():
        tmp = directory / f".{name}.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.rename(directory / name)


def review(kind: str, namespace: str, images: list[str]) -> dict:
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    spec = {"containers": containers}
    meta = {"name": "soak", "namespace": namespace}
    if kind == "Pod":
        obj = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
        group, resource = "", "pods"
    elif kind == "CronJob":
        obj = {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": meta,
            "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": spec}}}},
        }
        group, resource = "batch", "cronjobs"
    else:
        obj = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "selector": {"matchLabels": {"app": "soak"}},
                "template": {"metadata": {"labels": {"app": "soak"}}, "spec": spec},
            },
        }
        group, resource = "apps", "deployments"
    gvk = {"group": group, "version": "v1", "kind": kind}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": gvk,
            "resource": {**gvk, "resource": resource},
            "namespace": namespace,
            "operation": "CREATE",
            "name": "soak",
            "userInfo": {"username": "soak"},
            "object": obj,
        },
    }


@dataclass
class Case:
    name: str
    images: list[str]
    allowed_in: dict[str, bool]  # namespace -> expected verdict
    pins: dict[str, str]  # image -> pinned reference expected in the patch
    toggle: bool = False  # verdict depends on the toggle policy


def cases(scenario, toggle_image: str) -> list[Case]:
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


# ---------------------------------------------------------------------- process sampling


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                children = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo.extend(int(c) for c in children)
        except OSError:
            pass
    return out


def proc_stats(pid: int) -> dict | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    name = "opa" if Path(cmdline[0].decode(errors="replace")).name == "opa" else "ostiary"
    return {
        "pid": pid,
        "name": name,
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
        "fds": fds,
    }


# ---------------------------------------------------------------------- the run


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


def check(case: Case, namespace: str, toggle_on: bool, resp: dict) -> str | None:
    expected = toggle_on if case.toggle else case.allowed_in[namespace]
    if namespace == "strict" and case.toggle:
        expected = False  # the namespace policy replaces every cluster policy
    got = bool(resp.get("allowed"))
    if got != expected:
        msg = (resp.get("status") or {}).get("message", "")
        return f"{case.name} in {namespace}: allowed={got}, expected {expected} ({msg[:200]})"
    if got and case.pins:
        import base64

        patch = json.loads(base64.b64decode(resp.get("patch") or "W10=")) if resp.get("patch") else []
        values = {op.get("value") for op in patch if isinstance(op.get("value"), str)}  # image pins
        missing = [p for p in case.pins.values() if p not in values]
        if missing:
            return f"{case.name} in {namespace}: patch lacks {missing}"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--policy-period", type=float, default=60.0, help="seconds between policy changes")
    ap.add_argument("--sample-period", type=float, default=10.0)
    ap.add_argument("--out", default="soak-out")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # One soak per output directory: two runs sharing it would rewrite each other's policies (a
    # first run of this script did exactly that, and its "wrong verdicts" were the other run's).
    import fcntl

    lock = (out / ".soak.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise SystemExit(f"another soak is running with --out {out}; give another directory") from None

    world = NotaryWorld()
    world.start()
    proc = None
    try:
        scenario = build_scenario(world)
        reg = world.registry_host
        toggle_image = f"{reg}/soak/toggle/app:v1"
        base = out / "run"
        policy_dir = base / "policies"
        policy_dir.mkdir(parents=True, exist_ok=True)
        toggle_on = False
        write_policies(policy_dir, policies(reg, world.notary_url, scenario.alice_pem, toggle_on))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open(base / "ostiary.log", "ab") as log:
            proc = subprocess.Popen(
                [
                    str(ROOT / ".venv/bin/ostiary"),
                    "serve",
                    "--policy-dir",
                    str(policy_dir),
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--ca-file",
                    world.ca_file,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"ostiary serve did not become ready; see {base / 'ostiary.log'}")
            time.sleep(0.2)

        all_cases = cases(scenario, toggle_image)
        totals = Totals()
        stop = threading.Event()
        # While a policy change is being picked up, answers for the toggle image are not checked;
        # every other image must keep its verdict through the reload.
        state = {"toggle": toggle_on, "changing": False, "generation": 0}

        def load() -> None:
            http = requests.Session()
            rnd = random.Random()
            while not stop.is_set():
                case = rnd.choice(all_cases)
                namespace = rnd.choice(NAMESPACES)
                kind = rnd.choice(("Deployment", "Pod", "CronJob"))
                body = review(kind, namespace, case.images)
                toggle_now, generation = state["toggle"], state["generation"]
                if case.toggle and state["changing"]:
                    continue
                started = time.monotonic()
                try:
                    r = http.post(f"{url}/admit", json=body, timeout=30)
                except requests.RequestException as exc:
                    with totals.lock:
                        totals.sent += 1
                        totals.transport += 1
                        totals.wrong_examples.append(f"transport: {exc.__class__.__name__}")
                    continue
                elapsed = time.monotonic() - started
                unsettled = case.toggle and (state["changing"] or state["generation"] != generation)
                with totals.lock:
                    totals.sent += 1
                    totals.by_case[case.name] += 1
                    totals.latencies.append(elapsed)
                    if r.status_code >= 500:
                        totals.http_5xx += 1
                        continue
                    if r.status_code != 200:
                        totals.http_other += 1
                        continue
                    if unsettled:
                        continue
                    problem = check(case, namespace, toggle_now, r.json().get("response") or {})
                    if problem:
                        totals.wrong += 1
                        if len(totals.wrong_examples) < 20:
                            totals.wrong_examples.append(problem)

        def flip_policy() -> None:
            """Change the toggle policy and wait (holding the load back) until the server obeys it."""
            state["changing"] = True
            state["generation"] += 1
            state["toggle"] = not state["toggle"]
            try:
                write_policies(
                    policy_dir, policies(reg, world.notary_url, scenario.alice_pem, state["toggle"])
                )
                until = time.monotonic() + 30
                while time.monotonic() < until:
                    try:
                        r = requests.post(
                            f"{url}/admit", json=review("Pod", "default", [toggle_image]), timeout=10
                        )
                        if r.status_code == 200 and r.json()["response"]["allowed"] == state["toggle"]:
                            return
                    except requests.RequestException:
                        pass
                    time.sleep(0.2)
                with totals.lock:
                    totals.wrong += 1
                    totals.wrong_examples.append(
                        f"policy change to toggle={state['toggle']} not in force after 30 s"
                    )
            finally:
                state["generation"] += 1
                state["changing"] = False

        workers = [threading.Thread(target=load, daemon=True) for _ in range(args.threads)]
        for w in workers:
            w.start()
        samples: list[dict] = []
        t0 = time.monotonic()
        end = t0 + args.minutes * 60
        next_flip = t0 + args.policy_period
        next_sample = t0
        changes = 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                stats = [s for s in (proc_stats(p) for p in descendants(proc.pid)) if s]
                with totals.lock:
                    sent, wrong, e5 = totals.sent, totals.wrong, totals.http_5xx
                samples.append(
                    {"t": round(now - t0, 1), "sent": sent, "wrong": wrong, "http_5xx": e5, "procs": stats}
                )
                next_sample += args.sample_period
            if now >= next_flip:
                flip_policy()
                changes += 1
                next_flip += args.policy_period
            time.sleep(0.5)
        stop.set()
        for w in workers:
            w.join(timeout=35)
        return report(out, args, totals, samples, changes)
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        world.stop()


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
