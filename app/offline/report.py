"""Print `ostiary apply` results: a table for people, JSON/YAML for scripts, JUnit XML for CI.

Every format carries the same facts per object and image: verdict, the matched entry, the trust facts
used, and the deny and warn messages (docs/policy-as-code.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from xml.etree import ElementTree as ET

import yaml

from app.offline.engine import ImageResult, ObjectResult
from app.offline.testfile import RegoTest, TestRun

FORMATS = ("table", "json", "yaml", "junit")


def trust_summary(facts: dict | None) -> str:
    """One line about the trust facts an image was decided with."""
    if facts is None:
        return "-"
    if facts.get("verified") is not True:
        return f"not verified: {facts.get('error') or 'no reason given'}"
    parts = [f"verified {facts.get('gun')}"]
    tag = facts.get("tag")
    entry = (facts.get("targets") or {}).get(tag) if tag else None
    if entry is not None:
        parts.append(
            f"{tag} released as {entry.get('released')}"
            if entry.get("released")
            else f"{tag} refused: {entry.get('refused')}"
        )
    elif tag:
        parts.append(f"{tag} not signed")
    for signer in facts.get("signers") or []:
        if signer.get("error"):
            parts.append(f"signer {signer.get('secret')}: {signer['error']}")
        else:
            parts.append(f"signer {signer.get('name')} ({signer.get('role')})")
    return "; ".join(parts)


def summary(results: Sequence[ObjectResult]) -> dict:
    """Counts by verdict: an object the webhook lets through unchecked is not counted as allowed."""
    denied = sum(1 for r in results if not r.allowed)
    unchecked = sum(1 for r in results if r.allowed and not r.checked)
    return {
        "objects": len(results),
        "allowed": len(results) - denied - unchecked,
        "denied": denied,
        "not_checked": unchecked,
    }


def as_document(results: Sequence[ObjectResult]) -> dict:
    return {"summary": summary(results), "results": [r.as_dict() for r in results]}


def render(results: Sequence[ObjectResult], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(as_document(results), indent=2)
    if fmt == "yaml":
        # plain JSON values first: facts may be dict subclasses (FailureFacts), which safe_dump refuses
        plain = json.loads(json.dumps(as_document(results)))
        return yaml.safe_dump(plain, sort_keys=False, width=1000)
    if fmt == "junit":
        return junit(results)
    return table(results)


def _image_lines(image: ImageResult) -> list[str]:
    lines = [
        (
            f"    image {image.image} ({image.container.get('kind', '?')} {image.container.get('name', '?')}): "
            f"{'allowed' if image.allowed else 'DENIED'}"
        ),
        f"      entry: {image.entry}",
        f"      trust: {trust_summary(image.trust)}",
    ]
    if image.pin:
        lines.append(f"      pin:   {image.pin}")
    lines += [f"      deny:  {reason}" for reason in image.reasons]
    lines += [f"      warn:  {warning}" for warning in image.warnings]
    return lines


def table(results: Sequence[ObjectResult]) -> str:
    lines: list[str] = []
    for result in results:
        lines.append(f"{result.verdict.upper():<11} {result.label}  [{result.origin}]")
        for image in result.images:
            lines.extend(_image_lines(image))
        image_reasons = {r for i in result.images for r in i.reasons}
        for denial in result.denials:
            if not any(denial.endswith(r) for r in image_reasons):
                lines.append(f"    deny: {denial}")
        image_warnings = {w for i in result.images for w in i.warnings}
        for warning in dict.fromkeys(result.warnings):  # each once: under its image when it has one
            if not any(warning.endswith(w) for w in image_warnings):
                lines.append(f"    warn: {warning}")
        for op in result.patch:
            lines.append(f"    patch: {op.get('op')} {op.get('path')} -> {op.get('value')}")
        lines.extend(f"    note: {note}" for note in result.notes)
    counts = summary(results)
    lines.append(
        f"{counts['objects']} objects: {counts['allowed']} allowed, {counts['denied']} denied"
        + (f", {counts['not_checked']} not checked" if counts["not_checked"] else "")
    )
    return "\n".join(lines)


def junit(results: Sequence[ObjectResult]) -> str:
    counts = summary(results)
    suite = ET.Element(
        "testsuite",
        name="ostiary apply",
        tests=str(counts["objects"]),
        failures=str(counts["denied"]),
        errors="0",
        skipped="0",
    )
    for result in results:
        case = ET.SubElement(
            suite, "testcase", classname=result.source or "ostiary", name=f"{result.label} ({result.origin})"
        )
        details = "\n".join(
            [
                *(f"{i.image}: {i.entry}; trust: {trust_summary(i.trust)}" for i in result.images),
                *(f"warn: {w}" for w in result.warnings),
                *(f"note: {n}" for n in result.notes),
            ]
        )
        if not result.allowed:
            failure = ET.SubElement(case, "failure", message=result.message[:1000], type="denied")
            failure.text = "\n".join(result.denials) + ("\n" + details if details else "")
        elif details:
            ET.SubElement(case, "system-out").text = details
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")


def test_junit(suites: Sequence[tuple[str, Sequence[tuple[str, str, list[str]]]]]) -> str:
    """JUnit XML for `ostiary test --junit`: one suite per section, (name, classname, failures) per test."""
    root = ET.Element("testsuites")
    for title, tests in suites:
        failed = sum(1 for _, _, failures in tests if failures)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=title,
            tests=str(len(tests)),
            failures=str(failed),
            errors="0",
            skipped="0",
        )
        for name, classname, failures in tests:
            case = ET.SubElement(suite, "testcase", classname=classname, name=name)
            if failures:
                failure = ET.SubElement(case, "failure", message=failures[0][:1000], type="failed")
                failure.text = "\n".join(failures)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")


def _rego_line(test: RegoTest, timed: bool) -> str:
    verdict = "PASS" if test.passed else ("FAIL " + test.detail).strip()
    return f"  {test.name}: {verdict}" + (f" ({test.millis:.1f}ms)" if timed else "")


def _user_rego_lines(test: RegoTest, verbose: bool) -> list[str]:
    """A user's Rego test as `opa test` shows it: where it is, and for a failure (or with -v) what it
    print()ed."""
    lines = [_rego_line(test, True) + f"  [{test.where}]"]
    if test.output and (verbose or not test.passed):
        lines += [f"      | {line}" for line in test.output.rstrip("\n").splitlines()]
    return lines


def test_text(run: TestRun, verbose: bool) -> str:
    """`ostiary test` for a person: the three sections, failures in full, then PASS or FAIL."""
    lines = [f"== Ostiary library: Rego unit tests ({run.library_dir})"]
    lines += [_rego_line(t, False) for t in run.library if verbose or not t.passed]
    lines.append(f"  {sum(t.passed for t in run.library)}/{len(run.library)} passed")
    if run.error and not run.rego_dir:
        lines.append(f"  opa test could not run: {run.error}")
    if run.rego_dir:
        lines.append(f"== Your Rego unit tests ({run.rego_dir})")
        for test in run.mine:
            lines += _user_rego_lines(test, verbose)
        lines.append(f"  {sum(t.passed for t in run.mine)}/{len(run.mine)} passed")
        if run.error:  # with the user's modules loaded, a compile error is almost always theirs
            lines.append(f"  opa test could not run: {run.error}")
    if run.paths:
        lines.append(f"== Your policy tests ({', '.join(run.paths)})")
        for case in run.cases:
            where = f"{case.file}:{case.line}" if case.line else case.file
            lines.append(f"  {'PASS' if case.passed else 'FAIL'} {case.full_name}  [{where}]")
            lines += [f"       {failure}" for failure in case.failures]
        lines.append(f"  {sum(c.passed for c in run.cases)}/{len(run.cases)} passed")
    lines.append("FAIL" if run.failed else "PASS")
    return "\n".join(lines)


def test_run_junit(run: TestRun) -> str:
    """`ostiary test --junit`: one suite per section."""

    def rego(tests: Sequence[RegoTest]) -> list[tuple[str, str, list[str]]]:
        return [
            (t.name, t.where, [] if t.passed else [t.detail or "FAIL", *t.output.splitlines()]) for t in tests
        ]

    # The library's tests are Ostiary's, not the user's: one case that fails when any of them (or opa
    # test itself) fails, named without install paths.
    broken = [t.name for t in run.library if not t.passed]
    library_failures = ([run.error] if run.error else []) + [f"{name}: FAIL" for name in broken]
    suites: list[tuple[str, list[tuple[str, str, list[str]]]]] = [
        (
            "Ostiary library",
            [(f"Ostiary's own Rego tests ({len(run.library)})", "ostiary", library_failures)],
        )
    ]
    if run.mine:
        suites.append(("Your Rego unit tests", rego(run.mine)))
    if run.cases:
        suites.append(
            (
                "Your policy tests",
                [(c.full_name, c.file, c.failures or ([] if c.passed else ["FAIL"])) for c in run.cases],
            )
        )
    return test_junit(suites)
