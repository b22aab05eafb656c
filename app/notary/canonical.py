"""Canonical JSON exactly as docker/go's canonical/json writes it (the bytes Notary signs).

- object keys sorted bytewise (by their UTF-8 encoding), no whitespace at all;
- strings: only backslash and double quote are escaped; every other character, control characters
  and non-ASCII included, is written as its raw UTF-8 bytes;
- integers in plain decimal; true, false, null as usual;
- floats are refused (TUF metadata has none, and their text form is ambiguous).

`load_json` is the matching strict parser for documents received from a server: it refuses floats,
NaN/Infinity and duplicate object keys, so the verifier never sees a document two parsers would read
differently.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, NoReturn


def canonical_json(obj: Any) -> bytes:
    """Encode `obj` (dict/list/str/int/bool/None) as docker/go canonical JSON bytes.

    Raises ValueError for floats and unencodable strings, TypeError for non-string keys and other types.
    """
    out = bytearray()
    _encode(obj, out)
    return bytes(out)


def _encode_string(text: str, out: bytearray) -> None:
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from "\ud800" in the input
        raise ValueError("string is not valid Unicode") from exc
    out += b'"'
    out += raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
    out += b'"'


def _encode(obj: Any, out: bytearray) -> None:
    if obj is None or isinstance(obj, bool):
        out += _CONSTANTS[obj]
    elif isinstance(obj, int):
        out += str(int(obj)).encode("ascii")
    elif isinstance(obj, str):
        _encode_string(obj, out)
    elif isinstance(obj, (list, tuple)):
        _encode_array(obj, out)
    elif isinstance(obj, dict):
        _encode_object(obj, out)
    elif isinstance(obj, float):
        raise ValueError("floats are not allowed in canonical JSON")
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as canonical JSON")


_CONSTANTS: dict[bool | None, bytes] = {None: b"null", True: b"true", False: b"false"}


def _encode_array(items: Sequence[Any], out: bytearray) -> None:
    out += b"["
    for index, item in enumerate(items):
        if index:
            out += b","
        _encode(item, out)
    out += b"]"


def _encode_object(obj: dict[str, Any], out: bytearray) -> None:
    for key in obj:
        if not isinstance(key, str):
            raise TypeError(f"object key {key!r} is not a string")
    out += b"{"
    for index, key in enumerate(sorted(obj, key=lambda k: k.encode("utf-8", "surrogatepass"))):
        if index:
            out += b","
        _encode_string(key, out)
        out += b":"
        _encode(obj[key], out)
    out += b"}"


def _no_float(text: str) -> NoReturn:
    raise ValueError(f"number {text} is not an integer")


def _no_constant(text: str) -> NoReturn:
    raise ValueError(f"{text} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def load_json(data: bytes) -> Any:
    """Parse JSON bytes strictly (UTF-8, no floats, no NaN, no duplicate keys).

    Raises ValueError (UnicodeDecodeError and json.JSONDecodeError are ValueErrors) on anything else,
    TypeError when `data` is not bytes.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError("metadata must be bytes")
    text = bytes(data).decode("utf-8")
    return json.loads(
        text, parse_float=_no_float, parse_constant=_no_constant, object_pairs_hook=_no_duplicates
    )
