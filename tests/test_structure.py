"""The structural measures of the package (issue 21, item 8), checked by tools in the test command.

- (a) No function-local import between app packages (`import app...`, `from app...`, a relative
  import) unless the line says why: `# cycle: <the cycle it breaks>` or `# lazy: <what it defers>`.
- (b) `Any` only at JSON boundaries. The rule, checked on every use of the name `Any` in app/
  (annotations, casts, aliases, string annotations alike):
    * `Any` as the value of a string-keyed mapping (`dict[str, Any]`, `Mapping[str, Any]`,
      `MutableMapping[str, Any]`) or the item of a list (`list[Any]`, `Sequence[Any]`) is a decoded
      JSON object or array: allowed anywhere;
    * any other `Any` (a bare `Any` parameter, return or field, `Mapping[Any, Any]`,
      `Callable[..., Any]`, ...) only in the functions of ANY_BOUNDARIES below: the codecs that turn
      bytes into a JSON value of unknown shape or back. A function that checks a value taken out of
      a decoded document takes `object` and narrows it with isinstance; other values get their type.
- (c) ruff's complexity bound (C901) at 10 over app/ (pyproject.toml keeps 15 for the rest).
- (d) is not checked here: `duplicates` (same-shape runs of six lines or more) is a workstation tool
  that scripts/setup.sh does not install and that, by its own description, lists places to look
  rather than verdicts (declarative tables and boilerplate need a reader). Run it when reviewing:
  `duplicates --repo app --min-lines 6 --most 200` (docs/internals.md, "Measures").
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"
BIN = Path(sys.executable).parent

MARKERS = ("# cycle:", "# lazy:")

# module (relative to the repository) -> the functions (qualified names) where a bare `Any` stands
# at a JSON boundary: decoding bytes into a JSON value of unknown shape, or encoding one.
ANY_BOUNDARIES: dict[str, frozenset[str]] = {
    "app/jsonio.py": frozenset({"dumps", "loads"}),
    "app/notary/canonical.py": frozenset({"canonical_json", "_encode", "load_json"}),
    # OPA's answers: a decoded JSON document whose shape the Rego query decides
    "app/opa/client.py": frozenset({"Response.json", "OpaClient.get_data", "OpaClient.query"}),
    "app/ports.py": frozenset({"PolicyQuery.query"}),
    # the reader of every YAML or JSON file Ostiary is given: a document's data, of the shape the file has
    "app/yamlio.py": frozenset({"iter_documents", "load", "load_json", "load_json_file"}),
}

JSON_OBJECTS = {"dict", "Mapping", "MutableMapping"}
JSON_ARRAYS = {"list", "Sequence"}


def modules() -> Iterator[tuple[str, ast.Module, list[str]]]:
    for path in sorted(APP.rglob("*.py")):
        text = path.read_text()
        yield path.relative_to(ROOT).as_posix(), ast.parse(text, str(path)), text.splitlines()


def _is_app_import(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "app"
    return any(alias.name.split(".")[0] == "app" for alias in node.names)


def local_app_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports of app modules made inside a function body (at any depth)."""
    seen: set[int] = set()
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(func):
                if (
                    isinstance(node, ast.Import | ast.ImportFrom)
                    and _is_app_import(node)
                    and id(node) not in seen
                ):
                    seen.add(id(node))
                    yield node


def unmarked_local_imports() -> list[str]:
    found = set()
    for name, tree, lines in modules():
        for node in local_app_imports(tree):
            span = lines[node.lineno - 1 : (node.end_lineno or node.lineno)]
            if not any(marker in line for line in span for marker in MARKERS):
                found.add(f"{name}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    return sorted(found)


def _named(node: ast.AST, names: set[str]) -> bool:
    if isinstance(node, ast.Name):
        return node.id in names
    return isinstance(node, ast.Attribute) and node.attr in names


def _is_any(node: ast.AST) -> bool:
    return _named(node, {"Any"})


def json_shaped(node: ast.AST, parent: ast.AST | None, grandparent: ast.AST | None) -> bool:
    """`Any` as the value of dict[str, Any] (Mapping, MutableMapping) or the item of list[Any]
    (Sequence): the type of a decoded JSON object's values or a JSON array's items."""
    if isinstance(parent, ast.Subscript):
        return parent.slice is node and _named(parent.value, JSON_ARRAYS)
    if isinstance(parent, ast.Tuple) and isinstance(grandparent, ast.Subscript):
        items = parent.elts
        return (
            _named(grandparent.value, JSON_OBJECTS)
            and len(items) == 2
            and items[1] is node
            and _named(items[0], {"str"})
        )
    return False


class AnyUses(ast.NodeVisitor):
    """Every `Any` not JSON-shaped, with the qualified name of the function or class around it."""

    def __init__(self) -> None:
        self.scope: list[str] = []
        self.parents: dict[int, ast.AST] = {}
        self.found: list[tuple[int, str, str]] = []  # (line, qualified name, annotation text)

    def generic_visit(self, node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            self.parents[id(child)] = node
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and self._in_annotation(node):
            self._string_annotation(node)
        parent = self.parents.get(id(node))
        if _is_any(node) and not json_shaped(node, parent, self.parents.get(id(parent))):
            self.found.append((getattr(node, "lineno", 0), ".".join(self.scope) or "<module>", ""))
        super().generic_visit(node)

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def _in_annotation(self, node: ast.AST) -> bool:
        child, parent = node, self.parents.get(id(node))
        while parent is not None:
            if isinstance(parent, ast.arg | ast.AnnAssign) and child is parent.annotation:
                return True
            if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef) and child is parent.returns:
                return True
            child, parent = parent, self.parents.get(id(parent))
        return False

    def _string_annotation(self, node: ast.Constant) -> None:
        try:
            inner = ast.parse(node.value, mode="eval")
        except SyntaxError:
            return
        nested = AnyUses()
        nested.visit(inner)
        where = ".".join(self.scope) or "<module>"
        self.found.extend((node.lineno, where, node.value) for _ in nested.found)


def any_outside_json_boundaries() -> list[str]:
    found = []
    for name, tree, lines in modules():
        uses = AnyUses()
        uses.visit(tree)
        allowed = ANY_BOUNDARIES.get(name, frozenset())
        for line, where, _ in uses.found:
            if where not in allowed:
                found.append(f"{name}:{line} in {where}: {lines[line - 1].strip()}")
    return found


def _listing(found: list[str], limit: int = 200) -> str:
    more = f"\n... and {len(found) - limit} more" if len(found) > limit else ""
    return "\n".join(found[:limit]) + more


def complexity_over_10(paths: Sequence[str] = ("app",)) -> str:
    """ruff's report of the functions over a complexity of 10 under `paths` ("" when there is none)."""
    done = subprocess.run(
        [str(BIN / "ruff"), "check", *paths, "--select", "C901", "--config", "lint.mccabe.max-complexity=10",
         "--output-format", "concise", "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    return "" if done.returncode == 0 else f"{done.stdout[-6000:]}{done.stderr[-2000:]}"


MAX_CONSTRUCTOR_PARAMETERS = 10


def constructor_parameters(tree: ast.Module) -> Iterator[tuple[int, str, int]]:
    """(line, class, parameters) of each class's __init__, not counting self."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.FunctionDef) and item.name == "__init__":
                args = item.args
                count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
                count += (args.vararg is not None) + (args.kwarg is not None)
                yield item.lineno, node.name, count - 1


def wide_constructors() -> list[str]:
    return [
        f"{name}:{line} {cls}.__init__ takes {count}"
        for name, tree, _ in modules()
        for line, cls, count in constructor_parameters(tree)
        if count > MAX_CONSTRUCTOR_PARAMETERS
    ]


def _under(found: list[str], paths: Sequence[str]) -> list[str]:
    return [line for line in found if line.startswith(tuple(paths))]


IMPORTS = (
    "function-local imports of app modules: move each to the top of the module, or, where it breaks an"
    " import cycle on purpose (or defers a heavy import for the CLI's start), say so on its line with"
    " `# cycle: <why>` (or `# lazy: <why>`)"
)
ANYS = (
    "uses of Any outside JSON shapes and the boundaries listed in ANY_BOUNDARIES (tests/test_structure.py):"
    " give the value its type, or `object` where a function checks a value taken out of a decoded document"
)
COMPLEXITY = (
    "functions over ruff's complexity bound of 10: split each into named steps (as app/notary/walker.py does)"
)

CONSTRUCTORS = (
    f"constructors over {MAX_CONSTRUCTOR_PARAMETERS} parameters: put the tunables in one frozen settings value"
    " (as app/notary/settings.py does for TrustService) and pass what the object works with beside it"
)


def test_no_function_local_import_between_app_packages_without_a_reason():
    found = unmarked_local_imports()
    assert not found, f"{len(found)} {IMPORTS}:\n{_listing(found)}"


def test_any_only_at_json_boundaries():
    found = any_outside_json_boundaries()
    assert not found, f"{len(found)} {ANYS}:\n{_listing(found)}"


def test_complexity_at_most_10_in_app():
    report = complexity_over_10()
    assert not report, f"{COMPLEXITY}:\n{report}"


def test_constructors_take_a_settings_value_not_a_long_list_of_tunables():
    found = wide_constructors()
    assert not found, f"{len(found)} {CONSTRUCTORS}:\n{_listing(found)}"


# The checkers themselves, on small sources: each would pass on anything if it were broken.


def _parse(source: str) -> ast.Module:
    return ast.parse(source)


def test_local_import_check_sees_app_and_relative_imports_in_functions_only():
    tree = _parse(
        "import app.images\n"
        "def f():\n"
        "    import json\n"
        "    from app import images\n"
        "    from .x import y\n"
        "    def g():\n"
        "        import app.lru\n"
    )
    assert [node.lineno for node in local_app_imports(tree)] == [4, 5, 7]


@pytest.mark.parametrize(
    ("annotation", "flagged"),
    [
        ("dict[str, Any]", False),
        ("Mapping[str, Any] | None", False),
        ("list[Mapping[str, Any]]", False),
        ("Sequence[Any]", False),
        ("Any", True),
        ("Mapping[Any, Any]", True),
        ("dict[int, Any]", True),
        ("Callable[..., Any]", True),
        ("tuple[str, Any]", True),
        ("typing.Any", True),
        ("'Any'", True),
        ("list['Any']", True),
    ],
)
def test_any_check_allows_json_shapes_only(annotation: str, flagged: bool):
    uses = AnyUses()
    uses.visit(_parse(f"def f(x: {annotation}) -> None: ..."))
    assert bool(uses.found) == flagged
    assert all(where == "f" for _, where, _ in uses.found)


def test_any_check_sees_aliases_and_casts_outside_annotations():
    uses = AnyUses()
    uses.visit(_parse("Json = Any\nclass C:\n    def m(self):\n        return cast(Any, 1)\n"))
    assert [(line, where) for line, where, _ in uses.found] == [(1, "<module>"), (4, "C.m")]


def test_constructor_check_counts_every_kind_of_parameter_but_self():
    tree = _parse(
        "class A:\n    def __init__(self, a, /, b, *c, d, e=1, **f): ...\n"
        "class B:\n    def __init__(self): ...\n    def other(self, a, b): ...\n"
    )
    assert sorted(constructor_parameters(tree)) == [(2, "A", 6), (4, "B", 0)]
