# METADATA
# description: |
#   Tests of the Notation verification levels (data.ostiary.notation, data.ostiary.signatures): a
#   signature is accepted when no validation its requirement enforces failed; the logged failures
#   become warnings; integrity (the signature's error) and the digest are enforced at every level.
package ostiary.notation_test

import rego.v1

import data.ostiary.signatures

digest := "sha256:08203b7d9d37c422170036633938611837d32e343f0d60d795cf38040d6e27aa"

anchor := "sha256:0e30b4f5"

validations(level) := {"integrity": "enforce", "authenticity": "enforce", "authenticTimestamp": "enforce", "expiry": "enforce", "revocation": "enforce"} if {
	level == "strict"
} else := {"integrity": "enforce", "authenticity": "enforce", "authenticTimestamp": "log", "expiry": "log", "revocation": "log"} if {
	level == "permissive"
} else := {"integrity": "enforce", "authenticity": "log", "authenticTimestamp": "log", "expiry": "log", "revocation": "log"}

req(level) := {
	"format": "notation", "index": 0, "type": "signedBy",
	"key_secret": {"name": "ca", "namespace": "team"},
	"identities": [{"C": "US", "ST": "WA", "O": "Acme"}],
	"level": level, "validations": validations(level), "stores": ["ca"], "error": null,
}

clean := {"authenticity": null, "expiry": null, "authenticTimestamp": null, "revocation": null}

sig(changes) := object.union(
	{
		"source": "s", "key_id": anchor, "identity": null, "identity_ref": null, "digest": digest, "error": null,
		"subject": {"C": "US", "ST": "WA", "O": "Acme", "CN": "Signer"}, "subject_dn": "CN=Signer,O=Acme,ST=WA,C=US",
		"failures": clean,
	},
	changes,
)

img(r, sigs) := {"ref": {"name": "r.test/app", "tag": "v1", "digest": null}, "signatures": [{
	"format": "notation", "requirement": r, "verified": true, "error": null,
	"digest": digest, "keys": [anchor], "signatures": sigs,
}]}

expired := sig({"failures": object.union(clean, {"authenticTimestamp": "verification time is outside"})})

untrusted := sig({"key_id": null})

stranger := sig({"subject": {"C": "US", "ST": "WA", "O": "Other"}})

test_a_clean_signature_proves_the_digest_at_every_level_without_warnings if {
	every level in ["strict", "permissive", "audit"] {
		signatures.proven(img(req(level), [sig({})]), req(level)) == digest
		count(signatures.warnings(img(req(level), [sig({})]), [req(level)])) == 0
	}
}

test_strict_enforces_the_authentic_timestamp_permissive_logs_it if {
	not signatures.proven(img(req("strict"), [expired]), req("strict"))
	signatures.proven(img(req("permissive"), [expired]), req("permissive")) == digest
	some w in signatures.warnings(img(req("permissive"), [expired]), [req("permissive")])
	contains(w, "(level permissive): authenticTimestamp failed and is only logged")
}

test_authenticity_is_enforced_by_permissive_and_logged_by_audit if {
	every s in [untrusted, stranger] {
		not signatures.proven(img(req("permissive"), [s]), req("permissive"))
		signatures.proven(img(req("audit"), [s]), req("audit")) == digest
	}
	some w in signatures.warnings(img(req("audit"), [stranger]), [req("audit")])
	contains(w, "does not match the trusted identities")
}

test_integrity_and_the_digest_are_enforced_at_every_level if {
	every level in ["strict", "permissive", "audit"] {
		not signatures.proven(img(req(level), [sig({"error": "the signature does not verify"})]), req(level))
		not signatures.proven(img(req(level), [sig({"digest": "sha256:other"})]), req(level))
		not signatures.proven(img(req(level), [object.remove(sig({}), ["failures"])]), req(level))
	}
}

test_a_clean_signature_silences_the_warnings_of_another if {
	count(signatures.warnings(img(req("audit"), [untrusted, sig({})]), [req("audit")])) == 0
}

test_a_denial_names_the_enforced_validation if {
	some msg in signatures.violations(img(req("strict"), [expired]), [req("strict")])
	contains(msg, "notation trust policy: no Notation signature")
	contains(msg, "s: authenticTimestamp: verification time is outside")
}

test_skip_needs_no_facts if {
	r := {"format": "notation", "index": 0, "type": "skip", "level": "skip", "error": null}
	signatures.satisfied({"ref": {}, "signatures": []}, r)
	not signatures.needs_facts(r)
}
