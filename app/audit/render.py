"""Print an audit (``ostiary audit -o table|json|yaml|junit``): one line per object and image, the
same results the PolicyReports carry."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

import yaml

from app.audit.engine import ERROR, FAIL, AuditRun, Result

FORMATS = ("table", "json", "yaml", "junit")


def as_document(run: AuditRun) -> dict:
    return {
        "namespace": run.namespace,
        "objects": run.objects,
        "summary": run.counts(),
        "incomplete": list(run.list_errors),
        "results": [r.as_dict() for r in run.results],
    }


def render(run: AuditRun, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(as_document(run), indent=2)
    if fmt == "yaml":
        return yaml.safe_dump(as_document(run), sort_keys=False, width=1000)
    if fmt == "junit":
        return junit(run)
    return table(run)


def _object(r: Result) -> str:
    return f"{r.kind}/{r.name}"


def table(run: AuditRun) -> str:
    header = ("NAMESPACE", "OBJECT", "CONTAINER", "IMAGE", "RESULT", "POLICY", "MESSAGE")
    rows = [
        (
            r.namespace or "-",
            _object(r),
            r.container or "-",
            r.image or "-",
            r.result.upper(),
            r.policy,
            r.message,
        )
        for r in run.results
    ]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(header[:-1])]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in [header, *rows]
    ]
    counts = run.counts()
    lines.append(
        f"{run.objects} objects, {len(run.results)} results: "
        + ", ".join(f"{n} {k}" for k, n in counts.items())
    )
    lines += [f"INCOMPLETE: {error}" for error in run.list_errors]
    return "\n".join(lines)


def junit(run: AuditRun) -> str:
    counts = run.counts()
    suite = ET.Element(
        "testsuite",
        name="ostiary audit",
        tests=str(len(run.results) + len(run.list_errors)),
        failures=str(counts[FAIL]),
        errors=str(counts[ERROR] + len(run.list_errors)),
        skipped="0",
    )
    for r in run.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{r.namespace or '-'}.{r.kind}.{r.name}",
            name=f"{r.container} {r.image}".strip() or "object",
        )
        if r.result == FAIL:
            ET.SubElement(case, "failure", message=r.message[:1000], type=r.policy).text = r.message
        elif r.result == ERROR:
            ET.SubElement(case, "error", message=r.message[:1000], type=r.policy).text = r.message
        else:
            ET.SubElement(case, "system-out").text = f"{r.result}: {r.policy}: {r.message}"
    for error in run.list_errors:
        case = ET.SubElement(suite, "testcase", classname="ostiary.audit", name="list")
        ET.SubElement(case, "error", message=error[:1000], type="list").text = error
    suites = ET.Element("testsuites")
    suites.append(suite)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode")
