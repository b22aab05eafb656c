"""Compact JSON in and out of Ostiary's hot path (the OPA query, the answer, the decision log).

orjson encodes and decodes these documents several times faster than the standard library, and
an admission's OPA input (the object, the images, their trust facts) is encoded on every request.
What orjson refuses to encode (an integer beyond 64 bits, which a review may carry in an
annotation-free corner of a pod spec; a key that is not a string) falls back to the standard
library, so nothing that encoded before fails now. Reviews themselves are decoded strictly by
app/admission/decode.py (orjson only where its result is provably the strict decoding's).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson


def dumps(value: Any, default: Callable[[Any], Any] | None = None, *, sort_keys: bool = False) -> bytes:
    """`value` as compact UTF-8 JSON (as json.dumps with separators=(",", ":"), then encoded);
    `default` turns what JSON cannot hold into something it can (e.g. str), as json.dumps's does;
    `sort_keys` as json.dumps's (orjson sorts by UTF-8 bytes: the same order for ASCII keys)."""
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:
        return json.dumps(
            value, separators=(",", ":"), ensure_ascii=False, default=default, sort_keys=sort_keys
        ).encode()


def loads(raw: bytes | str) -> Any:
    """A JSON document from a trusted peer (OPA's answers). Raises ValueError when it is not JSON."""
    return orjson.loads(raw)
