"""Bounds on what decoding and extraction may build (issue 20, item 8) and on the kept plans'
bytes (item 7), at the unit level; tests/integration/test_one_client.py attacks the real server."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.admission.decode import MAX_VALUES, count_values, parse_review
from app.admission.extract import MAX_IMAGE_SITES, BadRequest, image_sites
from app.admission.plans import MAX_BYTES, PlanCache
from app.lru import TTLCache

# strings full of what the count must not be fooled by: quotes, backslashes, separators
TEXT = st.text(alphabet=st.sampled_from(list('a"\\,:{}[]\n\u00e9\U0001f600')), max_size=12)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=40,
)


def values_and_keys(value: object) -> int:
    """What a decoder builds, counted the slow way: every value and every key."""
    if isinstance(value, dict):
        return 1 + sum(1 + values_and_keys(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(values_and_keys(v) for v in value)
    return 1


@settings(max_examples=400, deadline=None)
@given(JSON, st.booleans(), st.integers(0, 80))
def test_the_count_on_the_bytes_decides_as_the_true_count(value, ascii_only, limit):
    """Over the limit exactly when the text holds more (an undercount would let a body build more
    than MAX_VALUES, an overcount refuse a workload for the commas in its strings)."""
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    built = values_and_keys(value)
    empties = raw.count(b"[]") + raw.count(b"{}")
    counted = count_values(raw, limit)
    if built - 1 > limit:
        assert counted > limit, (raw, counted, built)
    if built + empties <= limit:
        assert counted <= limit, (raw, counted, built)


@pytest.mark.parametrize("item", [b"{}", b"[]", b'""', b"1", b'"\\\\"', b'{"a":1}'])
def test_more_values_than_the_bound_are_refused_before_decoding(item):
    raw = b"[" + b",".join([item] * (MAX_VALUES + 1)) + b"]"
    with pytest.raises(BadRequest, match="more than 200000 values"):
        parse_review(raw)


def test_separators_inside_strings_do_not_count():
    """A workload whose strings hold many commas (a long CSV variable) is not refused for them."""
    raw = json.dumps({"request": {"uid": "u", "env": ",:{[" * (MAX_VALUES // 2)}}).encode()
    assert count_values(raw) == 6  # the keys request, uid, env and their values
    assert parse_review(raw)["request"]["uid"] == "u"


def test_a_pod_spec_naming_more_images_than_the_bound_is_refused():
    def pod(n: int) -> dict:
        return {"spec": {"containers": [{"name": f"c{i}", "image": f"r/i{i}:1"} for i in range(n)]}}

    assert len(image_sites(pod(MAX_IMAGE_SITES), "Pod")) == MAX_IMAGE_SITES
    with pytest.raises(BadRequest, match=f"/spec names more than {MAX_IMAGE_SITES} images"):
        image_sites(pod(MAX_IMAGE_SITES + 1), "Pod")


def test_kept_plans_stay_within_their_byte_budget():
    plans = PlanCache(lambda: 0, max_entries=4096, max_bytes=64 * 1024)
    big = [{"id": i, "entry": "x" * 1000} for i in range(8)]  # about 8 KB each
    for i in range(100):
        plans.put(plans.key(f"ns-{i}", [(0, f"r/i{i}:1")]), big)
    assert 0 < plans.bytes <= 64 * 1024
    assert len(plans) < 10
    newest = plans.key("ns-99", [(0, "r/i99:1")])
    assert plans.get(newest) == big  # the least recently used went first
    huge = [{"entry": "x" * (64 * 1024)}]
    plans.put(plans.key("huge", [(0, "r/h:1")]), huge)
    assert plans.get(plans.key("huge", [(0, "r/h:1")])) is None  # larger than the budget: not kept
    assert plans.get(newest) == big
    assert PlanCache(lambda: 0)._plans._max_bytes == MAX_BYTES


def test_the_lru_counts_replaced_and_expired_entries_out():
    now = [0.0]
    cache: TTLCache[str, str] = TTLCache(10, 100, lambda: now[0], max_bytes=10, size=lambda k, v: len(v))
    cache.put("a", "12345")
    cache.put("a", "1234")  # replaced, not counted twice
    assert cache.bytes == 4
    cache.put("b", "123456")
    assert cache.bytes == 10 and len(cache) == 2
    cache.put("c", "1")
    assert cache.get("a") == (False, None) and cache.bytes == 7
    now[0] = 20
    assert cache.get("b") == (False, None) and cache.bytes == 1
    cache.clear()
    assert cache.bytes == 0


def test_caches_of_objects_a_request_names_have_byte_budgets():
    """Secrets, service accounts and owners are read by names a request chooses; each cache is
    bounded in bytes too (a Secret may hold 1 MiB: 1024 of them would be a gigabyte)."""
    from app.kube.owners import OwnerVerifier
    from app.kube.store import MAX_BYTES as STORE_BYTES
    from app.kube.store import KubeObjectStore

    store = KubeObjectStore(api=None)  # type: ignore[arg-type]  # the API is not reached here
    owners = OwnerVerifier(api=None)  # type: ignore[arg-type]
    assert store._cache._max_bytes == STORE_BYTES == 16 * 1024 * 1024
    assert owners._cache._max_bytes == 16 * 1024 * 1024
    secret = {"metadata": {"name": "s"}, "data": {"x": "A" * (1024 * 1024)}}
    for i in range(40):
        store._cache.put(("secrets", "ns", f"s{i}"), secret)
    assert store._cache.bytes <= STORE_BYTES and len(store._cache) == 15
