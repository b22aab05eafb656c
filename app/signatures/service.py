"""SignatureService: the signature facts of every requirement of an admission, in parallel, under one
deadline, each request sent to the verifier of its format (the port, app/signatures/port.py).

`gather` never raises for a failure of one image: a format no verifier handles, a verifier that
raises, or one still running at the deadline each give facts with `verified` false and a reason
naming the format. It returns by the deadline even when a worker is stuck in the network.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait

from app.notary import clock as clocks
from app.signatures.facts import failure_facts
from app.signatures.port import SignatureRequest, SignatureVerifier

log = logging.getLogger(__name__)

MAX_REQUESTS = 256  # per admission; more are denied (facts with a reason), not verified


class SignatureService:
    def __init__(self, verifiers: Iterable[SignatureVerifier], *, workers: int = 16):
        self.verifiers = {v.format: v for v in verifiers}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ostiary-signatures")
        self._lock = threading.Lock()
        self._stats: Counter[tuple[str, str]] = Counter()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def stats(self) -> dict[tuple[str, str], int]:
        """(format, "verified" | "not_verified") -> requirements gathered so far."""
        with self._lock:
            return dict(self._stats)

    def _count(self, facts: dict) -> dict:
        with self._lock:
            self._stats[
                (str(facts.get("format")), "verified" if facts.get("verified") else "not_verified")
            ] += 1
        return facts

    def gather(self, requests: Sequence[SignatureRequest], deadline: float) -> list[dict]:
        futures: list[Future[dict] | dict] = []
        for index, request in enumerate(requests):
            verifier = self.verifiers.get(request.format)
            if index >= MAX_REQUESTS:
                futures.append(
                    failure_facts(
                        request.format,
                        request.requirement,
                        f"more than {MAX_REQUESTS} signature requirements in one admission",
                    )
                )
            elif verifier is None:
                futures.append(
                    failure_facts(
                        request.format,
                        request.requirement,
                        f"signature format {request.format!r} is not supported by this Ostiary",
                    )
                )
            else:
                futures.append(self._pool.submit(verifier.verify, request, deadline))
        pending = [f for f in futures if isinstance(f, Future)]
        if pending:
            wait(pending, timeout=max(0.0, deadline - clocks.monotonic()))
        results = []
        for request, item in zip(requests, futures, strict=True):
            results.append(self._count(self._result(request, item, deadline)))
        return results

    @staticmethod
    def _result(request: SignatureRequest, item: Future[dict] | dict, deadline: float) -> dict:
        if isinstance(item, dict):
            return item
        if not item.done():
            item.cancel()
            return failure_facts(
                request.format,
                request.requirement,
                f"{request.format} signatures of {request.image.normalized} were not verified before the deadline",
            )
        error = item.exception()
        if error is not None:
            log.error(
                "the %s verifier failed for %s", request.format, request.image.normalized, exc_info=error
            )
            return failure_facts(
                request.format,
                request.requirement,
                f"{request.format} verification failed: {error.__class__.__name__}: {error}",
            )
        return item.result()
