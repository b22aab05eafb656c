"""The one reader of YAML and JSON files Ostiary is given: policies, manifests, test files, reviews,
root pins, captured trust data.

Every file a person (or a tenant, through a ConfigMap) hands Ostiary is read here, under bounds
that keep a hostile file from costing more than a normal one:

- size: at most MAX_BYTES per file (read no further);
- depth: at most MAX_DEPTH nested mappings/sequences (no RecursionError traceback);
- aliases: what `*alias` references add when expanded (a "billion laughs" bomb of a few hundred
  bytes expands to billions of nodes once dumped as JSON) is at most MAX_ALIAS_NODES per file, and
  an alias to the node that contains it (a cycle) is refused.

and everything read is plain JSON data, the same from every command: a YAML date or time
(`created: 2024-01-01`) stays the string written; keys that are numbers, booleans or null become
their text (`1: x` -> "1"), as kubectl's YAML-to-JSON conversion does; .nan/.inf, and the
explicit types !!binary, !!set, !!omap and !!pairs, which have no JSON form, are refused with the
file and line.

Every refusal is a DocumentError naming the file (and line and column when known); `limit` says it
was one of the bounds above, not a mistake in the syntax.

    for doc in load_all(read_text(path), str(path)):
        ...
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

import yaml
from yaml.constructor import ConstructorError
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from app.errors import InputError

MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 100
MAX_ALIAS_NODES = 100_000


class DocumentError(InputError):
    """A file that cannot be read as JSON data; str() is "<source>[:line[:column]]: <summary>"."""

    def __init__(self, source: str, summary: str, line: int = 0, column: int = 0, *, limit: bool = False):
        where = source + (f":{line}" if line else "") + (f":{column}" if line and column else "")
        super().__init__(f"{where}: {summary}")
        self.source = source
        self.summary = summary
        self.line = line
        self.column = column
        self.limit = limit


class _Limit(yaml.YAMLError):
    def __init__(self, message: str, mark: Mark | None):
        super().__init__(message)
        self.message = message
        self.mark = mark


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts depth and alias expansion, and whose constructor makes
    only JSON values (see the module docstring)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._weights: dict[int, int] = {}  # id(node) -> nodes it stands for once expanded
        self._aliased = 0

    # ---- composing: depth and aliases ----------------------------------------------------------

    def compose_document(self) -> Node | None:
        node = super().compose_document()
        self._weights = {}
        return node

    def compose_node(self, parent: Node | None, index: object) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            node = super().compose_node(parent, index)
            weight = self._weights.get(id(node))
            if weight is None:
                raise _Limit(f"the alias *{event.anchor} refers to a node that contains it", event.start_mark)
            self._aliased += weight
            if self._aliased > MAX_ALIAS_NODES:
                raise _Limit(
                    f"aliases expand to more than {MAX_ALIAS_NODES} nodes (an alias bomb?)", event.start_mark
                )
            return node
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Limit(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if isinstance(node, SequenceNode):
            weight = 1 + sum(self._weights[id(child)] for child in node.value)
        elif isinstance(node, MappingNode):
            weight = 1 + sum(self._weights[id(k)] + self._weights[id(v)] for k, v in node.value)
        else:
            weight = 1
        self._weights[id(node)] = weight
        return node

    # ---- constructing: JSON values only --------------------------------------------------------

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:  # type: ignore[override]
        self.flatten_mapping(node)
        mapping: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            mapping[_json_key(key, key_node)] = self.construct_object(value_node, deep=deep)  # type: ignore[no-untyped-call]
        return mapping

    def _float(self, node: ScalarNode) -> float:
        value = self.construct_yaml_float(node)
        if math.isnan(value) or math.isinf(value):
            raise ConstructorError(None, None, f"{node.value} is not a JSON number", node.start_mark)
        return value

    def _as_written(self, node: ScalarNode) -> str:
        return str(self.construct_scalar(node))

    def _no_json_form(self, node: Node) -> NoReturn:
        name = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise ConstructorError(None, None, f"the YAML type {name} has no JSON form", node.start_mark)


_BoundedLoader.add_constructor("tag:yaml.org,2002:float", _BoundedLoader._float)
_BoundedLoader.add_constructor("tag:yaml.org,2002:timestamp", _BoundedLoader._as_written)
for _tag in ("binary", "set", "omap", "pairs"):
    _BoundedLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _BoundedLoader._no_json_form)


def _json_key(key: object, node: Node) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)
    raise ConstructorError(
        None, None, "a mapping key must be a string, number, boolean or null", node.start_mark
    )


def _yaml_error(source: str, exc: Exception) -> DocumentError:
    if isinstance(exc, _Limit):
        mark = exc.mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        return DocumentError(source, f"refused: {exc.message}", line, column, limit=True)
    if isinstance(exc, RecursionError):
        return DocumentError(source, f"refused: nested deeper than {MAX_DEPTH} levels", limit=True)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or str(exc).splitlines()[0]
        if mark is not None:
            return DocumentError(source, f"not valid YAML: {problem}", mark.line + 1, mark.column + 1)
        return DocumentError(source, f"not valid YAML: {problem}")
    if isinstance(exc, yaml.YAMLError):
        return DocumentError(source, f"not valid YAML: {str(exc).splitlines()[0] if str(exc) else exc!r}")
    return DocumentError(source, f"not data Ostiary can read: {exc}")  # e.g. an integer of 5000 digits


def read_text(path: str | Path, limit: int = MAX_BYTES) -> str:
    """The text of a file, refused (DocumentError) when it cannot be read, is not UTF-8 or is
    larger than `limit` bytes; never reads more than `limit` + 1 bytes."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise DocumentError(str(path), f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > limit:
        raise DocumentError(str(path), f"refused: larger than {limit} bytes", limit=True)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(str(path), f"not UTF-8 text (byte {exc.start})") from None


def read_stream(stream: IO[str], source: str, limit: int = MAX_BYTES) -> str:
    """The text of an open stream (stdin), refused when it is larger than `limit` characters."""
    text = stream.read(limit + 1)
    if len(text) > limit:
        raise DocumentError(source, f"refused: larger than {limit} bytes", limit=True)
    return text


def _check_size(text: str, source: str) -> None:
    if len(text) > MAX_BYTES:
        raise DocumentError(source, f"refused: larger than {MAX_BYTES} bytes", limit=True)


def compose_all(text: str, source: str) -> list[Node]:
    """The node trees (with line marks) of every document, under the same bounds as load_all."""
    _check_size(text, source)
    loader = _BoundedLoader(text)
    try:
        nodes = []
        while loader.check_node():
            nodes.append(loader.get_node())
        return nodes
    except (yaml.YAMLError, RecursionError) as exc:
        raise _yaml_error(source, exc) from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def iter_documents(text: str, source: str) -> Iterator[tuple[Node | None, Any]]:
    """(node, data) for every document of a YAML stream; empty documents give (None, None)."""
    _check_size(text, source)
    loader = _BoundedLoader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            yield node, (None if node is None else loader.construct_document(node))  # type: ignore[no-untyped-call]
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        raise _yaml_error(source, exc) from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def load_all(text: str, source: str) -> list[Any]:
    """The data of every document of a YAML stream (JSON is YAML too), None for empty ones."""
    return [doc for _, doc in iter_documents(text, source)]


def load(text: str, source: str) -> Any:
    """The one document of a YAML stream (None when empty); more than one is refused."""
    documents = load_all(text, source)
    if len(documents) > 1:
        raise DocumentError(source, "expected one YAML document, found more")
    return documents[0] if documents else None


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _depth_exceeded(root: object) -> bool:
    level = [root] if isinstance(root, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            return True
        below: list[dict | list] = []
        for node in level:
            values = node.values() if isinstance(node, dict) else node
            below.extend(v for v in values if isinstance(v, (dict, list)))
        level = below
    return False


def load_json(text: str | bytes, source: str) -> Any:
    """One JSON document under the same bounds (size, depth; NaN and Infinity refused)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DocumentError(source, f"not UTF-8 text (byte {exc.start})") from None
    _check_size(text, source)
    try:
        doc = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:
        doc = None
        deep = True
    except json.JSONDecodeError as exc:
        raise DocumentError(source, f"not valid JSON: {exc.msg}", exc.lineno, exc.colno) from None
    except ValueError as exc:  # NaN, an integer of 5000 digits
        raise DocumentError(source, f"not JSON Ostiary can read: {exc}") from None
    else:
        deep = _depth_exceeded(doc)
    if deep:
        raise DocumentError(source, f"refused: nested deeper than {MAX_DEPTH} levels", limit=True)
    return doc


def load_json_file(path: str | Path, limit: int = MAX_BYTES) -> Any:
    """read_text + load_json."""
    return load_json(read_text(path, limit), str(path))


def load_file(path: str | Path) -> list[Any]:
    """Every document of a policy-like file: one for .json (read as JSON), all of a YAML stream."""
    text = read_text(path)
    if str(path).endswith(".json"):
        return [load_json(text, str(path))]
    return load_all(text, str(path))
