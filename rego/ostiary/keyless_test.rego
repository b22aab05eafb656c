# METADATA
# description: |
#   Tests of data.ostiary.signatures for keyless cosign requirements (policy.cosign.identities): a
#   verified certificate must be accepted by one identity (issuer, one subject, each extension);
#   regular expressions are the translator's anchored ones; a key signature never meets a keyless
#   requirement, nor a keyless certificate a key requirement.
package ostiary.keyless_test

import rego.v1

import data.ostiary.signatures

digest := "sha256:08203b7d9d37c422170036633938611837d32e343f0d60d795cf38040d6e27aa"

workflow := "https://github.com/org/app/.github/workflows/release.yml@refs/heads/main"

issuer := "https://token.actions.githubusercontent.com"

identity(over) := object.union(
	{"issuer": issuer, "issuer_regex": null, "subject": workflow, "subject_regex": null, "extensions": {}, "written": {}},
	over,
)

req(ids) := {"format": "cosign", "index": 0, "type": "keyless", "identities": ids, "error": null}

ref := {"name": "registry.test:5000/made/app", "tag": "v1", "digest": null, "normalized": "registry.test:5000/made/app:v1"}

cert := {"issuer": issuer, "subjects": [workflow], "extensions": {"githubWorkflowRepository": "org/app"}}

keyless_sig(c) := {"source": "b", "key_id": null, "identity": null, "identity_ref": null, "digest": digest, "error": null, "certificate": c}

img(r, sigs) := {"ref": ref, "signatures": [{
	"format": "cosign", "requirement": r, "verified": true, "error": null,
	"digest": digest, "keys": [], "signatures": sigs,
}]}

test_the_exact_identity_proves_the_digest if {
	r := req([identity({})])
	signatures.proven(img(r, [keyless_sig(cert)]), r) == digest
}

test_another_subject_or_issuer_does_not if {
	r := req([identity({})])
	not signatures.proven(img(r, [keyless_sig(object.union(cert, {"subjects": ["https://github.com/evil/app"]}))]), r)
	not signatures.proven(img(r, [keyless_sig(object.union(cert, {"issuer": "https://evil.example"}))]), r)
	i := img(r, [keyless_sig(object.union(cert, {"issuer": "https://evil.example"}))])
	some msg in signatures.violations(i, [r])
	contains(msg, "cosign keyless requirement: no keyless signature")
	contains(msg, "certificate of issuer https://evil.example")
}

test_anchored_regular_expressions_match_the_whole_value if {
	r := req([identity({"subject": null, "subject_regex": "^(?:https://github\\.com/org/.*)$"})])
	signatures.proven(img(r, [keyless_sig(cert)]), r) == digest
	not signatures.proven(img(r, [keyless_sig(object.union(cert, {"subjects": ["https://evil.example/https://github.com/org/x"]}))]), r)
}

test_extensions_must_all_match if {
	r := req([identity({"extensions": {"githubWorkflowRepository": "org/app"}})])
	signatures.proven(img(r, [keyless_sig(cert)]), r) == digest
	r2 := req([identity({"extensions": {"githubWorkflowRepository": "org/other"}})])
	not signatures.proven(img(r2, [keyless_sig(cert)]), r2)
	r3 := req([identity({"extensions": {"githubWorkflowRef": "refs/heads/main"}})])
	not signatures.proven(img(r3, [keyless_sig(cert)]), r3)
}

test_a_signature_with_an_error_proves_nothing if {
	r := req([identity({})])
	s := object.union(keyless_sig(cert), {"error": "an attestation", "digest": null})
	not signatures.proven(img(r, [s]), r)
}

test_a_key_signature_does_not_meet_a_keyless_requirement if {
	r := req([identity({})])
	s := {"source": "s", "key_id": "sha256:k", "identity": null, "identity_ref": null, "digest": digest, "error": null}
	i := {"ref": ref, "signatures": [{
		"format": "cosign", "requirement": r, "verified": true, "error": null,
		"digest": digest, "keys": ["sha256:k"], "signatures": [s],
	}]}
	not signatures.proven(i, r)
}

test_a_keyless_certificate_does_not_meet_a_key_requirement if {
	r := {
		"format": "cosign", "index": 0, "type": "signedBy", "key_secret": {"name": "k", "namespace": "team"},
		"identity": {"type": "matchRepository"}, "error": null,
	}
	i := {"ref": ref, "signatures": [{
		"format": "cosign", "requirement": r, "verified": true, "error": null,
		"digest": digest, "keys": ["sha256:k"], "signatures": [keyless_sig(cert)],
	}]}
	not signatures.proven(i, r)
}
