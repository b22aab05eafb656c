"""Decision logs: one JSON line per admission, enough to answer "why was my pod denied?".

Why a module of its own: the record is assembled from four places — the AdmissionReview (who,
what), the response (verdict, messages, patch), the decision query's input and answer (matched
entries, trust facts), and OPA (decision ids, time) — and it must never carry a secret. Every
field is copied explicitly from a known, non-secret place: no object, no pull secret, no request
header, no userInfo.extra, no key material (signers appear by name and role only). Error texts are
truncated; they come from Ostiary's own messages, which never quote credentials.

The hook: the OPA client of the Reviewer is wrapped (`DecisionLog.wrap`) so that, per request
thread, the decision query's input/answer and OPA's decision ids are kept; /admit calls `begin()`
before the review and `write(...)` after it. Fields: docs/policy-as-code.md, "Decision logs".

    log = DecisionLog.open("-")            # "-" stdout (default), a file path (appended), "off"
    reviewer.opa = log.wrap(reviewer.opa)
    log.begin(); answer, outcome = reviewer.review(body); log.write(body, answer, outcome, seconds)
"""

from __future__ import annotations

import json
import sys
import threading
import time
from datetime import UTC, datetime
from typing import IO

from app import jsonio
from app.admission.review import DECISION_PATH, PLAN_PATH, Outcome, decision_answered
from app.ports import PolicyQuery

RECORD_TYPE = "ostiary.dev/decision/v1"
DEFAULT_TARGET = "-"
MAX_TEXT = 2000


def _text(value: object, limit: int = MAX_TEXT) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= limit else text[: limit - 12] + " …(truncated)"


def _strings(values: object) -> list[str]:
    return [_text(v) or "" for v in values if isinstance(v, str)] if isinstance(values, list) else []


class _Trace(threading.local):
    """What one request thread saw of OPA during one admission."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.decision_input: dict | None = None
        self.decision: object = None
        self.plan_input: dict | None = None
        self.decision_ids: dict[str, str] = {}
        self.opa_seconds = 0.0


class _RecordingOpa:
    """The OPA client, unchanged, noting the queries' inputs, answers and decision ids per thread."""

    def __init__(self, client: PolicyQuery, trace: _Trace):
        self._client = client
        self._trace = trace

    def query(self, path: str, input: dict, deadline: float) -> object:
        started = time.monotonic()
        try:
            result = self._client.query(path, input, deadline)
        finally:
            self._trace.opa_seconds += time.monotonic() - started
            last = getattr(self._client, "last_decision_id", None)
            decision_id = last() if callable(last) else None
            if isinstance(decision_id, str):
                self._trace.decision_ids["plan" if path == PLAN_PATH else "decision"] = decision_id
            if path == PLAN_PATH:
                self._trace.plan_input = input
            elif path == DECISION_PATH:
                self._trace.decision_input = input
        decision = decision_answered(path, result)
        if decision is not None:  # the decision query's, or the plan's when no trust facts were needed
            self._trace.decision, self._trace.decision_input = decision, input
        return result

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)


def _obj(value: object) -> dict:
    """`value` when it is a JSON object, else an empty one (hostile input is read, never trusted)."""
    return value if isinstance(value, dict) else {}


def _user(request: dict) -> dict:
    info = _obj(request.get("userInfo"))
    return {"username": _text(info.get("username")), "groups": _strings(info.get("groups"))}


def _trust_summary(facts: object) -> dict | None:
    """The facts a person needs, without keys: verified, what was signed, why not."""
    if not isinstance(facts, dict):
        return None
    tag = facts.get("tag")
    targets = _obj(facts.get("targets"))
    signed = targets.get(tag) if isinstance(tag, str) else None
    if signed is None and len(targets) == 1:  # a digest-only reference: the one tag signing it
        signed = next(iter(targets.values()))
    signed = signed if isinstance(signed, dict) else {}
    root = facts.get("root_trust", facts.get("root"))
    root_method = root.get("method") if isinstance(root, dict) else root if isinstance(root, str) else None
    return {
        "verified": facts.get("verified") is True,
        "server": _text(facts.get("server")),
        "gun": _text(facts.get("gun")),
        "signed_digest": _text(signed.get("released")),
        "refused": _text(signed.get("refused")),
        "signed_by_roles": sorted(str(r) for r in (signed.get("roles") or {})),
        "root": _text(root_method),
        "error": _text(facts.get("error")),
        "error_role": _text(facts.get("error_role")),
        "signers": [
            {
                "name": _text(s.get("name")),
                "secret": _text(s.get("secret")),
                "role": _text(s.get("role")),
                "error": _text(s.get("error")),
            }
            for s in facts.get("signers") or []
            if isinstance(s, dict)
        ],
    }


def _entry(policy: object) -> dict | None:
    if not isinstance(policy, dict):
        return None
    return {k: policy.get(k) for k in ("kind", "name", "namespace", "repository", "index", "mode")}


def _images(trace: _Trace, decision: dict | None) -> list[dict]:
    seen = (trace.decision_input or trace.plan_input or {}).get("images") or []
    by_id = {i.get("id"): i for i in seen if isinstance(i, dict)}
    decided = {i.get("id"): i for i in (decision or {}).get("images") or [] if isinstance(i, dict)}
    result = []
    for image_id, site in by_id.items():
        item = decided.get(image_id)
        result.append(
            {
                "image": _text(site.get("image")),
                "container": site.get("container"),
                "path": site.get("path"),
                "verdict": ("allowed" if item.get("allowed") else "denied") if item else "not decided",
                "entry": _entry(item.get("policy")) if item else None,
                "trust": _trust_summary(site.get("trust")),
                "reasons": _strings(item.get("reasons")) if item else [],
                "warnings": _strings(item.get("warnings")) if item else [],
                "pin": _text(item.get("pin")) if item else None,
            }
        )
    return result


def _patch_summary(outcome: Outcome) -> list[dict]:
    """What was pinned, from the pin operations the answer's patch was built from (Outcome.pins,
    taken from the decision), one per operation; the patch itself is not decoded again."""
    summary = []
    for op in getattr(outcome, "pins", None) or []:
        value = op.get("value") if isinstance(op, dict) else None
        digest = value.rpartition("@")[2] if isinstance(value, str) and "@" in value else None
        summary.append(
            {
                "path": op.get("path") if isinstance(op, dict) else None,
                "image": _text(value),
                "digest": digest,
            }
        )
    return summary


def build_record(
    review: object, answer: dict, outcome: Outcome, seconds: float, trace: _Trace | None = None
) -> dict:
    """The decision-log record of one admission (a pure function of what was seen)."""
    trace = trace or _Trace()
    request = _obj(review.get("request")) if isinstance(review, dict) else {}
    obj = _obj(request.get("object"))
    meta = _obj(obj.get("metadata"))
    kind = _obj(request.get("kind"))
    response = answer.get("response") or {}
    decision = trace.decision if isinstance(trace.decision, dict) else None
    allowed = response.get("allowed") is True
    message = (response.get("status") or {}).get("message") if not allowed else None
    reason = getattr(outcome, "reason", None)
    denials = _strings((decision or {}).get("denials")) if decision else ([_text(message)] if message else [])
    return {
        "type": RECORD_TYPE,
        "time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "uid": _text(request.get("uid")),
        "namespace": _text(request.get("namespace") or meta.get("namespace")),
        "kind": _text(kind.get("kind")),
        "api_version": _text("/".join(p for p in (kind.get("group"), kind.get("version")) if p)),
        "name": _text(request.get("name") or meta.get("name") or meta.get("generateName")),
        "operation": _text(request.get("operation")),
        "sub_resource": _text(request.get("subResource")),
        "dry_run": request.get("dryRun") is True,
        "user": _user(request),
        "allowed": allowed,
        "verdict": "allowed" if allowed else "denied",
        "reason": None if reason == message else _text(reason),
        "error": bool(getattr(outcome, "error", False)),
        "message": _text(message),
        "images": _images(trace, decision),
        "denials": denials,
        "warnings": _strings(response.get("warnings")),
        "patch": _patch_summary(outcome),
        "opa_decision_ids": dict(trace.decision_ids),
        "opa_ms": round(trace.opa_seconds * 1000, 2),
        "latency_ms": round(seconds * 1000, 2),
    }


class DecisionLog:
    """Writes one JSON line per admission to a stream (thread-safe, flushed per line)."""

    def __init__(self, stream: IO[str] | None, target: str):
        self._stream = stream
        self.target = target
        self._lock = threading.Lock()
        self._trace = _Trace()

    @classmethod
    def open(cls, target: str | None = DEFAULT_TARGET) -> DecisionLog:
        """`-` (or None): standard output; `off`: no decision log; else a file, appended to."""
        target = target or DEFAULT_TARGET
        if target == "off":
            return cls(None, target)
        if target == "-":
            return cls(sys.stdout, target)
        return cls(open(target, "a", encoding="utf-8", buffering=1), target)

    def wrap(self, client: PolicyQuery) -> _RecordingOpa:
        """The OPA client to give the Reviewer: the same client, observed by this log."""
        return _RecordingOpa(client, self._trace)

    def begin(self) -> None:
        self._trace.reset()

    @property
    def trace(self) -> _Trace:
        """What this thread's last admission asked OPA and was answered (the offline commands read it)."""
        return self._trace

    def write(self, review: object, answer: dict, outcome: Outcome, seconds: float) -> dict | None:
        if self._stream is None:
            return None
        record = build_record(review, answer, outcome, seconds, self._trace)
        line = jsonio.dumps(record, default=str).decode()
        if not line.isascii():  # as before: non-ASCII escaped, whatever the stream's encoding
            line = json.dumps(record, separators=(",", ":"), default=str)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()
        return record
