"""Keyless cosign bundles found only through the OCI 1.1 referrers API (tools/refreg, the registry
fixture of test_cosign_referrers): the real production keyless attestation as the referrers-API
registry holds it (no fallback tag there) is found and denied as an attestation; a keyless
signature of the test Sigstore listed only by the API is admitted and pinned, the same under the
wrong identity denied. Real `ostiary serve` and OPA."""

from __future__ import annotations

import json

import pytest

from tests.signatures.test_cosign_keyless_admit import (
    ISSUER,
    WORKFLOW,
    _combined_root,
    admit,
    pinned_to,
    policy,
)
from tests.signatures.test_cosign_referrers import registry  # noqa: F401 - the module's refreg fixture
from tests.support import cosign_signing as cs
from tests.support.keyless_signing import TestSigstore
from tests.support.serve import message
from tests.support.simple_signing import serve_policies

HOST = "registry.test:5000"


@pytest.fixture(scope="module")
def made(registry):  # noqa: F811 - the imported fixture
    url, host = registry
    sigstore = TestSigstore()
    push = cs.Pusher(url)
    digest = push.image("made/keyless-api", "v1")
    bundle = sigstore.bundle(cs.statement(digest), subject=WORKFLOW, issuer=ISSUER)
    push.bundle_signature("made/keyless-api", digest, bundle, fallback=False)
    return sigstore, host, digest


@pytest.fixture(scope="module")
def ostiary(registry, made, tmp_path_factory):  # noqa: F811 - the imported fixture
    url, host = registry
    sigstore = made[0]
    tmp = tmp_path_factory.mktemp("ostiary-keyless-api")
    root = tmp / "trusted_root.json"
    root.write_bytes(_combined_root(sigstore))
    docs = [
        policy(
            "real",
            f"{HOST}/keyless/*",
            {"issuer": "https://github.com/login/oauth", "subject": "cody@soyland.com"},
        ),
        policy("good", f"{host}/made/*", {"issuer": ISSUER, "subject": WORKFLOW}),
        policy(
            "wrong", f"{host}/made/*", {"issuer": ISSUER, "subjectRegExp": "https://github\\.com/other/.*"}
        ),
    ]
    with serve_policies(
        tmp,
        docs,
        "--registry-endpoint", f"{HOST}={url}",
        "--registry-endpoint", f"{host}={url}",
        "--sigstore-trusted-root", str(root),
    ) as server:  # fmt: skip
        yield server


def test_the_real_attestation_found_through_the_api_is_denied(ostiary):
    response = admit(ostiary, f"{HOST}/keyless/cosign-attestation:empty", "real")
    assert response["allowed"] is False, message(response)
    text = message(response)
    assert "referrers API" in text, text
    assert "an attestation (predicateType 'https://cosign.sigstore.dev/attestation/v1')" in text, text


def test_a_keyless_signature_listed_only_by_the_api_is_admitted(ostiary, made):
    _, host, digest = made
    image = f"{host}/made/keyless-api:v1"
    response = admit(ostiary, image, "good")
    assert response["allowed"] is True, message(response)
    assert pinned_to(response) == f"{image}@{digest}"
    response = admit(ostiary, image, "wrong")
    assert response["allowed"] is False
    assert "no identity accepts it" in message(response), message(response)
    assert json.dumps(WORKFLOW)[1:-1] in message(response), message(response)
