"""The audit's list pacing and pagination in isolation: the token bucket's rate, and a continue token
that expired (410) restarting the listing without yielding an object twice. The listing itself runs
against the real kube-apiserver in tests/e2e/test_e2e_audit.py."""

from __future__ import annotations

import pytest

from app.audit.ratelimit import TokenBucket
from app.audit.scan import ListFailed, list_kind
from app.kube.client import KubeError
from app.workloads import WORKLOADS

PODS = WORKLOADS[0]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_bucket_allows_its_burst_then_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(5.0, burst=2, clock=clock, sleep=clock.sleep)
    for _ in range(12):
        assert bucket.take()
    assert clock.now == pytest.approx(2.0)  # 2 at once, then 10 at 5 per second


def test_a_closed_bucket_refuses() -> None:
    clock = Clock()
    bucket = TokenBucket(1.0, burst=1, clock=clock, sleep=lambda s: bucket.close())
    assert bucket.take()
    assert not bucket.take()


class Pages:
    """Two pages; the first continue token expires once (410), as an API server's does after ~5 minutes."""

    def __init__(self, fail_with: KubeError | None = None) -> None:
        self.calls: list[str | None] = []
        self.expired = False
        self.fail_with = fail_with

    def list_page(
        self, path: str, limit: int, continue_token: str | None = None, label_selector=None
    ) -> dict:
        self.calls.append(continue_token)
        if self.fail_with is not None:
            raise self.fail_with
        if continue_token is None:
            return {"items": [pod("a"), pod("b")], "metadata": {"continue": "t1"}}
        if not self.expired:
            self.expired = True
            raise KubeError(410, "The provided continue parameter is too old")
        return {"items": [pod("c")], "metadata": {}}


def pod(uid: str) -> dict:
    return {"metadata": {"name": uid, "uid": uid, "managedFields": [{"manager": "x"}]}, "spec": {}}


def test_an_expired_continue_token_lists_again_without_duplicates() -> None:
    api = Pages()
    objects = list(list_kind(api, PODS, None, None, page_size=2))
    assert [o["metadata"]["uid"] for o in objects] == ["a", "b", "c"]
    assert api.calls == [None, "t1", None, "t1"]
    assert all("managedFields" not in o["metadata"] and o["kind"] == "Pod" for o in objects)


def test_a_refused_list_is_a_failure_naming_the_kind() -> None:
    with pytest.raises(ListFailed, match="listing pods in namespace shop failed: 403: forbidden"):
        list(list_kind(Pages(KubeError(403, "forbidden")), PODS, "shop", None))
