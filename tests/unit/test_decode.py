"""Strict decoding (app/admission/decode.py): the fast path (orjson, then a check of the result)
must give exactly the document the standard library's strict path gives, and refuse exactly what it
refuses, with the strict path's words. Attacks are the ones a fast decoder would let through:
duplicated keys (orjson keeps the last), integers past 64 bits (orjson makes them floats), depth."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.admission import decode
from app.admission.decode import MAX_DEPTH, BadRequest, parse_review

TEXT = st.text(alphabet=st.sampled_from(list('ab"\\,:{}[]\n\u00e9\U0001f600')), max_size=8)
NUMBERS = st.integers(min_value=-(10**25), max_value=10**25) | st.floats(
    allow_nan=False, allow_infinity=False
)
JSON = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=30,
)


def strict(raw: bytes) -> object:
    """What the standard library's strict path answers: the document, or the refusal's text."""
    try:
        return decode._strict(raw)
    except BadRequest as exc:
        return f"refused: {exc}"


def decoded(raw: bytes) -> object:
    try:
        return parse_review(raw)
    except BadRequest as exc:
        return f"refused: {exc}"


def same(a: object, b: object) -> bool:
    """Equal, and equal in type all the way down (1 == 1.0 in Python; not for a policy)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) and a == b


@settings(max_examples=500, deadline=None)
@given(JSON, st.booleans())
@example({"a": 2**64}, True)
@example([-(10**19)], True)
@example({"x": '\\"', "y": ['"']}, False)
def test_the_fast_path_builds_what_the_strict_path_builds(value, ascii_only):
    raw = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert same(decoded(raw), strict(raw)), raw


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(TEXT, JSON), min_size=2, max_size=5), st.integers(0, 3))
def test_a_duplicated_key_anywhere_is_refused_as_the_strict_path_refuses_it(pairs, depth):
    """orjson keeps the last of two equal keys; the counts must catch it at any depth."""
    key, value = pairs[0]
    members = [*pairs, (key, value)]  # the first key again
    text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in members) + "}"
    for _ in range(depth):
        text = f'{{"spec":[{text}]}}'
    raw = text.encode()
    answer = decoded(raw)
    assert isinstance(answer, str) and "appears more than once" in answer, raw
    assert answer == strict(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"request": {"uid": "u", "uid": "v"}}',
        b'{"a": {"b": 1, "c": "x", "b": "y"}}',
        b'[{"a": "\\"", "a": 1}]',
        b'{"a": [NaN]}',
        b'{"a": Infinity}',
        b'{"a": 1e400}',
        b'{"big": 123456789012345678901234567890}',
        b'{"neg": -9999999999999999999}',
        b'{"s": "\\ud800"}',
        b'{"a": "\xff"}',
        b"\xef\xbb\xbf{}",
        b'{"a": ' + b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1) + b"}",
        b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,
        b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
        b"{" + b'"a":{' * MAX_DEPTH + b"}" * MAX_DEPTH + b"}",
        b'{"a":' * (MAX_DEPTH - 1) + b"[]" + b"}" * (MAX_DEPTH - 1),
        b'{"f": 9.3e18, "g": -1e300, "h": 1e18}',
        b'"just a string"',
        b"null",
        b"",
        b'{"a": 1,}',
    ],
)
def test_each_case_a_fast_decoder_differs_on_answers_as_the_strict_path(raw):
    assert same(decoded(raw), strict(raw)), raw


def test_large_integers_stay_integers():
    body = parse_review(b'{"n": 123456789012345678901234567890, "m": -9999999999999999999}')
    assert body == {"n": 123456789012345678901234567890, "m": -9999999999999999999}
    assert all(type(v) is int for v in body.values())
