"""Strict decoding of an AdmissionReview body: the one place a request's bytes become a document.

What is refused, and why: text that is not UTF-8 JSON; NaN and Infinity (not JSON); a key that
appears twice in one object (a duplicated key can show one parser a different value than
another); nesting deeper than MAX_DEPTH and more than MAX_VALUES values and keys (every later
walk, dump and OPA call stays bounded). Each refusal is a BadRequest saying what and where.

Two paths, one answer. The fast path decodes with orjson and checks the result: the depth, and
that the keys and string values in the document are as many as the strings in the text (a
duplicated key loses a key, so the counts differ). Whatever the fast path cannot vouch for (any
orjson error, a long digit run that orjson would read as a float, a count that differs, a document
too deep) is decoded again by the standard library with refusing hooks, which names the place. So
the document is always the one the standard library builds, and every refusal is the strict path's.
"""

from __future__ import annotations

import json
import re
from typing import NoReturn

import orjson

from app.errors import InputError

# Deeper than any object of a kind Ostiary checks (a CronJob's pod spec affinity terms sit ~15
# levels down, managedFields ~20); the limit keeps every later walk, dump and OPA call bounded.
MAX_DEPTH = 100
# Values and keys in one AdmissionReview at most: a Deployment of 100 containers with 50 variables
# each, in an UPDATE that carries it twice with its managedFields, has about 100,000. Decoding costs
# about 100 bytes and half a microsecond per value, and 7 MiB of `[{},{},…]` are 4.8 million of
# them: such a body is refused before anything is built.
MAX_VALUES = 200_000
_STRING = re.compile(rb'"[^"]*"')  # a JSON string once its escaped backslashes and quotes are gone
# orjson reads an integer beyond 64 bits as a float, the standard library as an int: a document
# with a float this large (possibly such an integer) is left to the standard library.
_INTEGER_LIMIT = 9e18  # below 2**63: every integer orjson turned into a float is at least that


class BadRequest(InputError):
    """The AdmissionReview itself is malformed; the message names the field."""


class _Pairs(dict):
    """A JSON object that had a key more than once (kept, so the walk can name where)."""

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    marked = _Pairs(obj)
    marked.duplicates = [k for k, _ in pairs if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
    return marked


def _refuse_constant(name: str) -> NoReturn:
    raise BadRequest(f"{name} is not JSON")


def _pointer(path: list[str]) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path) if path else "(top level)"


def _path_to(root: object, target: object) -> list[str]:
    """The keys leading from root to target (by identity); only run to word an error."""
    stack: list[tuple[object, list[str]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        stack.extend((v, [*path, str(k)]) for k, v in items if isinstance(v, (dict, list)))
    return []


def _check_tree(root: object) -> None:
    """Refuse duplicated keys and nesting deeper than MAX_DEPTH, naming the place.

    Level by level, so it is iterative and costs one step per object or array; the path is only
    spelled out (a second walk) when there is something to refuse.
    """
    level = [root] if isinstance(root, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            where = _pointer(_path_to(root, level[0])[:8])
            raise BadRequest(f"nested deeper than {MAX_DEPTH} levels at {where}/…")
        below: list = []
        for node in level:
            if isinstance(node, dict):
                if type(node) is _Pairs:
                    raise BadRequest(
                        f"key {node.duplicates[0]!r} appears more than once in the object at "
                        f"{_pointer(_path_to(root, node))}; a duplicated key can show one parser a "
                        "different value than another, so it is refused"
                    )
                below.extend([v for v in node.values() if isinstance(v, (dict, list))])
            else:
                below.extend([v for v in node if isinstance(v, (dict, list))])
        level = below


def _unescaped(raw: bytes) -> bytes:
    """The text without escaped backslashes and quotes: every `"` left delimits a string."""
    return raw.replace(b"\\\\", b"").replace(b'\\"', b"")


def count_values(raw: bytes, limit: int = MAX_VALUES) -> int:
    """The number of values and keys a JSON text holds, counted on the bytes at C speed (each
    follows a `[`, `{`, `,` or `:` outside any string), as far as it matters against `limit`: over
    the limit only when the text holds more than `limit` (empty containers count one), never under
    it when it does. For text that is not JSON it still bounds what a decoder builds before it stops."""
    return _count_values(_unescaped(raw), limit)


def _count_values(bare: bytes, limit: int) -> int:
    strings = bare.count(b'"') // 2  # every string is a value or a key
    if strings > limit:
        return strings
    separators = (b"[", b"{", b",", b":")
    rough = sum(bare.count(c) for c in separators)  # separators inside strings too: at least the count
    if rough <= limit:
        return rough
    bare = _STRING.sub(b"", bare)  # at most `limit` strings to drop
    return sum(bare.count(c) for c in separators)


def _keys_and_strings(root: object) -> int:
    """Keys and string values in a decoded document; -1 when it is nested deeper than MAX_DEPTH or
    holds a float that may have been an integer beyond 64 bits."""
    count = 0
    level = [root]
    depth = 0
    while level:
        depth += 1  # `level` holds the values `depth` levels down (the root is 1)
        below: list = []
        for node in level:
            if isinstance(node, str):
                count += 1
            elif isinstance(node, dict):
                if depth > MAX_DEPTH:
                    return -1
                count += len(node)
                below += node.values()
            elif isinstance(node, list):
                if depth > MAX_DEPTH:
                    return -1
                below += node
            elif isinstance(node, float) and not -_INTEGER_LIMIT < node < _INTEGER_LIMIT:
                return -1
        level = below
    return count


def _fast(raw: bytes, strings: int) -> object:
    """The document orjson decodes from `raw` when it is provably the one the strict path would
    build and accept; None otherwise (the strict path decides, and words any refusal)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if body is None or _keys_and_strings(body) != strings:  # a duplicated key, too deep, too large
        return None
    return body


def _strict(raw: bytes) -> object:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        body = json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest(f"the JSON is nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise BadRequest(f"the body is not JSON Ostiary can read: {exc}") from None
    _check_tree(body)
    return body


def parse_review(raw: bytes) -> object:
    """Decode an AdmissionReview body strictly: UTF-8 JSON, no NaN/Infinity, no duplicated keys,
    at most MAX_DEPTH levels and MAX_VALUES values. Raises BadRequest saying what is wrong and where."""
    bare = _unescaped(raw)
    if _count_values(bare, MAX_VALUES) > MAX_VALUES:
        raise BadRequest(
            f"the JSON holds more than {MAX_VALUES} values and keys, more than any workload Ostiary checks"
        )
    body = _fast(raw, bare.count(b'"') // 2)
    return body if body is not None else _strict(raw)


def request_uid(body: object) -> str | None:
    """request.uid when the body has one (for answering a request Ostiary will deny anyway)."""
    request = body.get("request") if isinstance(body, dict) else None
    uid = request.get("uid") if isinstance(request, dict) else None
    return uid if isinstance(uid, str) and uid else None
