"""Regenerate tests/rego-data/ostiary/testdata/data.json (data.ostiary.testdata), the fixtures of the
Rego tests: a JSON data document beside the tests, never a module of the library, never shipped.

Nothing in it is written by hand, so it cannot drift from the Python it stands for:

- `policies[<scenario>]` is a whole `data.ostiary_policies` document ({"cluster": {name: {"policy": ...}},
  "namespaced": {ns: {name: {"policy": ...}}}}), made by parse_policy_document + translate.policy_data
  from the YAML below, exactly as the translator's generated modules lay it out.
- `entries[<pattern>]` is the translated repository entry of each pattern in MATCHING_PATTERNS.
- `images[<text>]` is ImageSite(...).as_input() of each image text (id 0, /spec/containers/0/image);
  `images[t].ref` is ImageRef.as_input() (or {"valid": false, "error": ...}).
- `facts[<case>]` is the trust facts document (docs/internals.md) that the verifier produces from the
  real Docker Hub trust data in shared/fixtures/notary/dockerhub-captured (TrustedRepository.facts,
  failure_facts), with the signer keys in its signer-keys/.

Usage:  python tests/unit/gen_rego_testdata.py          (rewrite tests/rego-data/ostiary/testdata/data.json)
        python tests/unit/gen_rego_testdata.py --check  (exit 1 when the file is stale)
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.admission.extract import ImageSite
from app.admission.input import input_config
from app.notary.errors import TrustError
from app.notary.facts import failure_facts
from app.notary.trusted import TrustedRepository
from app.notary.walker import load_all
from app.policies.model import DEFAULT_SYSTEM_NAMESPACE
from app.policies.schema import parse_policy_document
from app.policies.translate import policy_data

TESTDATA = ROOT / "tests" / "rego-data" / "ostiary" / "testdata" / "data.json"
CAPTURED = ROOT.parent / "shared" / "fixtures" / "notary" / "dockerhub-captured"
NOTARY_DOCKER_IO = "https://notary.docker.io"

# ---- policies: scenario name -> YAML (one or more ImagePolicy / ClusterImagePolicy documents) ----

_TRUST_POLICY = """
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {{name: trust}}
spec:
  repositories:
    - name: "docker.io/phbelitz/*"
      policy:
        trust:
          enabled: true
          signerSecrets: {signers}
{extra}
"""


def _trust_scenario(signers: list[str], extra: str = "") -> str:
    secrets = json.dumps([{"name": f"{s}-secret"} for s in signers])
    return _TRUST_POLICY.format(signers=secrets, extra=extra)


POLICY_SCENARIOS: dict[str, str] = {
    # exact match, specificity and the implicit any-tag of tagless patterns
    "specificity": """
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: specificity}
spec:
  repositories:
    - name: "icr.io/*"
      policy: {trust: {enabled: true, trustServer: "https://notary.icr.io"}}
    - name: "icr.io/team/*"
    - name: "icr.io/team/app:1.0*"
      policy: {trust: {enabled: true, trustServer: "https://notary.icr.io"}}
    - name: "icr.io/team/app:1.0"
      policy: {mutateImage: false}
    - name: "icr.io/team/tagless"
    - name: "icr.io/team/tagged:2.0"
""",
    # equally specific matches: requirements first, then kind, namespace, name, entry index
    "ties": """
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: b-policy}
spec:
  repositories:
    - name: "quay.io/org/*pp"
      policy: {trust: {enabled: true}}
    - name: "quay.io/org/*x"
---
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: a-policy}
spec:
  repositories:
    - name: "quay.io/org/ap*"
    - name: "quay.io/org/x*"
    - name: "quay.io/org/y*"
    - name: "quay.io/org/*y"
""",
    # the precomputed rank decides: a more specific deny-all entry beats a broader allow that
    # sorts first by name (rego/ostiary/precomputed_test.rego); precedence_before: without it
    "precedence": """
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: a-allow}
spec:
  repositories:
    - name: "icr.io/*"
---
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: z-deny}
spec:
  repositories:
    - name: "icr.io/team/*"
      policy: {simple: {requirements: [{type: reject}]}}
""",
    # equally specific entries: the one with a signature requirement (cosign) beats the allow-all
    # that sorts first by name, so an unsigned image is denied (precomputed_test.rego)
    "tie_cosign": """
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: a-allow}
spec:
  repositories:
    - name: "icr.io/team/*"
---
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: z-cosign}
spec:
  repositories:
    - name: "icr.io/team/*"
      policy: {cosign: {keys: [{keySecret: release-cosign}]}}
""",
    "precedence_before": """
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: a-allow}
spec:
  repositories:
    - name: "icr.io/*"
""",
    # ImagePolicies of a namespace are exclusive over ClusterImagePolicies
    "namespaces": """
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: allow-all}
spec:
  repositories:
    - name: "*"
---
apiVersion: portieris.cloud.ibm.com/v1
kind: ImagePolicy
metadata: {name: team-policy, namespace: team}
spec:
  repositories:
    - name: "icr.io/team/*"
---
apiVersion: securityenforcement.admission.cloud.ibm.com/v1beta1
kind: ImagePolicy
metadata: {name: other-policy, namespace: other}
spec:
  repositories:
    - name: "docker.io/library/*"
---
apiVersion: ostiary.dev/v1
kind: ImagePolicy
metadata: {name: empty-policy, namespace: locked}
spec: {}
""",
    # what the plan asks for
    "plan": """
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: plan}
spec:
  repositories:
    - name: "docker.io/library/*"
      policy: {trust: {enabled: true}}
    - name: "quay.io/*"
      policy: {trust: {enabled: true}}
    - name: "registry.example.com/*"
      policy: {trust: {enabled: true}}
    - name: "registry.example.com/team/*"
      policy:
        trust:
          enabled: true
          trustServer: "https://notary.example.com"
          signerSecrets: [{name: alice-key}, {name: bob-key}]
    - name: "registry.example.com/nomutate/*"
      policy: {mutateImage: false}
    - name: "registry.example.com/simple/*"
      policy: {simple: {requirements: [{type: signedBy, keySecret: simple-key}], storeURL: "https://sigstore.example.com"}}
    - name: "registry.example.com/va/*"
      policy: {va: {enabled: true}}
    - name: "registry.example.com/open/*"
    - name: "registry.example.com/empty/*"
      policy: {}
    - name: "registry.example.com/null/*"
      policy:
    - name: "registry.example.com/disabled/*"
      policy: {trust: {enabled: false, signerSecrets: [{name: unused-key}]}}
    - name: "docker.io/myorg/*"
      policy: {trust: {enabled: true, trustServer: "https://notary.myorg.example"}}
---
apiVersion: ostiary.dev/v1
kind: ImagePolicy
metadata: {name: team-plan, namespace: team-ns}
spec:
  repositories:
    - name: "registry.example.com/team/*"
      policy:
        trust:
          enabled: true
          trustServer: "https://notary.example.com"
          signerSecrets: [{name: team-key}]
""",
    # warn mode: violations become warnings
    "warn": """
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: warn}
spec:
  mode: warn
  repositories:
    - name: "registry.example.com/*"
      policy: {trust: {enabled: true, trustServer: "https://notary.example.com"}}
    - name: "registry.example.com/simple/*"
      policy: {simple: {requirements: [{type: reject}]}}
    - name: "registry.example.com/open/*"
""",
    "warn_namespace": """
apiVersion: ostiary.dev/v1
kind: ClusterImagePolicy
metadata: {name: allow-all}
spec:
  repositories:
    - name: "*"
---
apiVersion: ostiary.dev/v1
kind: ImagePolicy
metadata: {name: trial, namespace: trial}
spec:
  mode: warn
  repositories:
    - name: "registry.example.com/*"
      policy: {trust: {enabled: true, trustServer: "https://notary.example.com"}}
""",
    # trust rules over the captured Docker Hub facts (docker.io/phbelitz/*)
    "trust_nosigners": _trust_scenario([]),
    "trust_del1": _trust_scenario(["del1"]),
    "trust_del2": _trust_scenario(["del2"]),
    "trust_del1_del2": _trust_scenario(["del1", "del2"]),
    "trust_phbelitz": _trust_scenario(["phbelitz"]),
    "trust_phbelitz_chamsen": _trust_scenario(["phbelitz", "chamsen"]),
    "trust_nomutate": _trust_scenario([], "        mutateImage: false"),
    "trust_pinned": _trust_scenario([], "          rootSecrets: [{name: hub-root}]"),
    "trust_warn": _trust_scenario(["del2"]).replace("spec:\n", "spec:\n  mode: warn\n"),
}

# ---- repository patterns whose translated entries the matching tests use ----

MATCHING_PATTERNS = [
    "*",
    "nginx",
    "nginx:1.25",
    "nginx:latest",
    "nginx:*",
    "docker.io/library/*",
    "docker.io/*",
    "docker.io/library/nginx",
    "docker.io/library/nginx:1.25",
    "index.docker.io/library/nginx",
    "myorg/*",
    "ubuntu*",
    "*.trusted.io/org/*",
    "*.icr.io/*",
    "reg*.example.com/*",
    "*.corp.example.com:5000/*",
    "icr.io/*",
    "icr.io/team/*",
    "icr.io/team/*-debug",
    "icr.io/team/app*",
    "icr.io/team/*app",
    "icr.io/team/a*p",
    "icr.io/team/app",
    "icr.io/team/app:1.*",
    "localhost:5000/*",
    "localhost/app",
    "registry.example.com/a.b/*",
]

# ---- image references (as written in pod specs) ----

IMAGES = [
    "eu.corp.example.com:5000/team/app",
    "eu.corp.example.com/team/app",
    "nginx",
    "nginx:1.25",
    "nginx:latest",
    "nginx:1.25@sha256:" + "a" * 64,
    "nginx@sha256:" + "a" * 64,
    "docker.io/library/nginx:1.25",
    "index.docker.io/library/nginx:1.25",
    "myorg/app:1.0",
    "docker.io/myorg/app:1.0",
    "ubuntu",
    "ubuntu:22.04",
    "ubuntu.evil.io/x",
    "ubuntu.evil.io/library/ubuntu",
    "ubuntu-debug",
    "evil.io/x.trusted.io/org/app",
    "evil.io/org/app",
    "registry.trusted.io/org/app",
    "registry.trusted.io/other/app",
    "trusted.io/org/app",
    "icr.io/team/app",
    "icr.io/team/app:1.0",
    "icr.io/team/app:1.0@sha256:" + "a" * 64,
    "icr.io/team/app:1.5",
    "icr.io/team/app:1-debug",
    "icr.io/team/app-debug",
    "icr.io/team/app-debug:1",
    "icr.io/team/app2",
    "icr.io/team/myapp",
    "icr.io/team/ap",
    "icr.io/team/abcp",
    "icr.io/team/tagless:9",
    "icr.io/team/tagged:2.0",
    "icr.io/team/tagged:2.1",
    "icr.io/team/tagged@sha256:" + "b" * 64,
    "icr.io/other/app",
    "us.icr.io/team/app",
    "de.icr.io/x/y/z:1",
    "xicr.io/team/app",
    "localhost:5000/app",
    "localhost/app",
    "quay.io/org/app",
    "quay.io/org/xx",
    "quay.io/org/yy",
    "quay.io/coreos/etcd:v3.5",
    "registry.example.com/team/app:1.0",
    "registry.example.com/team/app@sha256:" + "c" * 64,
    "registry.example.com/other/app:1.0",
    "registry.example.com/nomutate/app:1.0",
    "registry.example.com/simple/app:1.0",
    "registry.example.com/va/app:1.0",
    "registry.example.com/open/app:1.0",
    "registry.example.com/empty/app:1.0",
    "registry.example.com/null/app:1.0",
    "registry.example.com/disabled/app:1.0",
    "registry.example.com/a.b/c",
    "registry.example.com/aab/c",
    "docker.io/myorg/tool:2",
    "docker.io/phbelitz/alice-image:test",
    "docker.io/phbelitz/alice-image:missing-tag",
    "docker.io/phbelitz/delegation:test",
    "docker.io/phbelitz/sample-image:v1",
    "docker.io/phbelitz/sample-image:sign",
    # invalid references
    "NGINX",
    "nginx@sha256:abc",
    "nginx:bad tag",
]

# digests from expected.json of the captured trust data
SAMPLE_V1 = "sha256:799c0fa8aa4c9fbff5a99aef1b4b5c3abb9c2f34134345005982fad3489893c7"
SAMPLE_SIGN = "sha256:a154797b8300165956ee1f16d98f3a1426301c1168f0462c73ce9bc03361cabf"
DAVE_RELEASED = "sha256:2b7b506572e4f3b9de7524ff84287db88ed24b0cf9448a7b04ad0664ecdef71b"
DAVE_DEL2 = "sha256:a825e8e950dceb81c7d86f6d34e4e47307e98f35505d180d404e194742a28079"
UNSIGNED = "sha256:" + "0" * 64

IMAGES += [
    f"docker.io/phbelitz/sample-image@{SAMPLE_V1}",
    f"docker.io/phbelitz/sample-image@{UNSIGNED}",
    f"docker.io/phbelitz/sample-image:v1@{SAMPLE_SIGN}",
    f"docker.io/phbelitz/sample-image:v1@{SAMPLE_V1}",
    f"docker.io/phbelitz/delegation@{DAVE_RELEASED}",
    f"docker.io/phbelitz/delegation@{DAVE_DEL2}",
]

BAD_PEM = "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n"

# facts case -> (captured directory, tag, digest, [(secret, signer name, key file or None for BAD_PEM)])
FACTS_CASES: dict[str, tuple[str, str | None, str | None, list[tuple[str, str, str | None]]]] = {
    "alice_test_phbelitz_chamsen": (
        "alice-image",
        "test",
        None,
        [("phbelitz-secret", "phbelitz", "phbelitz"), ("chamsen-secret", "chamsen", "chamsen")],
    ),
    "alice_test_phbelitz": ("alice-image", "test", None, [("phbelitz-secret", "phbelitz", "phbelitz")]),
    "alice_test_del1": ("alice-image", "test", None, [("del1-secret", "del1", "del1")]),
    "alice_test_phbelitz_with_chamsen_key": (
        "alice-image",
        "test",
        None,
        [("phbelitz-secret", "phbelitz", "chamsen")],
    ),
    "alice_missing_tag": ("alice-image", "missing-tag", None, []),
    "charlie_test_del1": ("charlie-image", "test", None, [("del1-secret", "del1", "del1")]),
    "dave_test": ("dave-image", "test", None, []),
    "dave_test_del1": ("dave-image", "test", None, [("del1-secret", "del1", "del1")]),
    "dave_test_del2": ("dave-image", "test", None, [("del2-secret", "del2", "del2")]),
    "dave_test_del1_del2": (
        "dave-image",
        "test",
        None,
        [("del1-secret", "del1", "del1"), ("del2-secret", "del2", "del2")],
    ),
    "dave_test_del1_bad_pem": ("dave-image", "test", None, [("del1-secret", "del1", None)]),
    "dave_digest_released_del1": ("dave-image", None, DAVE_RELEASED, [("del1-secret", "del1", "del1")]),
    "dave_digest_released_del2": ("dave-image", None, DAVE_RELEASED, [("del2-secret", "del2", "del2")]),
    "dave_digest_del2_del2": ("dave-image", None, DAVE_DEL2, [("del2-secret", "del2", "del2")]),
    "eve_test": ("eve-image", "test", None, []),
    "sample_v1": ("sample-image", "v1", None, []),
    "sample_digest_v1": ("sample-image", None, SAMPLE_V1, []),
    "sample_digest_unsigned": ("sample-image", None, UNSIGNED, []),
    "sample_v1_at_sign_digest": ("sample-image", "v1", SAMPLE_SIGN, []),
    "sample_v1_at_v1_digest": ("sample-image", "v1", SAMPLE_V1, []),
}


# ---- building ----


def policies_document(yaml_text: str, scenario: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"cluster": {}, "namespaced": {}}
    for index, raw in enumerate(yaml.safe_load_all(yaml_text)):
        resource = parse_policy_document(raw, f"testdata:{scenario}#{index}")
        data = {"policy": policy_data(resource)}
        if resource.kind == "ClusterImagePolicy":
            doc["cluster"][resource.name] = data
        else:
            doc["namespaced"].setdefault(resource.namespace, {})[resource.name] = data
    return doc


def matching_policy() -> dict[str, Any]:
    """One ClusterImagePolicy of every pattern of MATCHING_PATTERNS, translated."""
    raw = {
        "apiVersion": "ostiary.dev/v1",
        "kind": "ClusterImagePolicy",
        "metadata": {"name": "matching"},
        "spec": {"repositories": [{"name": p} for p in MATCHING_PATTERNS]},
    }
    return policy_data(parse_policy_document(raw, "testdata:matching#0"))


def matching_entries() -> dict[str, Any]:
    return {entry["name"]: entry for entry in matching_policy()["repositories"]}


def image_inputs() -> dict[str, Any]:
    return {
        text: ImageSite(0, "/spec/containers/0/image", "containers", "c0", text).as_input() for text in IMAGES
    }


def _load_captured(name: str) -> TrustedRepository:
    case = json.loads((CAPTURED / "expected.json").read_text())["cases"][name]
    directory = CAPTURED / name
    repo = TrustedRepository(case["gun"], datetime.fromisoformat(case["valid_at"]), server=NOTARY_DOCKER_IO)
    return load_all(repo, lambda role: _read(directory / f"{role}.json"))


def _read(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def trust_facts() -> dict[str, Any]:
    expected = json.loads((CAPTURED / "expected.json").read_text())["cases"]
    out = {}
    for case, (directory, tag, digest, signer_specs) in FACTS_CASES.items():
        signers = [
            (secret, name, BAD_PEM if key is None else (CAPTURED / "signer-keys" / f"{key}.pub").read_text())
            for secret, name, key in signer_specs
        ]
        try:
            out[case] = _load_captured(directory).facts(tag, digest, signers)
        except TrustError as error:
            out[case] = failure_facts(
                NOTARY_DOCKER_IO, expected[directory]["gun"], tag, digest, error, signers
            )
    return out


def render() -> str:
    """The JSON data document data.ostiary.testdata (opa test loads it from tests/rego-data)."""
    values = {
        "policies": {name: policies_document(text, name) for name, text in POLICY_SCENARIOS.items()},
        "entries": matching_entries(),
        # the same entries as one policy document (data.ostiary_policies), for the host index tests
        "matching_policies": {"cluster": {"matching": {"policy": matching_policy()}}, "namespaced": {}},
        "images": image_inputs(),
        "facts": trust_facts(),
        # input.config as the Reviewer sends it: its one builder (app/admission/input.py)
        "config": input_config(DEFAULT_SYSTEM_NAMESPACE),
    }
    return json.dumps(values, indent=1, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not TESTDATA.exists() or TESTDATA.read_text() != text:
            print(f"{TESTDATA} is stale: run python tests/unit/gen_rego_testdata.py", file=sys.stderr)
            return 1
        return 0
    TESTDATA.parent.mkdir(parents=True, exist_ok=True)
    TESTDATA.write_text(text)
    print(f"wrote {TESTDATA}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
