"""The directory policy source: YAML/JSON files with policies and the Secrets/ServiceAccounts they name.

Every document of every file is validated and translated before anything reaches OPA. An error
that belongs to one ImagePolicy alone (its schema, its translation, a bound of
app/policies/bounds.py) is tagged with that policy (PolicyError.tenant): `ostiary serve` refuses
that policy only and puts a refusal in its place, so its namespace is denied, naming it, while the
other namespaces and the cluster policies stay in force (translate_policy_set). Any other error (a
file that does not parse, a bad ClusterImagePolicy, Secret or ServiceAccount) stops the whole load
with its file and document index, and the previous set stays in force.
`collect_policy_set` and `collect_custom_rego` return every error (for `ostiary check`); the load
functions raise the first of them, so both accept exactly the same files.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from app.opa.process import OpaNotFound, find_opa
from app.policies.bounds import DEFAULT_BOUNDS, Bounds, bounded, over_bounds
from app.policies.kinds import POLICY_KIND_NAMES
from app.policies.model import PolicyError, PolicyResource, PolicySet, RegoModule
from app.policies.schema import parse_policy_document, policy_document_errors, valid_policy_identity
from app.policies.translate import module_id, refused_module, translate
from app.yamlio import DocumentError, load_file

POLICY_SUFFIXES = (".yaml", ".yml", ".json")
_CUSTOM_NAME = re.compile(r"[a-z_][a-z0-9_]*")


def files_under(root: Path, pattern: str = "*") -> list[Path]:
    """The files under `root` matching `pattern`, sorted, skipping folders whose name starts with "..".

    A mounted ConfigMap or Secret keeps each file twice: `name` (a link) and the real
    `..<timestamp>/name` behind `..data`; reading both would load every policy and module twice
    (a policy "also defined at" itself, a Rego rule in conflict with its copy).
    """
    return sorted(
        p
        for p in root.rglob(pattern)
        if p.is_file() and not any(part.startswith("..") for part in p.relative_to(root).parts[:-1])
    )


class SourceError(PolicyError):
    """A file that cannot be parsed at all; `line` (1-based, 0 when unknown) is where the parser
    stopped, `summary` the reason on one line."""

    def __init__(self, origin: str, message: str, path: Path, line: int, summary: str):
        super().__init__(origin, "", message)
        self.path = str(path)
        self.line = line
        self.summary = summary
        self.limit = False  # refused by a bound of app.yamlio (size, depth, aliases), not a syntax mistake


def _documents(path: Path) -> list:
    try:
        return load_file(path)
    except DocumentError as exc:
        column = f" (column {exc.column})" if exc.column else ""
        error = SourceError(str(path), str(exc), path, exc.line, f"{exc.summary}{column}")
        error.limit = exc.limit
        raise error from None


def _check_core(doc: dict, origin: str, kind: str) -> tuple[str, str]:
    if doc.get("apiVersion") != "v1":
        raise PolicyError(origin, "apiVersion", f"a {kind} must have apiVersion v1")
    meta = doc.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("name"), str) or not meta["name"]:
        raise PolicyError(origin, "metadata.name", f"a {kind} needs a name")
    namespace = meta.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise PolicyError(origin, "metadata.namespace", "must be a string")
    return meta["name"], namespace or ""


def load_policy_set(directory: str | Path, system_namespace: str) -> PolicySet:
    """Read every policy file under `directory` (recursively, sorted); raise PolicyError on the first bad one."""
    result, errors = collect_policy_set(directory, system_namespace)
    if errors:
        raise errors[0]
    return result


def collect_policy_set(directory: str | Path, system_namespace: str) -> tuple[PolicySet, list[PolicyError]]:
    """Every policy file under `directory`, and every error in them (file, document, field), in
    file and document order. The set is usable only when the list is empty."""
    root = Path(directory)
    if not root.is_dir():
        return PolicySet(), [PolicyError(str(root), "", "policy directory does not exist")]
    result = PolicySet()
    errors: list[PolicyError] = []
    seen: dict[tuple, str] = {}
    for path in (p for p in files_under(root) if p.suffix in POLICY_SUFFIXES):
        try:
            documents = _documents(path)
        except PolicyError as exc:
            errors.append(exc)
            continue
        for index, doc in enumerate(documents):
            try:
                errors.extend(_add_document(result, seen, doc, f"{path}#{index}", system_namespace))
            except PolicyError as exc:
                errors.append(exc)
    return result, errors


def _add_document(
    result: PolicySet, seen: dict[tuple, str], doc: object, origin: str, system_namespace: str
) -> list[PolicyError]:
    """Add one document to `result`; return its validation errors (or raise the one that stops it)."""
    if doc is None:
        return []
    if not isinstance(doc, dict):
        raise PolicyError(origin, "", "a document must be a mapping")
    kind = doc.get("kind")
    if kind in POLICY_KIND_NAMES:
        problems = policy_document_errors(doc, origin)
        if problems:
            tenant = valid_policy_identity(doc) if kind == "ImagePolicy" else None
            for problem in problems:
                problem.tenant = tenant
            return problems
        resource = parse_policy_document(doc, origin)
        if resource.key in seen:
            raise PolicyError(
                origin,
                "metadata.name",
                f"{resource.kind} {resource.name} is also defined at {seen[resource.key]}",
            )
        seen[resource.key] = origin
        result.policies.append(resource)
    elif kind == "Secret":
        name, ns = _check_core(doc, origin, kind)
        result.secrets[(ns or system_namespace, name)] = doc
    elif kind == "ServiceAccount":
        name, ns = _check_core(doc, origin, kind)
        result.service_accounts[(ns or system_namespace, name)] = doc
    else:
        raise PolicyError(
            origin,
            "kind",
            f"{kind!r} is not ImagePolicy, ClusterImagePolicy, Secret or ServiceAccount",
        )
    return []


def translate_all(policies: list[PolicyResource], bounds: Bounds = DEFAULT_BOUNDS) -> list[RegoModule]:
    """Every policy's module; raise the first error (a bound included) of translate_policy_set."""
    modules, errors = translate_policy_set(policies, bounds)
    if errors:
        raise errors[0]
    return modules


def translate_policy_set(
    policies: list[PolicyResource], bounds: Bounds = DEFAULT_BOUNDS
) -> tuple[list[RegoModule], list[PolicyError]]:
    """The module of each policy that translates within the bounds, and an error for each one that
    does not (an ImagePolicy's tagged with its namespace and name, PolicyError.tenant)."""
    ids = [module_id(p) for p in policies]
    if len(set(ids)) != len(ids):
        return [], [PolicyError("policies", "metadata.name", "two policies translate to the same module id")]
    translate_bounded = bounded(translate, bounds)
    translated: list[tuple[PolicyResource, RegoModule]] = []
    errors: list[PolicyError] = []
    for policy in policies:
        try:
            translated.append((policy, translate_bounded(policy)))
        except PolicyError as exc:
            exc.tenant = _tenant(policy)
            errors.append(exc)
    over = over_bounds([(module.id, module) for _, module in translated], bounds)
    modules = []
    for policy, module in translated:
        if module.id in over:
            error = PolicyError(policy.origin, "spec", over[module.id])
            error.tenant = _tenant(policy)
            errors.append(error)
        else:
            modules.append(module)
    return modules, errors


def _tenant(policy: PolicyResource) -> tuple[str, str] | None:
    return (policy.namespace, policy.name) if policy.kind == "ImagePolicy" and policy.namespace else None


def with_refusals(
    modules: list[RegoModule], errors: list[PolicyError]
) -> tuple[list[RegoModule], dict[str, str]]:
    """The modules to push when the only errors are tenants' (PolicyError.tenant): each refused
    ImagePolicy becomes a refusal module (translate.refused_module) that denies every image of its
    namespace naming it. Returns the modules and "ImagePolicy ns/name" -> why it is refused.
    Raises the first error that is not a tenant's."""
    for error in errors:
        if error.tenant is None:
            raise error
    reasons: dict[tuple[str, str], list[str]] = {}
    origins: dict[tuple[str, str], str] = {}
    for error in errors:
        assert error.tenant is not None
        reasons.setdefault(error.tenant, []).append(
            f"{error.field}: {error.message}" if error.field else error.message
        )
        origins.setdefault(error.tenant, error.origin)
    refusals = [
        refused_module(ns, name, origins[(ns, name)], "; ".join(why)) for (ns, name), why in reasons.items()
    ]
    refused_ids = {m.id for m in refusals}
    kept = [m for m in modules if m.id not in refused_ids]
    return kept + refusals, {
        f"ImagePolicy {ns}/{name} ({origins[(ns, name)]})": "; ".join(why)
        for (ns, name), why in sorted(reasons.items())
    }


def _parse_error(path: Path, output: str) -> PolicyError:
    """OPA's parse errors as a person reads them: the first at its row and column, every one listed
    with OPA's message (`opa parse --format json` answers {"errors": [{message, code, location}]})."""
    try:
        errors = [e for e in json.loads(output).get("errors") or [] if isinstance(e, dict)]
    except (ValueError, AttributeError):
        errors = []
    if not errors:
        text = output.strip().replace(str(path), path.name)[:500]
        return PolicyError(str(path), "", f"OPA cannot parse it: {text or 'no reason given'}")

    def location(error: dict) -> dict:
        found = error.get("location")
        return found if isinstance(found, dict) else {}

    found = []
    for error in errors[:10]:
        row, col = location(error).get("row"), location(error).get("col")
        at = f"{row}:{col}: " if isinstance(row, int) and isinstance(col, int) else ""
        found.append(f"{at}{error.get('message', 'parse error')}")
    row, col = location(errors[0]).get("row"), location(errors[0]).get("col")
    more = f" (and {len(errors) - 1} more: {'; '.join(found[1:])})" if len(errors) > 1 else ""
    message = (
        f"Rego syntax error: {found[0].split(': ', 1)[-1] if found[0][:1].isdigit() else found[0]}{more}"
    )
    return PolicyError(
        str(path),
        "",
        message,
        line=row if isinstance(row, int) else 0,
        column=col if isinstance(col, int) else 0,
    )


def custom_package(path: Path) -> str:
    """The package of a custom module as OPA's own parser reads it (`opa parse`), never a regular
    expression on the text: a byte-order mark, comments, line breaks or a `package` line inside a
    raw string cannot make Ostiary and OPA disagree. It must be exactly `ostiary.custom.<name>`:
    a custom module can add deny/warn rules of its own, never define or extend Ostiary's packages."""
    try:
        done = subprocess.run(
            [find_opa(), "parse", "--format", "json", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OpaNotFound, OSError, subprocess.TimeoutExpired) as exc:
        raise PolicyError(str(path), "", f"could not run OPA's parser on it: {exc}") from None
    if done.returncode != 0:
        raise _parse_error(path, done.stderr or done.stdout)
    try:
        terms = json.loads(done.stdout)["package"]["path"]
        parts = [(t["type"], t["value"]) for t in terms]
    except (ValueError, KeyError, TypeError):
        raise PolicyError(str(path), "package", "OPA's parser found no package in it") from None
    shown = ".".join(str(v) for _, v in parts[1:])
    if (
        len(parts) != 4
        or parts[0] != ("var", "data")
        or parts[1] != ("string", "ostiary")
        or parts[2] != ("string", "custom")
        or parts[3][0] != "string"
        or not isinstance(parts[3][1], str)
        or not _CUSTOM_NAME.fullmatch(parts[3][1])
    ):
        raise PolicyError(
            str(path),
            "package",
            f"custom Rego must declare exactly `package ostiary.custom.<name>` (lowercase name); "
            f"OPA reads this file's package as {shown!r}, and it may not extend Ostiary's own packages",
        )
    return f"ostiary.custom.{parts[3][1]}"


def load_custom_rego(directory: str | Path) -> list[RegoModule]:
    """Custom rules: every *.rego (tests aside) must be `package ostiary.custom.<name>`, as OPA reads it."""
    modules, errors = collect_custom_rego(directory)
    if errors:
        raise errors[0]
    return modules


def collect_custom_rego(directory: str | Path) -> tuple[list[RegoModule], list[PolicyError]]:
    """The custom modules of `directory` and every file refused (the same checks as load_custom_rego)."""
    root = Path(directory)
    if not root.is_dir():
        return [], [PolicyError(str(root), "", "custom Rego directory does not exist")]
    modules: list[RegoModule] = []
    errors: list[PolicyError] = []
    for path in files_under(root, "*.rego"):
        if path.name.endswith("_test.rego"):
            continue
        try:
            package = custom_package(path)
        except PolicyError as exc:
            errors.append(exc)
            continue
        source = path.read_text(encoding="utf-8-sig")
        rel = path.relative_to(root).with_suffix("").as_posix()
        modules.append(
            RegoModule(id=f"ostiary/custom/{rel}", package=package, source=source, origin=str(path))
        )
    return modules, errors


class DirectoryStore:
    """ObjectStore over the Secrets and ServiceAccounts of a loaded PolicySet."""

    def __init__(self, policy_set: PolicySet):
        self._secrets = dict(policy_set.secrets)
        self._service_accounts = dict(policy_set.service_accounts)

    def get_secret(self, namespace: str, name: str) -> dict | None:
        return self._secrets.get((namespace, name))

    def get_service_account(self, namespace: str, name: str) -> dict | None:
        return self._service_accounts.get((namespace, name))
