#!/usr/bin/env python3
"""The load process of scripts/bench_admit.py: threads posting bodies over keep-alive connections.

Run as `python scripts/loadgen.py` with one JSON spec line on stdin (host, port, path, bodies,
expected verdicts, threads, mode "duration" or "once", duration, warmup). It says READY on stdout
when its warm-up is over (mode "once": at once), starts the measured window at a GO line on stdin,
and writes one JSON line of results: latencies, elapsed, errors by kind, examples, its own CPU
seconds, and the requests begun in the warm-up that finished in the window ("carried").

Standard library only: its own CPU (interpreter start included) is reported as the client's cost.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import sys
import threading
import time
from typing import Any, TextIO


class Load:
    """One load process's threads, counters and window."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.host, self.port, self.path = spec["host"], spec["port"], spec["path"]
        self.bodies = [b.encode() for b in spec["bodies"]]
        self.expected: list[bool | None] = spec["expected"]  # None: not checked
        self.threads: int = spec["threads"]
        self.spec = spec
        self.lock = threading.Lock()
        self.results: list[list[float]] = [[] for _ in range(self.threads)]
        self.carried = [0] * self.threads
        self.errors: collections.Counter[str] = collections.Counter()
        self.examples: list[str] = []
        self.end = 0.0
        self.measure = False
        self.next = 0

    # ---------------------------------------------------------------- one request

    def one(self, box: list[http.client.HTTPConnection | None], i: int) -> tuple[bool, float]:
        """Post body i on the thread's connection (opened again after a failure); (ok, seconds)."""
        t = time.perf_counter()
        try:
            conn = box[0]
            if conn is None:
                conn = box[0] = http.client.HTTPConnection(self.host, self.port, timeout=60)
            conn.request("POST", self.path, self.bodies[i], {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            if box[0] is not None:
                box[0].close()
            box[0] = None
            return self.fail(f"transport: {exc.__class__.__name__}: {exc}", "transport"), 0.0
        elapsed = time.perf_counter() - t
        if resp.status != 200:
            return self.fail(f"HTTP {resp.status}: {data[:200]!r}", "http"), elapsed
        problem = self.verdict_problem(i, data)
        if problem:
            return self.fail(problem, "wrong"), elapsed
        return True, elapsed

    def verdict_problem(self, i: int, data: bytes) -> str | None:
        """Why the answer to body i is not the verdict known in advance; None when it is (or unchecked)."""
        want = self.expected[i]
        if want is None:
            return None
        try:
            doc = json.loads(data)
            got = doc["response"]["allowed"] if "response" in doc else doc["result"]["allowed"]
        except (ValueError, KeyError, TypeError):
            return f"unreadable answer: {data[:200]!r}"
        if got is want:
            return None
        msg = (doc.get("response") or {}).get("status", {}).get("message", "")
        return f"body {i}: allowed={got}, expected {want}: {msg[:200]}"

    def fail(self, message: str, kind: str) -> bool:
        with self.lock:
            if self.measure:
                self.errors[kind] += 1
                if len(self.examples) < 10:
                    self.examples.append(message)
        return False

    # ---------------------------------------------------------------- the two modes

    def run_duration(self, k: int) -> None:
        box: list[http.client.HTTPConnection | None] = [None]
        i = k
        while time.perf_counter() < self.end:
            measuring = self.measure
            ok, elapsed = self.one(box, i % len(self.bodies))
            i += self.threads
            if ok and measuring and self.measure:
                self.results[k].append(elapsed)
            elif not measuring and self.measure:
                self.carried[k] += 1  # started in the warm-up, finished in the window: its CPU is in it

    def run_once(self, k: int) -> None:
        box: list[http.client.HTTPConnection | None] = [None]
        while True:
            with self.lock:
                i = self.next
                self.next += 1
            if i >= len(self.bodies):
                return
            ok, elapsed = self.one(box, i)
            if ok:
                self.results[k].append(elapsed)

    def once(self, stdin: TextIO, out: TextIO) -> float:
        """Every body once, spread over the threads; the window's length."""
        self.measure = True
        out.write("READY\n")
        out.flush()
        stdin.readline()  # GO
        started = time.perf_counter()
        pool = [threading.Thread(target=self.run_once, args=(k,)) for k in range(self.threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return time.perf_counter() - started

    def for_duration(self, stdin: TextIO, out: TextIO) -> float:
        """Warm up, then measure for the spec's duration; the window's length."""
        self.end = time.perf_counter() + 3600
        pool = [
            threading.Thread(target=self.run_duration, args=(k,), daemon=True) for k in range(self.threads)
        ]
        for t in pool:
            t.start()
        time.sleep(self.spec["warmup"])
        out.write("READY\n")
        out.flush()
        stdin.readline()  # GO
        with self.lock:
            self.errors.clear()
            self.examples.clear()
            for r in self.results:
                r.clear()
            self.measure = True
        started = time.perf_counter()
        self.end = started + self.spec["duration"]
        for t in pool:
            t.join()
        return time.perf_counter() - started

    def report(self, elapsed: float) -> dict[str, Any]:
        cpu = os.times()
        return {
            "latencies": [x for r in self.results for x in r],
            "elapsed": elapsed,
            "errors": dict(self.errors),
            "examples": self.examples,
            "cpu": cpu.user + cpu.system,
            "carried": sum(self.carried),
        }


def main(stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> None:
    load = Load(json.loads(stdin.readline()))
    elapsed = load.once(stdin, out) if load.spec["mode"] == "once" else load.for_duration(stdin, out)
    out.write(json.dumps(load.report(elapsed)) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
