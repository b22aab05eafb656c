"""`ostiary check`: find the mistakes in a policy directory and custom Rego before the cluster does.

Why a module of its own: the loaders (app/policies/directory.py) stop a load at the first error, as
the webhook must; a person fixing files wants every problem at once, each with the file and line to
edit. So this collects all of them, in these passes, each sound (it reports only real problems; it
may miss some, said below):

- **load**: YAML/JSON syntax, unknown kinds, every schema violation of every document (unknown
  fields one by one), duplicate names, bad repository patterns — the loader's own checks, collected.
- **top-level fields** the loader ignores (`spc:` for `spec:` leaves a policy without entries).
- **policies**: none at all (a warning: the webhook then denies every image), a policy without
  entries (a warning), and **unreachable entries**: entry A can never be selected when, in the same
  scope (the ClusterImagePolicies, or the ImagePolicies of one namespace; docs/policies.md
  "Matching"), another entry B matches every image A matches and B's sort key
  (app/policies/translate.py `entry_rank`) is lower for every such image. This module decides that
  exactly for one B at a time: B covers A when B's host, path and tag globs include A's (a `*` of A
  may only be absorbed by a `*` of B — exact inclusion for globs whose only wildcard is `*`), and
  B's key is lower when (not exact, -specificity, requirement rank, kind, namespace, name, index)
  is lower; these do not depend on the image, because a B that covers A and is exact is A's own
  pattern. An entry covered only by several others together is not reported.
- **custom Rego**: the package rule of the loader; compile errors (`opa check`, every error OPA
  reports, with file and row); `deny`/`warn` heads that are not sets (from OPA's AST, `opa parse`:
  complete rules, objects, functions) or whose literal messages are not strings; and, in a real
  OPA holding the library, the rules and the policies, `deny`/`warn` evaluated on a few synthetic
  admissions: a value that is not a set, an element that is not a string, or an evaluation error.
  The AST pass covers every rule whatever the input; the evaluation pass sees only what the
  synthetic inputs reach.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from app.admission.input import input_config, opa_input, read_request
from app.errors import InputError
from app.notary.servers import TrustServerAllowList
from app.offline.engine import Engine, EngineError
from app.opa.process import find_opa
from app.policies.bounds import DEFAULT_BOUNDS, Bounds, check_policy, over_bounds
from app.policies.directory import POLICY_SUFFIXES, SourceError, collect_custom_rego, collect_policy_set
from app.policies.kinds import POLICY_KIND_NAMES as POLICY_KINDS
from app.policies.model import PolicyError, PolicyResource, RegoModule
from app.policies.sync import library_modules
from app.policies.translate import (
    Pattern,
    cluster_trust_servers,
    entry_trust_servers,
    has_requirements,
    parse_pattern,
    rank_of,
    translate,
)
from app.runtime import ServeConfig
from app.yamlio import DocumentError, compose_all, load_file, read_text

TOP_LEVEL_FIELDS = ("apiVersion", "kind", "metadata", "spec", "status")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning"
    code: str
    file: str
    line: int
    message: str
    column: int = 0  # 1-based when known (OPA's parse and compile errors give it)

    @property
    def where(self) -> str:
        if not self.line:
            return self.file
        return f"{self.file}:{self.line}:{self.column}" if self.column else f"{self.file}:{self.line}"

    def __str__(self) -> str:
        return f"{self.where}: {self.severity}: {self.message} [{self.code}]"


@dataclass
class CheckReport:
    policy_dir: str
    rego_dir: str | None
    findings: list[Finding]
    policies: int = 0
    secrets: int = 0
    service_accounts: int = 0
    custom_modules: int = 0
    compiled: bool = False  # the library, the custom rules and the policies compiled in a real OPA

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "warning"]

    def failed(self, strict: bool) -> bool:
        return bool(self.errors or (strict and self.warnings))

    def as_dict(self, strict: bool) -> dict:
        return {
            "ok": not self.failed(strict),
            "strict": strict,
            "summary": {
                "policies": self.policies,
                "secrets": self.secrets,
                "serviceAccounts": self.service_accounts,
                "customModules": self.custom_modules,
                "compiledInOpa": self.compiled,
                "errors": len(self.errors),
                "warnings": len(self.warnings),
            },
            "findings": [asdict(f) for f in self.findings],
        }


class InputRefused(InputError):
    """A policy file refused by a bound of app.yamlio (size, depth, aliases): no report, exit 2."""


# ---- where a field is: file:line from the YAML node tree -------------------------------------

_FIELD_TOKEN = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


class Locator:
    """Lines of documents and fields, from the YAML composer's marks (JSON is read as YAML)."""

    def __init__(self) -> None:
        self._files: dict[str, list[Any]] = {}

    def _nodes(self, path: str) -> list[Any]:
        if path not in self._files:
            try:
                self._files[path] = compose_all(read_text(path), path)
            except DocumentError:
                self._files[path] = []
        return self._files[path]

    def line(self, path: str, index: int, field: str = "") -> int:
        """The line of `field` (e.g. spec.repositories[0].policy.trust) in document `index`; the
        deepest part of it that exists, else the document's first line; 0 when unknown."""
        nodes = self._nodes(path)
        if index >= len(nodes) or nodes[index] is None:
            return 1 if Path(path).is_file() else 0
        node = nodes[index]
        line = node.start_mark.line + 1
        for name, number in _FIELD_TOKEN.findall(field):
            if number and isinstance(node, yaml.SequenceNode) and int(number) < len(node.value):
                node = node.value[int(number)]
                line = node.start_mark.line + 1
            elif name and isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if getattr(key, "value", None) == name:
                        line, node = key.start_mark.line + 1, value
                        break
                else:
                    break
            else:
                break
        return line


def _split_origin(origin: str) -> tuple[str, int]:
    path, sep, index = origin.rpartition("#")
    if sep and index.isdigit():
        return path, int(index)
    return origin, 0


def _load_finding(error: PolicyError, locator: Locator) -> Finding:
    if isinstance(error, SourceError):
        return Finding("error", "syntax", error.path, error.line, error.summary)
    path, index = _split_origin(error.origin)
    message = f"{error.field}: {error.message}" if error.field else error.message
    code = (
        "unknown-field"
        if error.message.startswith("unknown field")
        else "over-bound"
        if "over the bound" in error.message
        else "invalid"
    )
    return Finding("error", code, path, locator.line(path, index, error.field), message)


# ---- policies ----------------------------------------------------------------------------------


def _top_level_findings(policy_dir: str, policies: list[PolicyResource], locator: Locator) -> list[Finding]:
    """Top-level fields of policy documents the loader does not read (it reads apiVersion, kind,
    metadata and spec; status is what `kubectl get -o yaml` adds), in every policy document,
    valid or not."""
    entries = {p.origin: len(p.spec.get("repositories") or []) for p in policies}
    found = []
    for path in sorted(p for p in Path(policy_dir).rglob("*") if p.is_file() and p.suffix in POLICY_SUFFIXES):
        try:
            documents = load_file(path)
        except DocumentError:
            continue  # reported by the load pass
        for index, doc in enumerate(documents):
            if not isinstance(doc, dict) or doc.get("kind") not in POLICY_KINDS:
                continue
            count = entries.get(f"{path}#{index}")
            effect = (
                f"; it is ignored, so the policy has {count} entries"
                if count is not None
                else "; it is ignored"
            )
            for key in doc:
                if key not in TOP_LEVEL_FIELDS:
                    found.append(
                        Finding(
                            "error",
                            "unknown-field",
                            str(path),
                            locator.line(str(path), index, str(key)),
                            f"{key}: unknown field {key!r} of {doc.get('kind')} "
                            f"(allowed: {', '.join(TOP_LEVEL_FIELDS)}){effect}",
                        )
                    )
    return found


@dataclass(frozen=True)
class Entry:
    policy: PolicyResource
    index: int
    written: str
    pattern: Pattern
    requirements: bool

    @property
    def exact(self) -> bool:
        return self.pattern.exact is not None

    @functools.cached_property
    def sort_key(self) -> tuple:
        """translate.py's rank of this entry (the order in which the decision picks entries; see
        translate.entry_rank)."""
        return tuple(rank_of(self.policy, self.index, self.pattern, self.requirements))

    def describe(self) -> str:
        return f"{self.policy.kind} {self.policy.name} spec.repositories[{self.index}] {self.written!r}"


@functools.cache
def _glob_regex(glob: str) -> re.Pattern:
    return re.compile("".join(".*" if ch == "*" else re.escape(ch) for ch in glob), re.DOTALL)


def _glob_covers(outer: str, inner: str) -> bool:
    """Every string `inner` matches, `outer` matches (globs whose only wildcard is `*`): exactly
    when `outer` matches `inner` with each `*` of inner taken as a character only a `*` absorbs."""
    if "*" not in outer:
        return outer == inner
    return _glob_regex(outer).fullmatch(inner.replace("*", "\x00")) is not None


def covers(b: Pattern, a: Pattern) -> bool:
    """B matches every image reference A matches (host, path and tag are matched separately)."""
    if not (_glob_covers(b.host, a.host) and _glob_covers(b.path, a.path)):
        return False
    if b.tag is None:
        return True
    if a.tag is None:  # A also matches digest-only references, which carry no tag
        return False
    return _glob_covers(b.tag, a.tag)


def _why_preferred(b: Entry, a: Entry) -> str:
    if b.pattern.normalized == a.pattern.normalized:
        reason = "the same pattern" + (
            f" (both are {b.pattern.normalized})" if b.written != a.written else ""
        )
    else:
        reason = f"a pattern covering every image of {a.pattern.normalized}"
    if b.pattern.specificity > a.pattern.specificity:
        return f"{reason}, and more specific ({b.pattern.specificity} non-wildcard characters against {a.pattern.specificity})"
    if b.requirements and not a.requirements:
        return f"{reason}, as specific, and with requirements (an entry with trust beats one without)"
    if (b.policy.kind, b.policy.namespace, b.policy.name) != (
        a.policy.kind,
        a.policy.namespace,
        a.policy.name,
    ):
        return f"{reason}, as specific, and first by policy name ({b.policy.name!r} before {a.policy.name!r})"
    return f"{reason}, as specific, and earlier in the same policy"


def _entries(policies: list[PolicyResource], locator: Locator) -> tuple[list[Entry], list[Finding]]:
    entries, found = [], []
    for policy in policies:
        for index, item in enumerate(policy.spec.get("repositories") or []):
            try:
                pattern = parse_pattern(item["name"])
            except ValueError as exc:
                path, doc = _split_origin(policy.origin)
                field = f"spec.repositories[{index}].name"
                found.append(
                    Finding("error", "invalid", path, locator.line(path, doc, field), f"{field}: {exc}")
                )
                continue
            entries.append(Entry(policy, index, item["name"], pattern, has_requirements(item.get("policy"))))
    return entries, found


def _trust_server_findings(
    policies: list[PolicyResource], allowed: tuple[str, ...], locator: Locator
) -> list[Finding]:
    """Entries of namespace ImagePolicies naming a trust server `ostiary serve` would not contact
    (not a default, not named by a ClusterImagePolicy, not in --trust-server-allow): every image
    under such an entry is denied."""
    cluster = cluster_trust_servers(policies)
    allow = TrustServerAllowList(allowed, lambda: cluster)
    found = []
    for policy in policies:
        if policy.kind == "ClusterImagePolicy":
            continue
        for index, normal in entry_trust_servers(policy):
            if allow.permits(normal):
                continue
            path, doc = _split_origin(policy.origin)
            field = f"spec.repositories[{index}].policy.trust.trustServer"
            found.append(
                Finding(
                    "error",
                    "trust-server-not-allowed",
                    path,
                    locator.line(path, doc, field),
                    f"{field}: {normal} is not a trust server namespace policies may name (allowed: "
                    f"{allow.describe()}; add it with `ostiary serve --trust-server-allow`), so every "
                    "image under this entry is denied",
                )
            )
    return found


def shadowed(entries: list[Entry]) -> list[tuple[Entry, Entry]]:
    """(A, B) for each entry A that can never be selected because B, in A's scope, always wins."""
    scopes: dict[tuple, list[Entry]] = {}
    for entry in entries:
        scope = ("namespace", entry.policy.namespace) if entry.policy.kind == "ImagePolicy" else ("cluster",)
        scopes.setdefault(scope, []).append(entry)
    result = []
    for members in scopes.values():
        by_host: dict[str, list[Entry]] = {}
        for entry in members:
            by_host.setdefault(entry.pattern.host, []).append(entry)
        for a in members:
            key = a.sort_key
            winners = [
                b
                for host, group in by_host.items()
                if _glob_covers(host, a.pattern.host)
                for b in group
                if b is not a and b.sort_key < key and covers(b.pattern, a.pattern)
            ]
            if winners:
                result.append((a, min(winners, key=lambda b: b.sort_key)))
    return result


def _policy_findings(
    policies: list[PolicyResource], policy_dir: str, locator: Locator, complete: bool
) -> list[Finding]:
    found: list[Finding] = []
    if not policies and complete:
        found.append(
            Finding(
                "warning",
                "no-policies",
                policy_dir,
                0,
                "no ImagePolicy or ClusterImagePolicy was loaded: the webhook denies every image (no match means deny)",
            )
        )
    for policy in policies:
        if not policy.spec.get("repositories"):
            path, index = _split_origin(policy.origin)
            effect = (
                f"every image in namespace {policy.namespace} is denied (the namespace's ImagePolicies "
                "replace the ClusterImagePolicies)"
                if policy.kind == "ImagePolicy"
                else "it admits nothing"
            )
            found.append(
                Finding(
                    "warning",
                    "empty-policy",
                    path,
                    locator.line(path, index, "spec"),
                    f"{policy.kind} {policy.name} has no repository entries: {effect}",
                )
            )
    entries, invalid = _entries(policies, locator)
    found.extend(invalid)
    for a, b in shadowed(entries):
        path, index = _split_origin(a.policy.origin)
        b_path, b_index = _split_origin(b.policy.origin)
        b_where = f"{b_path}:{locator.line(b_path, b_index, f'spec.repositories[{b.index}].name')}"
        scope = f"namespace {a.policy.namespace}" if a.policy.kind == "ImagePolicy" else "the cluster"
        found.append(
            Finding(
                "error",
                "unreachable-entry",
                path,
                locator.line(path, index, f"spec.repositories[{a.index}].name"),
                f"{a.describe()} can never be selected in {scope}: {b.describe()} [{b_where}] matches every "
                f"image it matches and always wins ({_why_preferred(b, a)})",
            )
        )
    return found


def _bound_findings(policies: list[PolicyResource], bounds: Bounds, locator: Locator) -> list[Finding]:
    """The policies over a bound of app/policies/bounds.py, each with the bound, its measured size
    and the flag that sets it: exactly those `ostiary serve` would refuse."""
    found: list[Finding] = []
    translated: list[tuple[PolicyResource, RegoModule]] = []
    for policy in policies:
        try:
            module = translate(policy)
        except PolicyError:
            continue  # an invalid entry: reported by the entries pass
        try:
            check_policy(policy, module, bounds)
        except PolicyError as exc:
            found.append(_load_finding(exc, locator))
            continue
        translated.append((policy, module))
    over = over_bounds([(index, module) for index, (_, module) in enumerate(translated)], bounds)
    for index, reason in sorted(over.items()):
        policy = translated[index][0]
        found.append(_load_finding(PolicyError(policy.origin, "spec", reason), locator))
    return found


# ---- custom Rego -------------------------------------------------------------------------------


def _opa(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([find_opa(), *args], capture_output=True, text=True, timeout=timeout, check=False)


def _compile_findings(library: list[RegoModule], custom: list[RegoModule]) -> list[Finding]:
    """`opa check` over the library and the custom modules: every compile error OPA reports."""
    result = _opa("check", "--format", "json", "-m", "0", *[m.origin for m in library + custom])
    if result.returncode == 0:
        return []
    try:
        errors = json.loads(result.stdout or result.stderr).get("errors") or []
    except (ValueError, AttributeError):
        return [
            Finding(
                "error",
                "rego-compile",
                custom[0].origin if custom else "",
                0,
                f"opa check failed: {(result.stderr or result.stdout).strip()[:500]}",
            )
        ]
    by_origin = {m.origin: m.id for m in custom}
    found = []
    for err in errors:
        loc = err.get("location") or {}
        file = str(loc.get("file") or "")
        module = f" (module {by_origin[file]})" if file in by_origin else ""
        found.append(
            Finding(
                "error",
                "rego-compile",
                file,
                int(loc.get("row") or 0),
                f"{err.get('message', 'does not compile')}{module}",
                int(loc.get("col") or 0),
            )
        )
    return found


_CONSEQUENCE = {  # what rego/ostiary/main.rego does with a deny/warn that is not a set
    "deny": "whenever its value is not false, the webhook denies every request",
    "warn": "the webhook ignores it, so its warnings are never shown",
}

_NOT_SET_FORMS = {
    "args": "a function",
    "object": "an object (deny[key] := value)",
    "complete": "a single value (deny if ..., deny := ...)",
}


def _head_findings(module: RegoModule) -> tuple[list[Finding], dict[str, int]]:
    """deny/warn heads that cannot give a set of strings, from OPA's AST; and the first line of
    each of deny/warn (to point at from the evaluation pass)."""
    result = _opa("parse", "--format", "json", "--json-include", "locations,-comments", module.origin)
    if result.returncode != 0:
        return [], {}
    try:
        rules = json.loads(result.stdout).get("rules") or []
    except ValueError:
        return [], {}
    found: list = []
    first: dict = {}
    for rule in rules:
        head = rule.get("head") or {}
        ref = head.get("ref") or []
        name = (ref[0].get("value") if ref and isinstance(ref[0], dict) else None) or head.get("name")
        if name not in ("deny", "warn"):
            continue
        row = int(((head.get("location") or {}).get("row")) or 0)
        first.setdefault(name, row)
        key, value = head.get("key"), head.get("value")
        if head.get("args"):
            form = _NOT_SET_FORMS["args"]
        elif len(ref) > 1 or (key is not None and value is not None):
            form = _NOT_SET_FORMS["object"]
        elif key is None and (value or {}).get("type") not in ("set", "setcomprehension"):
            form = _NOT_SET_FORMS["complete"]
        else:
            form = None
        if form:
            found.append(
                Finding(
                    "error",
                    "deny-not-a-set",
                    module.origin,
                    row,
                    f"{name} in {module.package} is {form}; it must be a set of strings "
                    f"({name} contains msg if ...): {_CONSEQUENCE[name]}",
                )
            )
        elif key is not None and key.get("type") not in ("var", "string", "call", "ref"):
            found.append(
                Finding(
                    "error",
                    "message-not-a-string",
                    module.origin,
                    row,
                    f"{name} in {module.package} contains a {key.get('type')}, not a string message",
                )
            )
    return found, first


def synthetic_requests() -> list[tuple[str, dict]]:
    """A few admission requests unlike each other (kinds, operations, users, labels, valid and
    invalid references), as the API server sends them: (label, AdmissionReview request)."""
    cases = [
        (
            "Pod default/web by alice",
            "CREATE",
            "Pod",
            "default",
            {"username": "alice", "groups": ["developers", "system:authenticated"]},
            {"app": "web"},
            ["nginx:1.25", "busybox"],
        ),
        (
            "Deployment production/api by a service account (update)",
            "UPDATE",
            "Deployment",
            "production",
            {"username": "system:serviceaccount:ci:deployer", "groups": ["system:serviceaccounts"]},
            {"env": "production", "team": "payments"},
            ["registry.example.com/team/api:2.0@sha256:" + "a" * 64, "quay.io/org/tool@sha256:" + "b" * 64],
        ),
        (
            "CronJob kube-system/job without user or labels, invalid image",
            "CREATE",
            "CronJob",
            "kube-system",
            {},
            None,
            ["Not A Valid:Image"],
        ),
    ]
    requests = []
    for label, operation, kind, namespace, user, labels, images in cases:
        containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
        pod_spec = {"containers": containers}
        meta: dict = {"name": "synthetic", "namespace": namespace}
        if labels is not None:
            meta["labels"] = labels
        template = {"metadata": {"labels": labels or {}}, "spec": pod_spec}
        obj: dict = {"apiVersion": "v1", "kind": kind, "metadata": meta}
        if kind == "Pod":
            obj["spec"] = pod_spec
        elif kind == "CronJob":
            obj["apiVersion"] = "batch/v1"
            obj["spec"] = {"schedule": "@daily", "jobTemplate": {"spec": {"template": template}}}
        else:
            obj["apiVersion"] = "apps/v1"
            obj["spec"] = {"template": template}
        request = {
            "uid": "00000000-0000-4000-8000-00000000c0de",
            "operation": operation,
            "kind": {"group": "", "version": "v1", "kind": kind},
            "namespace": namespace,
            "name": "synthetic",
            "userInfo": user,
            "object": obj,
        }
        requests.append((label, request))
    return requests


def synthetic_inputs(system_namespace: str) -> list[tuple[str, dict]]:
    """The synthetic requests in the input document the webhook builds (app/admission/input.py),
    every other valid image with (unverified) trust facts."""
    config = input_config(system_namespace)
    inputs = []
    for label, request in synthetic_requests():
        document = opa_input(read_request(request), config)
        for i, image in enumerate(document["images"]):
            if image["ref"].get("valid") and i % 2 == 0:
                image["trust"] = {
                    "verified": False,
                    "error": "synthetic input: no trust data",
                    "error_role": None,
                    "server": "https://notary.example.com",
                    "gun": image["ref"]["name"],
                    "tag": image["ref"].get("tag"),
                    "digest": image["ref"].get("digest"),
                    "targets": {},
                    "roles": {},
                    "signers": [],
                }
        inputs.append((label, document))
    return inputs


_EVAL_QUERY = (
    "some name; rules := data.ostiary.custom[name]; "
    'd := object.get(rules, "deny", set()); w := object.get(rules, "warn", set()); '
    "deny_type := type_name(d); warn_type := type_name(w); "
    "deny_bad := [type_name(m) | is_set(d); some m in d; not is_string(m)]; "
    "warn_bad := [type_name(m) | is_set(w); some m in w; not is_string(m)]"
)


def _eval_findings(
    opa_url: str,
    token: str | None,
    modules: list[RegoModule],
    heads: dict[str, dict[str, int]],
    system_namespace: str,
) -> list[Finding]:
    """deny/warn of every custom package, evaluated in the real OPA on the synthetic inputs."""
    import requests

    origin_of: dict[str, RegoModule] = {}
    for module in modules:
        origin_of.setdefault(module.package.removeprefix("ostiary.custom."), module)
    found: dict[tuple, Finding] = {}
    for label, document in synthetic_inputs(system_namespace):
        resp = requests.post(
            f"{opa_url}/v1/query",
            json={"query": _EVAL_QUERY, "input": document},
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=30,
        )
        body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        if resp.status_code != 200:
            for err in body.get("errors") or [{"message": body.get("message") or resp.text[:300]}]:
                loc = err.get("location") or {}
                file = next(
                    (m.origin for m in modules if m.id == loc.get("file")), str(loc.get("file") or "")
                )
                key = ("eval", file, loc.get("row"), err.get("message"))
                found.setdefault(
                    key,
                    Finding(
                        "error",
                        "rego-eval-error",
                        file,
                        int(loc.get("row") or 0),
                        f"evaluating the custom rules failed on the synthetic input {label!r}: {err.get('message')} "
                        "(the webhook then denies every request: the policy engine failed)",
                    ),
                )
            continue
        for row in body.get("result") or []:
            name = row.get("name")
            owner = origin_of.get(name)
            file = owner.origin if owner else f"package ostiary.custom.{name}"
            for rule in ("deny", "warn"):
                line = heads.get(file, {}).get(rule, 0)
                kind = row.get(f"{rule}_type")
                if kind != "set":
                    found.setdefault(
                        (rule, file, "type"),
                        Finding(
                            "error",
                            "deny-not-a-set",
                            file,
                            line,
                            f"{rule} in ostiary.custom.{name} is a {kind} on the synthetic input {label!r}, not a set "
                            f"of strings ({rule} contains msg if ...): {_CONSEQUENCE[rule]}",
                        ),
                    )
                elif row.get(f"{rule}_bad"):
                    found.setdefault(
                        (rule, file, "elem"),
                        Finding(
                            "error",
                            "message-not-a-string",
                            file,
                            line,
                            f"{rule} in ostiary.custom.{name} holds a {', '.join(sorted(set(row[f'{rule}_bad'])))} "
                            f"on the synthetic input {label!r}; messages must be strings",
                        ),
                    )
    return list(found.values())


def _in_opa(
    policy_dir: str,
    rego_dir: str | None,
    custom: list[RegoModule],
    heads: dict[str, dict[str, int]],
    system_namespace: str,
    bounds: Bounds,
) -> tuple[bool, list[Finding]]:
    """Put everything in force as the webhook does (its own runtime: app/offline/engine.py), then
    evaluate the custom rules in that OPA."""
    config = ServeConfig(
        policy_dir=policy_dir,
        rego_dir=rego_dir,
        system_namespace=system_namespace,
        bounds=bounds,
        decision_log="off",
    )
    try:
        engine = Engine(config)
    except EngineError as exc:
        return False, [Finding("error", "opa-refused", "", 0, str(exc))]
    with engine:
        opa = engine.runtime.opa
        return True, _eval_findings(opa.url, opa.token, custom, heads, system_namespace) if custom else []


def _package_findings(rego_dir: str) -> tuple[list[RegoModule], list[Finding]]:
    modules, errors = collect_custom_rego(rego_dir)
    found = []
    for error in errors:
        if error.line:
            found.append(
                Finding("error", "rego-syntax", error.origin, error.line, error.message, error.column)
            )
            continue
        line = 0
        try:
            for number, text in enumerate(Path(error.origin).read_text().splitlines(), 1):
                if text.lstrip().startswith("package"):
                    line = number
                    break
        except OSError:
            pass
        found.append(Finding("error", "rego-package", error.origin, line, error.message))
    return modules, found


def run_check(
    policy_dir: str,
    rego_dir: str | None,
    system_namespace: str,
    trust_server_allow: tuple[str, ...] = (),
    bounds: Bounds = DEFAULT_BOUNDS,
) -> CheckReport:
    locator = Locator()
    policy_set, load_errors = collect_policy_set(policy_dir, system_namespace)
    for error in load_errors:  # a hostile file (bomb, depth, size) is an input refused, exit 2
        if isinstance(error, SourceError) and error.limit:
            raise InputRefused(str(error))
    report = CheckReport(
        policy_dir,
        rego_dir,
        [_load_finding(e, locator) for e in load_errors],
        policies=len(policy_set.policies),
        secrets=len(policy_set.secrets),
        service_accounts=len(policy_set.service_accounts),
    )
    report.findings.extend(_top_level_findings(policy_dir, policy_set.policies, locator))
    report.findings.extend(_trust_server_findings(policy_set.policies, trust_server_allow, locator))
    # Sound on a partial set too: entries added by fixing the refused documents can only add winners.
    report.findings.extend(
        _policy_findings(policy_set.policies, policy_dir, locator, complete=not load_errors)
    )
    report.findings.extend(_bound_findings(policy_set.policies, bounds, locator))
    library = library_modules()
    custom: list[RegoModule] = []
    heads: dict[str, dict[str, int]] = {}
    compile_ok = True
    if rego_dir:
        custom, found = _package_findings(rego_dir)
        report.custom_modules = len(custom)
        report.findings.extend(found)
        compile_errors = _compile_findings(library, custom)
        report.findings.extend(compile_errors)
        compile_ok = not compile_errors
        for module in custom:
            head_found, first = _head_findings(module)
            heads[module.origin] = first
            report.findings.extend(head_found)
    # Into OPA only what the webhook would load: nothing when a file is refused or does not compile.
    if (
        compile_ok
        and not load_errors
        and not any(f.code in ("invalid", "rego-package", "over-bound") for f in report.findings)
    ):
        report.compiled, found = _in_opa(policy_dir, rego_dir, custom, heads, system_namespace, bounds)
        report.findings.extend(found)
    unique: dict[tuple, Finding] = {}
    for finding in report.findings:  # the AST pass and the evaluation pass may see the same rule
        unique.setdefault((finding.code, finding.file, finding.line), finding)
    report.findings = sorted(unique.values(), key=lambda f: (f.file, f.line))
    return report


def render_text(report: CheckReport, strict: bool) -> tuple[str, str]:
    """(stdout, stderr): findings go to stderr like a compiler's, the verdict line to stdout."""
    diagnostics = "\n".join(str(f) for f in report.findings)
    counts = (
        f"{report.policies} policies, {report.secrets} secrets, {report.service_accounts} service accounts"
        + (f", {report.custom_modules} custom Rego modules" if report.rego_dir else "")
    )
    if report.failed(strict):
        verdict = (
            f"FAIL: {len(report.errors)} errors, {len(report.warnings)} warnings"
            + (" (warnings fail with --strict)" if strict and not report.errors else "")
            + f" ({counts})"
        )
    else:
        verdict = f"ok: {counts} compile in OPA" + (
            f"; {len(report.warnings)} warnings" if report.warnings else ""
        )
    return verdict, diagnostics


def render_json(report: CheckReport, strict: bool) -> str:
    return json.dumps(report.as_dict(strict), indent=2)
