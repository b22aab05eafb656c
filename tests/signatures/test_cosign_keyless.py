"""Keyless cosign bundles verified offline (app/signatures/keyless.py), the policy fields
(`cosign.identities`: schema, regular expressions, CRDs, translation).

The real bundle is ../shared/fixtures/signatures/keyless/oci-attestation.sigstore.json (production
Sigstore, checked there with sigstore-python 4.5.1 against the same public-good root): it must
verify here too, and each of its proofs altered must not. The other bundles come from a test
Sigstore made now (tests/support/keyless_signing.py)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.policies.model import PolicyError
from app.policies.schema import keyless_regex_error, parse_policy_document
from app.policies.translate import policy_data
from app.signatures import keyless
from tests.support import cosign_signing as cs
from tests.support.keyless_signing import SIGNED_AT, TestSigstore
from tests.support.simple_signing import FIXTURES

ROOT = Path(__file__).resolve().parents[2]
REAL = FIXTURES / "keyless" / "oci-attestation.sigstore.json"
NOW = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)
DIGEST = "sha256:" + "ab" * 32


def real() -> dict:
    return json.loads(REAL.read_bytes())


@pytest.fixture(scope="module")
def world() -> TestSigstore:
    return TestSigstore()


@pytest.fixture(scope="module")
def test_root(world) -> keyless.TrustedRoot:
    return keyless.read_trusted_root(world.trusted_root(), "test")


# ---- the real bundle ------------------------------------------------------------------------------


def test_the_shipped_root_is_the_fixtures_public_good_root():
    assert (
        keyless.PUBLIC_GOOD.read_bytes()
        == (FIXTURES / "keyless" / "trusted_root.production.json").read_bytes()
    )


def test_the_real_keyless_bundle_verifies_offline_against_the_public_good_root():
    verified = keyless.verify_bundle(real(), keyless.load_trusted_root(), NOW)
    assert verified.certificate == {
        "issuer": "https://github.com/login/oauth",
        "subjects": ["cody@soyland.com"],
        "extensions": {},
    }
    assert verified.integrated_time == datetime(2025, 2, 28, 19, 18, 11, tzinfo=UTC)
    assert json.loads(verified.payload)["predicateType"] == "https://cosign.sigstore.dev/attestation/v1"


def _flip(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[len(raw) // 2] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def _tamper(what: str) -> dict:
    b = real()
    entry = b["verificationMaterial"]["tlogEntries"][0]
    if what == "dsse-signature":
        b["dsseEnvelope"]["signatures"][0]["sig"] = _flip(b["dsseEnvelope"]["signatures"][0]["sig"])
    elif what == "payload":
        statement = json.loads(base64.b64decode(b["dsseEnvelope"]["payload"]))
        statement["subject"][0]["digest"]["sha256"] = "ab" * 32
        b["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    elif what == "set":
        entry["inclusionPromise"]["signedEntryTimestamp"] = _flip(
            entry["inclusionPromise"]["signedEntryTimestamp"]
        )
    elif what == "integrated-time":
        entry["integratedTime"] = str(int(entry["integratedTime"]) + 60)
    elif what == "proof-hash":
        entry["inclusionProof"]["hashes"][3] = _flip(entry["inclusionProof"]["hashes"][3])
    elif what == "checkpoint":
        entry["inclusionProof"]["checkpoint"]["envelope"] = entry["inclusionProof"]["checkpoint"][
            "envelope"
        ].replace("53604735", "53604736")
    elif what == "certificate":
        b["verificationMaterial"]["certificate"]["rawBytes"] = _flip(
            b["verificationMaterial"]["certificate"]["rawBytes"]
        )
    elif what == "no-promise":
        del entry["inclusionPromise"]
    elif what == "no-entry":
        b["verificationMaterial"]["tlogEntries"] = []
    return b


@pytest.mark.parametrize(
    ("what", "reason"),
    [
        ("dsse-signature", "the Rekor entry logs another signature"),
        ("payload", "the Rekor entry logs another payload"),
        ("set", "signed entry timestamp does not verify"),
        ("integrated-time", "signed entry timestamp does not verify"),
        ("proof-hash", "inclusion proof does not lead to its root hash"),
        ("checkpoint", "checkpoint is not signed"),
        ("certificate", ""),
        ("no-promise", "no signed entry timestamp"),
        ("no-entry", "1 to 4 Rekor entries"),
    ],
)
def test_the_real_bundle_altered_is_refused(what, reason):
    with pytest.raises(keyless.KeylessError) as caught:
        keyless.verify_bundle(_tamper(what), keyless.load_trusted_root(), NOW)
    assert reason in str(caught.value), str(caught.value)


def test_the_real_bundle_is_refused_under_another_root(test_root):
    with pytest.raises(keyless.KeylessError, match="is not in the trusted root test"):
        keyless.verify_bundle(real(), test_root, NOW)


# ---- bundles of the test Sigstore -----------------------------------------------------------------


def test_a_made_keyless_signature_verifies(world, test_root):
    data = world.bundle(
        cs.statement(DIGEST), subject="dev@example.com", extensions={"githubWorkflowRepository": "org/app"}
    )
    verified = keyless.verify_bundle(json.loads(data), test_root, NOW)
    assert verified.certificate == {
        "issuer": "https://issuer.ostiary.test",
        "subjects": ["dev@example.com"],
        "extensions": {"githubWorkflowRepository": "org/app"},
    }


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("expired", "was not valid at the integrated time"),
        ("rogue-ca", "not issued by a Fulcio CA of the trusted root"),
        ("rogue-log", "does not verify with the Rekor key"),
        ("not-code-signing", "not for code signing"),
        ("future", "is in the future"),
        ("logged-other", "logs another payload"),
        ("no-tlog", "1 to 4 Rekor entries"),
        ("proof", "does not lead to its root hash"),
        ("key-based", "a key-based bundle"),
    ],
)
def test_made_variants_are_refused(world, test_root, variant, reason):
    from cryptography.hazmat.primitives.asymmetric import ec

    statement = cs.statement(DIGEST)
    key = ec.generate_private_key(ec.SECP256R1())
    kwargs: dict = {}
    if variant == "expired":
        kwargs = dict(
            leaf_key=key,
            leaf=world.leaf(
                key, subject="a@b.c", issuer="https://i", not_before=SIGNED_AT - timedelta(hours=1)
            ),
        )
    elif variant == "rogue-ca":
        rogue = TestSigstore("rogue")
        kwargs = dict(leaf_key=key, leaf=rogue.leaf(key, subject="a@b.c", issuer="https://i"))
    elif variant == "rogue-log":
        kwargs = dict(set_key=ec.generate_private_key(ec.SECP256R1()))
    elif variant == "not-code-signing":
        kwargs = dict(
            leaf_key=key, leaf=world.leaf(key, subject="a@b.c", issuer="https://i", code_signing=False)
        )
    elif variant == "future":
        kwargs = dict(
            integrated=NOW + timedelta(days=1),
            leaf_key=key,
            leaf=world.leaf(
                key,
                subject="a@b.c",
                issuer="https://i",
                not_before=NOW + timedelta(days=1) - timedelta(minutes=1),
            ),
        )
    elif variant == "logged-other":
        kwargs = dict(logged_statement=cs.statement("sha256:" + "cd" * 32))
    elif variant == "no-tlog":
        kwargs = dict(tlog=False)
    elif variant == "proof":
        kwargs = dict(tamper_proof=True)
    elif variant == "key-based":
        kwargs = dict(key_based=True)
    with pytest.raises(keyless.KeylessError) as caught:
        keyless.verify_bundle(json.loads(world.bundle(statement, **kwargs)), test_root, NOW)
    assert reason in str(caught.value), str(caught.value)


def test_a_root_whose_ca_window_opens_later_refuses(world):
    root = keyless.read_trusted_root(world.trusted_root(ca_start="2026-12-07T00:00:00Z"), "late")
    with pytest.raises(keyless.KeylessError, match="not issued by a Fulcio CA"):
        keyless.verify_bundle(json.loads(world.bundle(cs.statement(DIGEST))), root, NOW)


def test_an_unusable_trusted_root_is_refused():
    for data, reason in [
        (b"{}", "not a sigstore trusted root"),
        (b'{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}', "no Fulcio CA"),
        (b"[" * 100000, "not strict JSON"),
    ]:
        with pytest.raises(keyless.KeylessError, match=reason):
            keyless.read_trusted_root(data, "x")


# ---- the policy ------------------------------------------------------------------------------------


def doc(cosign: object) -> dict:
    return {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ClusterImagePolicy",
        "metadata": {"name": "p"},
        "spec": {"repositories": [{"name": "registry.example.com/*", "policy": {"cosign": cosign}}]},
    }


def test_identities_are_accepted_and_translated_anchored():
    resource = parse_policy_document(
        doc(
            {
                "identities": [
                    {
                        "issuer": "https://token.actions.githubusercontent.com",
                        "subjectRegExp": "https://github.com/org/.*",
                        "githubWorkflowRepository": "org/app",
                    }
                ]
            }
        ),
        "x#0",
    )
    (identity,) = policy_data(resource)["repositories"][0]["policy"]["cosign"]["identities"]
    assert identity["issuer"] == "https://token.actions.githubusercontent.com"
    assert identity["issuer_regex"] is None
    assert identity["subject"] is None
    assert identity["subject_regex"] == "^(?:https://github.com/org/.*)$"
    assert identity["extensions"] == {"githubWorkflowRepository": "org/app"}


@pytest.mark.parametrize(
    ("identity", "field"),
    [
        ({"subject": "a@b.c"}, "identities[0]"),  # no issuer
        ({"issuer": "https://i"}, "identities[0]"),  # no subject
        ({"issuer": "https://i", "issuerRegExp": "x", "subject": "s"}, "identities[0]"),  # both
        ({"issuer": "https://i", "subject": "s", "githubWorkflowBranch": "main"}, "githubWorkflowBranch"),
        ({"issuer": "https://i", "subjectRegExp": "(a"}, "subjectRegExp"),
        ({"issuer": "https://i", "subjectRegExp": "(?=a)b"}, "subjectRegExp"),
        ({"issuer": "https://i", "subjectRegExp": "(a)\\1"}, "subjectRegExp"),
        ({"issuerRegExp": "a" * 513, "subject": "s"}, "issuerRegExp"),
    ],
)
def test_malformed_identities_are_refused_naming_the_field(identity, field):
    with pytest.raises(PolicyError) as caught:
        parse_policy_document(doc({"identities": [identity]}), "x#0")
    assert field in str(caught.value), str(caught.value)


def test_re2_subset():
    assert keyless_regex_error("https://github\\.com/org/[^/]+/\\.github/workflows/.*@refs/tags/v.*") is None
    assert keyless_regex_error("a(?!b)") is not None
    assert keyless_regex_error("(?P<x>a)(?P=x)") is not None


def test_the_crds_carry_the_identities():
    for name in ("imagepolicies", "clusterimagepolicies"):
        crd = yaml.safe_load((ROOT / f"helm/ostiary/crds/{name}.ostiary.dev.yaml").read_text())
        spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        cosign = spec["properties"]["repositories"]["items"]["properties"]["policy"]["properties"]["cosign"]
        assert cosign["anyOf"] == [{"required": ["keys"]}, {"required": ["identities"]}]
        fields = set(cosign["properties"]["identities"]["items"]["properties"])
        assert fields == {"issuer", "issuerRegExp", "subject", "subjectRegExp", *keyless.EXTENSION_FIELDS}


# ---- hostile input ---------------------------------------------------------------------------------

REAL_BYTES = REAL.read_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, len(REAL_BYTES) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_mutated_real_bundles_are_refused_or_verified_never_a_crash(edits):
    data = bytearray(REAL_BYTES)
    for at, value in edits:
        data[at] = value
    try:
        document = json.loads(bytes(data))
    except ValueError:
        return
    if not isinstance(document, dict):
        return
    try:
        verified = keyless.verify_bundle(document, keyless.load_trusted_root(), NOW)
    except keyless.KeylessError:
        return
    # a mutation that still verifies may only have touched bytes no proof covers (JSON layout)
    assert verified.certificate["subjects"] == ["cody@soyland.com"]
    assert verified.payload == base64.b64decode(real()["dsseEnvelope"]["payload"])


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=20))  # fmt: skip
def test_arbitrary_json_in_the_bundle_fields_is_refused(value):
    for path in (("verificationMaterial",), ("verificationMaterial", "tlogEntries"), ("dsseEnvelope",)):
        document = real()
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(keyless.KeylessError):
            keyless.verify_bundle(document, keyless.load_trusted_root(), NOW)


def test_serve_refuses_an_unusable_trusted_root(tmp_path):
    from click.testing import CliRunner

    from app.cli import main

    bad = tmp_path / "root.json"
    bad.write_text('{"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1"}')
    (tmp_path / "policies").mkdir()
    result = CliRunner().invoke(
        main, ["serve", "--policy-dir", str(tmp_path / "policies"), "--sigstore-trusted-root", str(bad)]
    )
    assert result.exit_code == 2, result.output
    assert "names no Fulcio CA or no Rekor log" in result.output, result.output
