"""tests/rego-data/ostiary/testdata/data.json must be what tests/unit/gen_rego_testdata.py makes from its YAML now.

The Rego tests read their policies, image references and trust facts from that file; it is produced
by the translator, the image parser and the Notary verifier, so a change to any of them that changes
the data the Rego library receives makes this test fail until the file is regenerated (and the Rego
tests run against the new shapes).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

GENERATOR = Path(__file__).with_name("gen_rego_testdata.py")


def _generator():
    spec = importlib.util.spec_from_file_location("gen_rego_testdata", GENERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_rego_testdata_is_fresh():
    gen = _generator()
    assert gen.TESTDATA.exists(), f"missing {gen.TESTDATA}: run python {GENERATOR.relative_to(gen.ROOT)}"
    assert gen.TESTDATA.read_text() == gen.render(), (
        f"{gen.TESTDATA} is stale: run python {GENERATOR.relative_to(gen.ROOT)} and re-run the Rego tests"
    )


def test_rego_testdata_covers_what_the_rego_tests_use():
    gen = _generator()
    assert {"specificity", "ties", "namespaces", "plan", "warn", "trust_del1"} <= set(gen.POLICY_SCENARIOS)
    assert "*.trusted.io/org/*" in gen.MATCHING_PATTERNS
    assert "evil.io/x.trusted.io/org/app" in gen.IMAGES
    assert "dave_test_del2" in gen.FACTS_CASES
