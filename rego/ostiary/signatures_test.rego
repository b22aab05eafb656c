# METADATA
# description: |
#   Tests of data.ostiary.signatures for cosign requirements: what the facts must show for a
#   requirement to be proven (key in the Secret, the resolved digest, the identity rule), and that
#   facts gathered for one requirement never prove another.
package ostiary.signatures_test

import rego.v1

import data.ostiary.signatures

digest := "sha256:08203b7d9d37c422170036633938611837d32e343f0d60d795cf38040d6e27aa"

other_digest := "sha256:4459bf65bcb914af8494267c06f8ade9cf9bde0035486437ce5ff6f3bcd9f391"

key := "sha256:0e30b4f5"

req := {
	"format": "cosign", "index": 0, "type": "signedBy",
	"key_secret": {"name": "k", "namespace": "team"},
	"identity": {"type": "matchRepository"}, "error": null,
}

ref := {"name": "registry.test:5000/ostiary/cosign", "tag": "alpha", "digest": null, "normalized": "registry.test:5000/ostiary/cosign:alpha"}

sig(identity_name, signed) := {
	"source": "s", "key_id": key, "identity": identity_name, "digest": signed, "error": null,
	"identity_ref": {"name": identity_name, "tag": null, "digest": null},
}

bundle_sig := {"source": "b", "key_id": key, "identity": null, "identity_ref": null, "digest": digest, "error": null}

img(r, sigs) := {"ref": ref, "signatures": [{
	"format": "cosign", "requirement": r, "verified": true, "error": null,
	"digest": digest, "keys": [key], "signatures": sigs,
}]}

test_a_legacy_signature_of_the_repository_proves_the_digest if {
	signatures.proven(img(req, [sig("registry.test:5000/ostiary/cosign", digest)]), req) == digest
}

test_a_bundle_proves_the_digest_without_identity if {
	signatures.proven(img(req, [bundle_sig]), req) == digest
}

test_a_signature_naming_another_repository_does_not if {
	i := img(req, [sig("registry.test:5000/ostiary/elsewhere", digest)])
	not signatures.proven(i, req)
	some msg in signatures.violations(i, [req])
	contains(msg, "signed identity registry.test:5000/ostiary/elsewhere is not accepted")
}

test_match_exact_repository_accepts_the_named_repository if {
	r := object.union(req, {"identity": {"type": "matchExactRepository", "repository": "registry.test:5000/ostiary/origin"}})
	signatures.proven(img(r, [sig("registry.test:5000/ostiary/origin", digest)]), r) == digest
	not signatures.proven(img(r, [sig("registry.test:5000/ostiary/cosign", digest)]), r)
}

test_remap_identity if {
	r := object.union(req, {"identity": {"type": "remapIdentity", "prefix": "registry.test:5000/ostiary", "signedPrefix": "registry.test:5000/upstream"}})
	signatures.proven(img(r, [sig("registry.test:5000/upstream/cosign", digest)]), r) == digest
}

test_a_signature_of_another_digest_is_a_swap if {
	i := img(req, [sig("registry.test:5000/ostiary/cosign", other_digest)])
	not signatures.proven(i, req)
	some msg in signatures.violations(i, [req])
	contains(msg, "cosign key requirement 0")
	contains(msg, "a signature of another image")
}

test_a_key_outside_the_secret_proves_nothing if {
	s := object.union(sig("registry.test:5000/ostiary/cosign", digest), {"key_id": "sha256:other"})
	not signatures.proven(img(req, [s]), req)
}

test_facts_of_another_requirement_prove_nothing if {
	stricter := object.union(req, {"key_secret": {"name": "other", "namespace": "team"}})
	not signatures.proven(img(req, [bundle_sig]), stricter)
}

test_one_good_signature_among_bad_ones_is_enough if {
	sigs := [object.union(bundle_sig, {"error": "does not verify", "key_id": null}), bundle_sig]
	signatures.proven(img(req, sigs), req) == digest
}
