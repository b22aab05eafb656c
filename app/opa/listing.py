"""OPA's answer to GET /v1/policies, read without decoding again what was decoded before.

The answer holds every module's source *and its whole AST* ({"result": [{"id", "raw", "ast"}, ...]}):
with the Rego library it is hundreds of KiB, and decoding it took the webhook worker ~9 ms per
look, which the repair (every few seconds) and the readiness probe (twice a second) both take.
Only the id, the source and the package of each module are compared.

OPA answers the same set with the same bytes for each module, in a varying order (its store is a
Go map). So each answer read is cut into its modules' byte strings (each decoded on its own), and
the next answer is first matched against them: when it is exactly `{"result":[` + known modules'
bytes joined by `,` + `]}`, it decodes to exactly those modules (a complete JSON value decodes the
same wherever it stands in an array), and nothing is decoded. Any other answer (a module planted,
replaced or gone, OPA restarted, another layout) is decoded in the same look, module by module (or
whole when it cannot be cut so, as before): nothing is skipped, only work whose result is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app import jsonio

_HEAD = b'{"result":['
_TAIL = b"]}"
_ITEM = re.compile(rb'\{"id":"((?:[^"\\]|\\.)*)"')  # a module's start, and its id as encoded
_NEXT = b',{"id":"'
# Cutting an answer tries each `,{"id":"` as the end of a module; an AST can hold that text too
# (a METADATA annotation's object), each such try decodes the module's start again: past this
# many the answer is only decoded whole (as before), never cut, so no module costs more than that.
MAX_FALSE_ENDS = 8


@dataclass(frozen=True)
class ListedModule:
    """What Ostiary reads of one listed module: its id, source and package path (its terms'
    values, "data" first)."""

    id: str
    raw: str
    package: tuple[str, ...]


def _module(item: object) -> ListedModule:
    """One module of the listing; raises KeyError, TypeError or AttributeError when it is no module."""
    if not isinstance(item, dict):
        raise TypeError("a listed module is not an object")
    path = item["ast"]["package"]["path"]
    return ListedModule(
        str(item["id"]), str(item.get("raw", "")), tuple(str(part.get("value")) for part in path)
    )


def decode(content: bytes) -> list[ListedModule]:
    """Every module of a whole answer (raises ValueError, KeyError, TypeError or AttributeError
    when the answer is no listing)."""
    body = jsonio.loads(content)
    return [_module(item) for item in body.get("result") or []]


def _end(content: bytes) -> int:
    """Where the listing's closing `]}` starts (trailing whitespace aside), or -1."""
    end = len(content)
    while end and content[end - 1] in b" \t\r\n":
        end -= 1
    return end - len(_TAIL) if content.startswith(_TAIL, end - len(_TAIL)) else -1


def _cut_one(content: bytes, start: int, end: int) -> tuple[bytes, ListedModule] | None:
    """The module whose bytes start at `start`: the shortest slice up to a `,{"id":"` (or the
    listing's end) that is a whole JSON value. A JSON value has one end, so the first slice that
    decodes is the module's."""
    ends = 0
    stop = content.find(_NEXT, start, end)
    while ends <= MAX_FALSE_ENDS:
        stop = end if stop < 0 else stop
        piece = content[start:stop]
        try:
            return piece, _module(jsonio.loads(piece))
        except ValueError:
            if stop == end:
                return None
        stop = content.find(_NEXT, stop + 1, end)
        ends += 1
    return None


def cut(content: bytes) -> dict[bytes, tuple[bytes, ListedModule]] | None:
    """Each module of an answer: its id as encoded -> (its bytes, the module), when the answer is
    exactly `{"result":[` + modules joined by `,` + `]}`; None when it cannot be cut so."""
    end = _end(content)
    if not content.startswith(_HEAD) or end < len(_HEAD):
        return None
    found: dict[bytes, tuple[bytes, ListedModule]] = {}
    pos = len(_HEAD)
    while pos < end:
        if found:
            if content[pos : pos + 1] != b",":
                return None
            pos += 1
        start = _ITEM.match(content, pos)
        one = _cut_one(content, pos, end) if start is not None else None
        if start is None or one is None or start.group(1) in found:
            return None
        found[start.group(1)] = one
        pos += len(one[0])
    return found


def match(content: bytes, known: dict[bytes, tuple[bytes, ListedModule]]) -> list[ListedModule] | None:
    """The modules of an answer made only of `known` modules' bytes (in any order); None for any
    other answer. Nothing is decoded: each module's bytes are compared whole."""
    end = _end(content)
    if not known or not content.startswith(_HEAD) or end < len(_HEAD):
        return None
    modules: list[ListedModule] = []
    pos = len(_HEAD)
    while pos < end:
        if modules:
            if content[pos : pos + 1] != b",":
                return None
            pos += 1
        start = _ITEM.match(content, pos)
        hit = known.get(start.group(1)) if start is not None else None
        if hit is None or not content.startswith(hit[0], pos):
            return None
        modules.append(hit[1])
        pos += len(hit[0])
    return modules if pos == end else None


class ModuleListing:
    """Reads GET /v1/policies answers; remembers the modules of the last one it cut (one answer's
    worth of bytes) so that an answer made of the same modules is not decoded again."""

    def __init__(self) -> None:
        self._known: dict[bytes, tuple[bytes, ListedModule]] = {}

    def read(self, content: bytes) -> list[ListedModule]:
        """The modules of an answer; raises ValueError, KeyError, TypeError or AttributeError when
        it is no listing. Safe from several threads (the memory is replaced whole)."""
        known = self._known
        same = match(content, known)
        if same is not None:
            return same
        pieces = cut(content)
        if pieces is None:
            self._known = {}
            return decode(content)
        self._known = pieces
        return [module for _, module in pieces.values()]
