"""Read Kubernetes manifests as a platform team keeps them: files, directories, stdin, Helm output.

Why a module of its own: `ostiary apply` and `ostiary test` must refuse unreadable input with the file
and line a person can fix (exit 2), never guess. Multi-document YAML, JSON (one object, or an array),
`kind: List` (and `*List`) and the `# Source:` comments of `helm template` are all plain YAML here.

    for item in load_manifests(["deploy/", "-"], stdin=sys.stdin):
        print(item.origin, item.obj["kind"])
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml
from yaml.nodes import Node

from app.errors import InputError
from app.workloads import BY_KIND
from app.yamlio import DocumentError, iter_documents, load_json, read_stream, read_text

# The fields of a core/v1 Container (and EphemeralContainer): a key outside them is a typo the API
# server refuses (kubectl's strict field validation), e.g. `imag:`, never an image to skip.
CONTAINER_FIELDS = frozenset(
    {
        "name", "image", "command", "args", "workingDir", "ports", "envFrom", "env", "resources",
        "resizePolicy", "restartPolicy", "restartPolicyRules", "volumeMounts", "volumeDevices",
        "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "terminationMessagePath",
        "terminationMessagePolicy", "imagePullPolicy", "securityContext", "stdin", "stdinOnce", "tty",
        "targetContainerName",
    }
)  # fmt: skip
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
HELM_SOURCE = re.compile(r"^# Source: (\S.*?)\s*$")

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(InputError):
    """A manifest could not be read; the message names the file (and line when known)."""


@dataclass(frozen=True)
class Manifest:
    source: str  # file path, or "-" for stdin
    line: int  # 1-based line where the document (or its List) starts; 0 when unknown
    index: int  # document index in the file; items of a List share it
    obj: dict
    template: str = ""  # the `# Source:` comment `helm template` wrote above the document

    @property
    def origin(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{self.template} ({where})" if self.template else where


def _child(node: Node | None, key: str) -> Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value in node.value:
            if getattr(key_node, "value", None) == key:
                return value
    return None


def _duplicate_keys(node: Node, path: str, found: list[tuple[int, int, str]]) -> None:
    """Every key written twice in one mapping, anywhere in the document (YAML keeps the last)."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value in node.value:
            key = str(getattr(key_node, "value", ""))
            if key in seen:
                mark = key_node.start_mark
                found.append(
                    (mark.line + 1, mark.column + 1, f"{path or 'the document'} has the key `{key}` twice")
                )
            seen.add(key)
            _duplicate_keys(value, f"{path}.{key}" if path else key, found)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _duplicate_keys(item, f"{path}[{index}]", found)


def _unknown_container_fields(node: Node, found: list[tuple[int, int, str]]) -> None:
    """Keys of a workload's containers that no Container has, named as written, with a suggestion."""
    kind = getattr(_child(node, "kind"), "value", None)
    workload = BY_KIND.get(kind) if isinstance(kind, str) else None
    if workload is None:
        return
    spec: Node | None = node
    for key in workload.pod_spec_path:
        spec = _child(spec, key)
    for list_name in CONTAINER_LISTS:
        containers = _child(spec, list_name)
        if not isinstance(containers, yaml.SequenceNode):
            continue
        for index, container in enumerate(containers.value):
            if not isinstance(container, yaml.MappingNode):
                continue
            for key_node, _ in container.value:
                key = str(getattr(key_node, "value", ""))
                if key in CONTAINER_FIELDS:
                    continue
                close = difflib.get_close_matches(key, sorted(CONTAINER_FIELDS), n=1)
                hint = f" (did you mean `{close[0]}`?)" if close else ""
                where = ".".join((*workload.pod_spec_path, list_name)) + f"[{index}]"
                mark = key_node.start_mark
                found.append((mark.line + 1, mark.column + 1, f"{where}: unknown field `{key}`{hint}"))


def _helm_sources(text: str) -> list[tuple[int, str]]:
    """(line, template) of every `# Source: chart/templates/x.yaml` comment of `helm template` output."""
    return [
        (number, match.group(1))
        for number, line in enumerate(text.splitlines(), 1)
        if (match := HELM_SOURCE.match(line))
    ]


def _item_lines(node: Node) -> list[int]:
    """Start lines of the entries of a List document's `items` (for messages naming the line)."""
    if not isinstance(node, yaml.MappingNode):
        return []
    for key, value in node.value:
        if getattr(key, "value", None) == "items" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def _yaml_documents(text: str, source: str) -> Iterator[tuple[int, object, list[int]]]:
    """(line, data, item lines) per document; every duplicate key and unknown container field of
    every document is refused at once (ManifestError naming each file:line:column)."""
    found: list[tuple[int, int, str]] = []
    documents: list[tuple[int, object, list[int]]] = []
    try:
        for node, doc in iter_documents(text, source):
            if node is not None:
                _duplicate_keys(node, "", found)
                _unknown_container_fields(node, found)
                documents.append((node.start_mark.line + 1, doc, _item_lines(node)))
    except DocumentError as exc:
        raise ManifestError(
            "\n".join([*(f"{source}:{ln}:{col}: {why}" for ln, col, why in found), str(exc)])
        ) from None
    if found:
        raise ManifestError("\n".join(f"{source}:{ln}:{col}: {why}" for ln, col, why in sorted(found)))
    yield from documents


def _json_documents(text: str, source: str) -> Iterator[tuple[int, object, list[int]]]:
    try:
        doc = load_json(text, source)
    except DocumentError as exc:
        raise ManifestError(str(exc)) from None
    if isinstance(doc, list):
        for item in doc:
            yield 0, item, []
    else:
        yield 0, doc, []


def parse_text(text: str, source: str, *, as_json: bool | None = None) -> list[Manifest]:
    """Every object in `text`: documents, List items; None documents skipped; non-mappings refused."""
    if as_json is None:  # stdin: JSON when it parses as JSON, else YAML (which reports the line)
        try:
            load_json(text, source)
            as_json = True
        except DocumentError as exc:
            as_json = exc.limit  # too deep as JSON is too deep as YAML: say so once
    documents = _json_documents(text, source) if as_json else _yaml_documents(text, source)
    templates = [] if as_json else _helm_sources(text)
    result: list[Manifest] = []
    previous = 0
    for index, (line, doc, item_lines) in enumerate(documents):
        template = next((t for at, t in reversed(templates) if previous < at < line), "")
        previous = line
        if doc is None:
            continue
        where = f"{source}:{line}" if line else source
        if not isinstance(doc, dict):
            raise ManifestError(
                f"{where}: document {index} is a {type(doc).__name__}, not a Kubernetes object"
            )
        objects = _expand(doc, where)
        lines = item_lines if len(item_lines) == len(objects) else [line] * len(objects)
        result.extend(
            Manifest(source, at, index, obj, template) for obj, at in zip(objects, lines, strict=False)
        )
    return result


def _expand(doc: dict, where: str) -> list[dict]:
    kind = doc.get("kind")
    if not isinstance(kind, str) or not kind:
        raise ManifestError(f"{where}: the object has no `kind`")
    if kind == "List" or (kind.endswith("List") and "items" in doc):
        items = doc.get("items") or []
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise ManifestError(f"{where}: {kind}.items must be a list of objects")
        expanded: list[dict] = []
        for item in items:
            expanded.extend(_expand(item, where))
        return expanded
    return [doc]


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(
            p
            for p in path.rglob("*")
            if p.is_file()
            and p.suffix in MANIFEST_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    return [path]


def load_manifests(paths: Iterable[str], stdin: IO[str] | None = None) -> list[Manifest]:
    """The objects of every path, in order (directories recursively, sorted; `-` reads stdin once)."""
    result: list[Manifest] = []
    for text in paths:
        if text == "-":
            if stdin is None:
                raise ManifestError("-: no standard input")
            try:
                result.extend(parse_text(read_stream(stdin, "-"), "-"))
            except DocumentError as exc:
                raise ManifestError(str(exc)) from None
            continue
        path = Path(text)
        if not path.exists():
            raise ManifestError(f"{text}: no such file or directory")
        files = _files(path)
        if path.is_dir() and not files:
            raise ManifestError(f"{text}: no .yaml, .yml or .json files in this directory")
        for file in files:
            try:
                content = read_text(file)
            except DocumentError as exc:
                raise ManifestError(str(exc)) from None
            result.extend(parse_text(content, str(file), as_json=file.suffix == ".json"))
    return result
