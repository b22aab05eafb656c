"""SignatureService: the signature facts of every requirement of an admission, in parallel, under one
deadline, each request sent to the verifier of its format (the port, app/signatures/port.py).

`gather` never raises for a failure of one image: a format no verifier handles, a verifier that
raises, or one still running at the deadline each give facts with `verified` false and a reason
naming the format. It returns by the deadline even when a worker is stuck in the network.

The verifiers are given a deadline a little earlier than the service's own (`SETTLE`), so a read
that timed out is reported by the reader (app/signatures/registry.py shown_error) rather than
overtaken by the service's deadline. Under the runtime (`hide_connection_errors`) a verifier still
running at the deadline reads as its registry not reached, like a read that timed out: a different
text would tell a pod's author that the host it named accepted the connection and kept silent.
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
from app.signatures.registry import unreachable

log = logging.getLogger(__name__)

MAX_REQUESTS = 256  # per admission; more are denied (facts with a reason), not verified
# Seconds (at most a tenth of the time left) between the verifiers' deadline and the service's: time
# for a verifier whose read timed out to state why before the service stops waiting.
SETTLE = 0.25


def verifier_deadline(deadline: float) -> float:
    """The deadline the verifiers get: SETTLE, or a tenth of what is left, before `deadline`."""
    return deadline - min(SETTLE, max(0.0, deadline - clocks.monotonic()) / 10)


class SignatureService:
    def __init__(
        self,
        verifiers: Iterable[SignatureVerifier],
        *,
        workers: int = 16,
        hide_connection_errors: bool = False,
    ):
        self.verifiers = {v.format: v for v in verifiers}
        # the runtime (serve, apply/explain/test): what a verifier still running at the deadline
        # reads as (see the module docstring)
        self.hide_connection_errors = hide_connection_errors
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
        reads_until = verifier_deadline(deadline)
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
                futures.append(self._pool.submit(verifier.verify, request, reads_until))
        pending = [f for f in futures if isinstance(f, Future)]
        if pending:
            wait(pending, timeout=max(0.0, deadline - clocks.monotonic()))
        results = []
        for request, item in zip(requests, futures, strict=True):
            results.append(self._count(self._result(request, item)))
        return results

    def _late(self, request: SignatureRequest, started: bool) -> dict:
        """The facts of a requirement whose verifier was still running at the deadline, or had not
        started (every worker busy). When hidden both read as the registry not reached: which of them
        happened, like how long the reads of other images took, is the network's to tell."""
        image = request.image
        if not self.hide_connection_errors:
            late = f"{request.format} signatures of {image.normalized} were not verified before the deadline"
            return failure_facts(request.format, request.requirement, late)
        who = f"registry {image.registry}"
        log.warning(
            "%s signatures of %s: %s could not be reached: %s before the deadline",
            request.format,
            image.normalized,
            who,
            "a read of the registry or signature store did not finish" if started else "no worker was free",
        )
        return failure_facts(request.format, request.requirement, unreachable(who), unavailable=True)

    def _result(self, request: SignatureRequest, item: Future[dict] | dict) -> dict:
        if isinstance(item, dict):
            return item
        if not item.done():
            return self._late(request, started=not item.cancel())
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
