"""The chart's README documents every value of the schema and every metric Ostiary exports."""

from __future__ import annotations

import json
import re

from tests.chart.chart import exported_metric_names
from tests.e2e.cluster import REPO

CHART = REPO / "helm" / "ostiary"


def schema_keys(node: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the schema's values; an object without `properties` (a map, a Kubernetes
    shape, a $ref) is one value."""
    if "properties" not in node:
        return [prefix]
    keys = []
    for name, child in node["properties"].items():
        keys += schema_keys(child, f"{prefix}.{name}" if prefix else name)
    return keys


def readme_section(title: str) -> str:
    text = (CHART / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def first_column(section: str) -> list[str]:
    return re.findall(r"^\| `([^`]+)` \|", section, re.MULTILINE)


def test_the_readme_lists_exactly_the_schemas_values() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    listed = first_column(readme_section("Values"))
    assert len(listed) == len(set(listed)), "a value is listed twice"
    keys = schema_keys(schema)
    assert set(listed) == set(keys), (
        f"in the schema, not the README: {sorted(set(keys) - set(listed))}; "
        f"in the README, not the schema: {sorted(set(listed) - set(keys))}"
    )


def test_the_readme_names_every_metric_ostiary_exports() -> None:
    exported = exported_metric_names()
    documented = {
        name for name in first_column(readme_section("Observability")) if name.startswith("ostiary_")
    }
    assert exported == documented
