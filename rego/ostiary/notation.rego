# METADATA
# description: |
#   Notation's validations (docs/signatures.md): which failed for one signature whose integrity
#   holds, and what the requirement's verification level does with each (enforce, log, skip), as
#   the Notary Project's trust policy specifies. The signature rules (ostiary.signatures) accept a
#   signature when no enforced validation failed and warn of the logged ones.
package ostiary.notation

import rego.v1

# action(req, v): what the requirement's level (spelled out by the translator) does with validation v.
action(req, v) := object.get(object.get(req, "validations", {}), v, "enforce")

# failures(req, f, s): validation -> why it failed, for one signature whose integrity holds.
# Authenticity is the chain to a certificate of the trust stores (Python, key_id) and the trusted
# identities (compared here); the others come from Python as they are (s.failures).
failures(req, f, s) := object.union(
	{v: why | some v, why in object.get(s, "failures", {}); is_string(why); v != "integrity"},
	authenticity(req, f, s),
)

authenticity(req, f, s) := {"authenticity": s.failures.authenticity} if {
	is_string(object.get(s, ["failures", "authenticity"], null))
} else := {"authenticity": "the signature's certificate chain does not contain any trusted certificate"} if {
	not object.get(s, "key_id", null) in f.keys
} else := {"authenticity": msg} if {
	not identity_matches(identities(req), s)
	msg := sprintf(
		"signing certificate %v does not match the trusted identities %v",
		[object.get(s, "subject_dn", "?"), identities(req)],
	)
} else := {}

identities(req) := object.get(req, "identities", [])

identity_matches(identities, s) if {
	some t in identities
	identity_ok(t, s)
}

# ---- Notation trusted identities (docs/signatures.md) ---------------------------------------------
# As Notation's trust policy: "*" trusts any signing certificate the anchors vouch for; an x509
# subject matches when every attribute it names has the same value in the signing certificate's
# subject (other attributes of the certificate are not compared).

identity_ok("*", _)

identity_ok(t, s) if {
	is_object(t)
	is_object(s.subject)
	every k, v in t {
		s.subject[k] == v
	}
}
