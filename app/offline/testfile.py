"""Declarative policy tests: YAML files saying which verdict each manifest must get, run for real.

Why: a platform team wants "this Deployment in team-a is allowed and pinned, that one is denied because
it uses latest" written next to the policies, checked in CI, without writing Rego or Python. Each case
is decided by app/offline/engine.py, i.e. by the webhook's own runtime in a real OPA with the policies,
the custom Rego, the pins, records and allow-list given, and (optionally) captured trust data verified
at a given time.

A test file is any `*_test.yaml` / `*_test.yml` (or a file named on the command line):

    apiVersion: ostiary.dev/v1
    kind: PolicyTest
    metadata: {name: official-images}
    spec:
      policies: policies          # directory, relative to this file
      rego: rego                  # optional: custom rules
      trustData: [trust]          # optional: captured trust data (ostiary trust capture)
      at: "2019-10-20T00:00:00Z"  # optional: verify the trust data as of then
      sigstoreTrustedRoot: trusted_root.json  # optional: keyless cosign's root (a private Sigstore)
      trustRecords: pins.json     # optional: the cluster's recorded roots (ostiary trust pins --json)
      rootPins: root-pins.yaml    # optional: as serve --root-pins
      trustServerAllow: [https://notary.example.com]   # optional: as serve --trust-server-allow
      systemNamespace: ostiary-system                   # optional: as serve --system-namespace
      cases:
        - name: signed alpine is pinned
          manifest: manifests/alpine.yaml      # or `object:` inline, or `review:` an AdmissionReview
          namespace: team-a                     # for objects naming none (default: default)
          user: {username: alice, groups: [dev]}
          expect:
            verdict: allowed                    # allowed | denied | not checked (or allowed: true/false)
            denials: ["uses the tag latest"]    # each must be part of some denial message
            warnings: []                        # each must be part of some warning ([] = none at all)
            patch: [{op: replace, path: /spec/containers/0/image, value: "..."}]
            images: [{pin: "sha256:..."}]       # per image, in order: allowed, pin, entry (subset)

`expect` applies to every object of the case; a list of `expect` mappings applies one per object.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from app.errors import InputError
from app.notary.inspect import parse_at_option
from app.notary.pins import load_default_root_pins
from app.notary.state import StateError, load_records
from app.offline.engine import DEFAULT_USER, Engine, EngineError, ObjectResult, offline_sources
from app.offline.manifests import Manifest, ManifestError, load_manifests
from app.offline.regotests import print_output
from app.opa.client import OpaError
from app.opa.process import find_opa
from app.paths import rego_library_dir, rego_testdata_dir
from app.policies.model import DEFAULT_SYSTEM_NAMESPACE, PolicyError
from app.runtime import OfflineSources, ServeConfig
from app.yamlio import DocumentError, compose_all, load, read_text

TEST_SUFFIXES = ("_test.yaml", "_test.yml")
SPEC_FIELDS = {
    "policies",
    "rego",
    "trustData",
    "at",
    "systemNamespace",
    "trustRecords",
    "rootPins",
    "trustServerAllow",
    "sigstoreTrustedRoot",
    "cases",
}
CASE_FIELDS = {"name", "manifest", "object", "review", "namespace", "user", "operation", "expect", "at"}
EXPECT_FIELDS = {"verdict", "allowed", "denials", "warnings", "message", "patch", "images"}
IMAGE_FIELDS = {"image", "allowed", "pin", "entry", "reasons", "trusted"}
VERDICTS = ("allowed", "denied", "not checked")


class TestFileError(InputError):
    """A test file cannot be used; the message names the file (and line when known)."""


@dataclass
class Case:
    name: str
    line: int
    raw: dict


@dataclass
class TestFile:
    path: Path
    name: str
    spec: dict
    cases: list[Case]

    def resolve(self, value: str) -> Path:
        return (self.path.parent / value).resolve()


@dataclass
class CaseResult:
    file: str
    test: str
    case: str
    line: int
    passed: bool
    failures: list[str] = field(default_factory=list)
    results: list[ObjectResult] = field(default_factory=list)

    @property
    def full_name(self) -> str:
        return f"{self.test}/{self.case}"


def _lines_of_cases(text: str) -> dict[int, int]:
    """Case index -> line in the file, for messages (first PolicyTest document's spec.cases)."""
    try:
        nodes = compose_all(text, "")
    except DocumentError:
        return {}
    node = nodes[0] if nodes else None

    def child(mapping: object, key: str) -> object:
        if isinstance(mapping, yaml.MappingNode):
            for k, v in mapping.value:
                if getattr(k, "value", None) == key:
                    return v
        return None

    cases = child(child(node, "spec"), "cases")
    if not isinstance(cases, yaml.SequenceNode):
        return {}
    return {i: item.start_mark.line + 1 for i, item in enumerate(cases.value)}


def _unknown(where: str, mapping: dict, allowed: set[str]) -> None:
    extra = sorted(set(mapping) - allowed)
    if extra:
        raise TestFileError(
            f"{where}: unknown field(s) {', '.join(extra)} (known: {', '.join(sorted(allowed))})"
        )


def parse_test_file(path: Path) -> TestFile:  # noqa: C901 - one check per field of the test file format
    try:
        text = read_text(path)
        doc = load(text, str(path))
    except DocumentError as exc:
        raise TestFileError(str(exc)) from None
    if not isinstance(doc, dict) or doc.get("kind") != "PolicyTest":
        raise TestFileError(
            f"{path}: not a test file (expected kind: PolicyTest, apiVersion: ostiary.dev/v1)"
        )
    name = ((doc.get("metadata") or {}).get("name")) or path.stem
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise TestFileError(f"{path}: spec must be a mapping")
    _unknown(f"{path}: spec", spec, SPEC_FIELDS)
    if not isinstance(spec.get("policies"), str):
        raise TestFileError(f"{path}: spec.policies must name the policy directory (relative to the file)")
    for key in ("trustData",):
        if isinstance(spec.get(key), str):
            spec[key] = [spec[key]]
    raw_cases = spec.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise TestFileError(f"{path}: spec.cases must be a non-empty list")
    lines = _lines_of_cases(text)
    cases, seen = [], set()
    for index, raw in enumerate(raw_cases):
        where = f"{path}:{lines.get(index, 0)}: spec.cases[{index}]"
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or not raw["name"]:
            raise TestFileError(f"{where}: a case is a mapping with a name")
        _unknown(where, raw, CASE_FIELDS)
        sources = [k for k in ("manifest", "object", "review") if k in raw]
        if len(sources) != 1:
            raise TestFileError(f"{where}: give exactly one of manifest, object or review")
        if raw["name"] in seen:
            raise TestFileError(f"{where}: case name {raw['name']!r} is used twice")
        seen.add(raw["name"])
        expects = raw.get("expect")
        for expect in expects if isinstance(expects, list) else [expects]:
            if not isinstance(expect, dict):
                raise TestFileError(f"{where}: expect must be a mapping (or a list of them, one per object)")
            _unknown(f"{where}.expect", expect, EXPECT_FIELDS)
            if "verdict" in expect and expect["verdict"] not in VERDICTS:
                raise TestFileError(f"{where}.expect.verdict: one of {', '.join(VERDICTS)}")
            for image in expect.get("images") or []:
                if not isinstance(image, dict):
                    raise TestFileError(f"{where}.expect.images: a list of mappings")
                _unknown(f"{where}.expect.images[]", image, IMAGE_FIELDS)
        cases.append(Case(raw["name"], lines.get(index, 0), raw))
    return TestFile(path, str(name), spec, cases)


def find_test_files(paths: Iterable[str]) -> list[TestFile]:
    files: list[Path] = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(TEST_SUFFIXES)))
        elif path.is_file():
            files.append(path)
        else:
            raise TestFileError(f"{text}: no such file or directory")
    return [parse_test_file(p) for p in files]


# ---- running --------------------------------------------------------------------------------


def _objects(test: TestFile, case: Case) -> list[Manifest]:
    raw = case.raw
    if "manifest" in raw:
        return load_manifests([str(test.resolve(str(raw["manifest"])))])
    key = "object" if "object" in raw else "review"
    if not isinstance(raw[key], dict):
        raise ManifestError(f"{test.path}:{case.line}: {key} must be a mapping")
    return [Manifest(str(test.path), case.line, 0, raw[key])]


def _show(value: object) -> str:
    """A value as the user writes it in a test file (JSON flow style, as YAML reads it), never Python's repr."""
    return json.dumps(value, ensure_ascii=False)


def _contains_all(kind: str, wanted: object, actual: list[str]) -> list[str]:
    if wanted is None:
        return []
    if wanted == []:
        return [] if not actual else [f"expected no {kind}, got {_show(actual)}"]
    return [
        f"expected a {kind[:-1]} containing {_show(w)}, got {_show(actual)}"
        for w in (wanted if isinstance(wanted, (list, tuple, str)) else [wanted])
        if not any(str(w) in a for a in actual)
    ]


def _subset(wanted: object, actual: object) -> bool:
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(_subset(v, actual.get(k)) for k, v in wanted.items())
    return wanted == actual


def check(expect: dict, result: ObjectResult) -> list[str]:
    """Why `result` does not meet `expect` (empty when it does)."""
    label = f"{result.label} [{result.origin}]"
    problems: list[str] = []
    seen = f"got {result.verdict}" + (f": {result.message}" if result.message else "")
    if "verdict" in expect and expect["verdict"] != result.verdict:
        problems.append(f"expected {expect['verdict']}, {seen}")
    elif "verdict" not in expect and "allowed" in expect and bool(expect["allowed"]) != result.allowed:
        problems.append(f"expected {'allowed' if expect['allowed'] else 'denied'}, {seen}")
    problems += _contains_all("denials", expect.get("denials"), result.denials)
    problems += _contains_all("warnings", expect.get("warnings"), result.warnings)
    if "message" in expect and str(expect["message"]) not in result.message:
        problems.append(
            f"expected the message to contain {_show(expect['message'])}, got {_show(result.message)}"
        )
    if "patch" in expect and expect["patch"] != result.patch:
        problems.append(f"expected patch {_show(expect['patch'])}, got {_show(result.patch)}")
    wanted = expect.get("images") or []
    if len(wanted) > len(result.images):
        listed = ": " + ", ".join(i.image for i in result.images) if result.images else ""
        problems.append(
            f"expect.images lists {len(wanted)} images, the object has {len(result.images)}{listed}"
        )
    for index, want in enumerate(wanted[: len(result.images)]):
        got = result.images[index].as_dict()
        got["trusted"] = bool((got.get("trust") or {}).get("verified"))
        for key, value in want.items():
            if key == "reasons":
                problems += [
                    f"expect.images[{index}] ({got['image']}): {p}"
                    for p in _contains_all("reasons", value, got["reasons"])
                ]
            elif not _subset(value, got.get(key)):
                problems.append(
                    f"expect.images[{index}] ({got['image']}): expected {key} {_show(value)}, got {_show(got.get(key))}"
                )
    return [f"{label}: {p}" for p in problems]


def _sources(test: TestFile, case: Case, records: tuple | None, found: dict) -> OfflineSources:
    """The captures and time of a case (its own `at`, else the file's): one per (trust data, time)
    within a file, reused by its cases (trustData may hold Notary captures and signature captures)."""
    at = case.raw.get("at", test.spec.get("at"))
    moment = parse_at_option(str(at)) if at else None
    dirs = tuple(str(test.resolve(d)) for d in test.spec.get("trustData") or [])
    if (dirs, moment) not in found:
        found[(dirs, moment)] = offline_sources(dirs, moment, records)
    return found[(dirs, moment)]


def _config(test: TestFile, trusted_root: str | None = None) -> tuple[ServeConfig, tuple | None]:
    """What `serve` would decide with, from the file's spec; ValueError (StateError too) when unusable."""
    spec = test.spec
    rego, pins, records = spec.get("rego"), spec.get("rootPins"), spec.get("trustRecords")
    root = spec.get("sigstoreTrustedRoot")
    allow = spec.get("trustServerAllow") or []
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise ValueError(f"{test.path}: spec.trustServerAllow must be a list of URLs")
    if pins:
        load_default_root_pins(str(test.resolve(pins)))  # refused now, with the file named
    config = ServeConfig(
        policy_dir=str(test.resolve(spec["policies"])),
        rego_dir=str(test.resolve(rego)) if rego else None,
        system_namespace=spec.get("systemNamespace") or DEFAULT_SYSTEM_NAMESPACE,
        root_pins=str(test.resolve(pins)) if pins else None,
        trust_server_allow=tuple(allow),
        sigstore_trusted_root=str(test.resolve(root)) if root else trusted_root,
        decision_log="off",
        budget=30.0,
    )
    return config, tuple(load_records(test.resolve(records))) if records else None


def run_test_file(
    test: TestFile, run: re.Pattern[str] | None = None, *, trusted_root: str | None = None
) -> list[CaseResult]:
    """Run the cases of `test` (those whose `test/case` name matches `run`) in one real OPA; keyless
    requirements against the file's `sigstoreTrustedRoot`, else `trusted_root` (ostiary test
    --sigstore-trusted-root), else the public-good root."""
    cases = [c for c in test.cases if run is None or run.search(f"{test.name}/{c.name}")]
    if not cases:
        return []
    try:
        config, records = _config(test, trusted_root)
    except (ValueError, StateError) as exc:
        raise EngineError(str(exc)) from None
    results: list[CaseResult] = []
    found: dict = {}
    with Engine(config) as engine:
        for case in cases:
            results.append(_run_case(engine, test, case, records, found))
    return results


def _run_case(engine: Engine, test: TestFile, case: Case, records: tuple | None, found: dict) -> CaseResult:
    outcome = CaseResult(str(test.path), test.name, case.name, case.line, passed=False)
    try:
        engine.use(_sources(test, case, records, found))
        objects = _objects(test, case)
    except (ManifestError, ValueError) as exc:
        outcome.failures.append(f"cannot run: {exc}")
        return outcome
    user = case.raw.get("user") or {}
    for manifest in objects:
        outcome.results.append(
            engine.decide(
                manifest,
                namespace=case.raw.get("namespace"),
                username=str(user.get("username") or DEFAULT_USER),
                groups=tuple(str(g) for g in user.get("groups") or []),
                operation=str(case.raw.get("operation") or "CREATE"),
            )
        )
    expects = case.raw.get("expect")
    if isinstance(expects, list):
        if len(expects) != len(outcome.results):
            outcome.failures.append(f"{len(expects)} expectations for {len(outcome.results)} objects")
        pairs: Sequence = list(zip(expects, outcome.results, strict=False))
    else:
        pairs = [(expects, r) for r in outcome.results]
    for expect, result in pairs:
        outcome.failures += check(expect, result)
    if not objects:
        outcome.failures.append("the case has no objects")
    outcome.passed = not outcome.failures
    return outcome


# ---- Rego unit tests (opa test), the library's apart from the user's --------------------------


@dataclass
class RegoTest:
    name: str  # data.package.test_name
    file: str
    passed: bool
    detail: str = ""
    millis: float = 0.0
    row: int = 0  # the line of the test rule in `file`
    output: str = ""  # what the test print()ed

    @property
    def where(self) -> str:
        return f"{self.file}:{self.row}" if self.row else self.file


def run_rego_tests(
    library: Path, user_dir: str | None, run: str | None
) -> tuple[list[RegoTest], list[RegoTest], str]:
    """`opa test` over the library (and the user's rules and tests beside it, as they import it);
    results split into (library, user), and the error text when opa could not run the tests."""
    args = [find_opa(), "test", "--format", "json", "--timeout", "120s", str(library)]
    testdata = rego_testdata_dir()  # the library tests' data (a source checkout only)
    if testdata is not None:
        args.append(str(testdata))
    if user_dir:
        args.append(user_dir)
    if run:
        args += ["--run", run]
    done = subprocess.run(args, capture_output=True, text=True, check=False, timeout=600)
    try:
        records = json.loads(done.stdout) if done.stdout.strip() else []
    except ValueError:
        return [], [], (done.stdout + done.stderr).strip()
    if not isinstance(records, list):
        return [], [], (done.stdout + done.stderr).strip()
    library_root = library.resolve()
    mine: list[RegoTest] = []
    theirs: list[RegoTest] = []
    for record in records:
        file = str((record.get("location") or {}).get("file") or "")
        detail = ""
        if record.get("error"):
            detail = str(
                record["error"].get("message") if isinstance(record["error"], dict) else record["error"]
            )
        row = (record.get("location") or {}).get("row")
        test = RegoTest(
            f"{record.get('package')}.{record.get('name')}",
            file,
            not record.get("fail") and not record.get("error"),
            detail,
            (record.get("duration") or 0) / 1e6,
            row if isinstance(row, int) else 0,
            print_output(record),
        )
        in_library = library_root in Path(file).resolve().parents
        (theirs if in_library else mine).append(test)
    error = "" if done.returncode == 0 or records else (done.stdout + done.stderr).strip()
    return theirs, mine, error


@dataclass
class TestRun:
    """Everything `ostiary test` ran: the library's Rego tests, the user's, and the policy tests."""

    library_dir: str
    rego_dir: str | None
    paths: tuple[str, ...]
    library: list[RegoTest]
    mine: list[RegoTest]
    error: str  # why `opa test` could not run ("" when it ran)
    cases: list[CaseResult]

    @property
    def failed(self) -> bool:
        return (
            bool(self.error)
            or not all(t.passed for t in self.library)
            or not all(t.passed for t in self.mine)
            or not all(c.passed for c in self.cases)
        )


def run_all(
    paths: Sequence[str], rego_dir: str | None, run: str | None, trusted_root: str | None = None
) -> TestRun:
    """`ostiary test`: the library's Rego tests, the user's Rego tests and the user's policy tests, apart;
    keyless cosign against `trusted_root` (--sigstore-trusted-root) unless a file names its own.

    TestFileError when a test file cannot be read (an input error); a file whose policies cannot be
    loaded is a failed case named after it, so the other files still run."""
    pattern = re.compile(run) if run else None
    files = find_test_files(paths)
    library, mine, error = run_rego_tests(rego_library_dir(), rego_dir, run)
    cases: list[CaseResult] = []
    for test_file in files:
        try:
            cases.extend(run_test_file(test_file, pattern, trusted_root=trusted_root))
        except (EngineError, PolicyError, OpaError) as exc:
            cases.append(
                CaseResult(str(test_file.path), test_file.name, "*", 0, False, [f"cannot run: {exc}"])
            )
    return TestRun(
        str(rego_library_dir()), rego_dir, tuple(paths), library, mine if rego_dir else [], error, cases
    )
