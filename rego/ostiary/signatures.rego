# METADATA
# description: |
#   Signature rules beyond Notary v1: decide from the verified signature facts
#   (input.images[i].signatures, one document per requirement, produced by Ostiary's verifiers;
#   docs/rego-input.md) whether an image satisfies every signature requirement of its policy
#   entry, and which digest it is pinned to. Formats: "simple" (Red Hat simple signing,
#   Portieris' `policy.simple`), "cosign" (key-based cosign signatures, Ostiary's
#   `policy.cosign`) and "notation" (Notation X.509 signatures, Ostiary's `policy.notation`).
#   Fail closed by construction: a requirement passes only when `proven` derives a digest from
#   facts gathered for exactly that requirement (the facts echo it: facts verified under one
#   requirement never satisfy another, stricter one), from a signature that verified with a key
#   of the requirement's Secrets, signs the digest the reference resolves to, and names an
#   identity the requirement's rule accepts. Every rule is a function of one image.
package ostiary.signatures

import rego.v1

import data.ostiary.notation

# ---- requirements (computed for the plan from the chosen entry) ---------------------------------

# requirements(c, system_ns, workload_ns): the signature requirements of the chosen entry `c`
# ({policy: head, entry}), in order. Key Secrets of an ImagePolicy come from its own namespace; of
# a ClusterImagePolicy from keySecretNamespace or Ostiary's namespace, never the workload's.
requirements(c, system_ns, workload_ns) := array.concat(
	array.concat(
		[simple_requirement(c, i, r, system_ns, workload_ns) |
			some i, r in object.get(c.entry.policy, ["simple", "requirements"], [])
		],
		[cosign_requirement(c, i, k, system_ns, workload_ns) |
			some i, k in object.get(c.entry.policy, ["cosign", "keys"], [])
		],
	),
	array.concat(
		keyless_requirements(c),
		[notation_requirement(c, n, system_ns, workload_ns) |
			n := c.entry.policy.notation
			is_object(n)
		],
	),
)

# One keyless requirement for policy.cosign.identities (the translator has anchored the regular
# expressions): a keyless bundle whose certificate one of the identities accepts must prove the digest.
keyless_requirements(c) := [{
	"format": "cosign",
	"index": 0,
	"type": "keyless",
	"identities": ids,
	"error": null,
}] if {
	ids := c.entry.policy.cosign.identities
	count(ids) > 0
} else := []

simple_requirement(c, i, r, system_ns, workload_ns) := {
	"format": "simple",
	"index": i,
	"type": r.type,
	"key_secret": {"name": object.get(r, "keySecret", null), "namespace": key_namespace(c, r, system_ns)},
	"identity": object.get(r, "signedIdentity", {"type": "matchRepoDigestOrExact"}),
	"store": {
		"url": object.get(c.entry.policy.simple, "storeURL", null),
		"secret": store_secret(c, system_ns),
	},
	"error": key_error(c, r, system_ns, workload_ns),
}

# One cosign requirement per entry of policy.cosign.keys: a signature by one of the public keys of
# its Secret must prove the digest. The translator spells the identity rule out (default
# matchRepository).
cosign_requirement(c, i, k, system_ns, workload_ns) := {
	"format": "cosign",
	"index": i,
	"type": "signedBy",
	"key_secret": {"name": object.get(k, "keySecret", null), "namespace": key_namespace(c, k, system_ns)},
	"identity": object.get(c.entry.policy.cosign, "signedIdentity", {"type": "matchRepository"}),
	"error": key_error(c, k, system_ns, workload_ns),
}

# One Notation requirement per entry with policy.notation (one trust policy): a signature whose chain
# reaches a certificate of the trust stores in caSecret, whose signing certificate matches one of the
# trusted identities (the translator parses them: "*" or {attribute: value}), must prove the digest;
# `validations` (spelled out by the translator from the level and its override) says which failures
# deny and which are only warned of. caSecret/caSecretNamespace follow the tenant rule of key secrets.
# Level skip needs no signature (type "skip": no facts are gathered, nothing is pinned).
notation_requirement(c, n, system_ns, workload_ns) := {
	"format": "notation",
	"index": 0,
	"type": "skip",
	"level": "skip",
	"error": null,
} if {
	n.level == "skip"
} else := {
	"format": "notation",
	"index": 0,
	"type": "signedBy",
	"key_secret": {"name": object.get(n, "caSecret", null), "namespace": key_namespace(c, secret_ref, system_ns)},
	"identities": object.get(n, "identities", []),
	"level": object.get(n, "level", "strict"),
	"validations": object.get(n, "validations", {}),
	"stores": object.get(n, "stores", ["ca"]),
	"error": key_error(c, secret_ref, system_ns, workload_ns),
} if {
	secret_ref := {
		"keySecret": object.get(n, "caSecret", null),
		"keySecretNamespace": object.get(n, "caSecretNamespace", null),
	}
}

policy_namespace(c, system_ns) := c.policy.namespace if is_string(c.policy.namespace)

else := system_ns

key_namespace(c, r, system_ns) := r.keySecretNamespace if {
	not is_string(c.policy.namespace)
	is_string(r.keySecretNamespace)
} else := policy_namespace(c, system_ns)

store_secret(c, system_ns) := {"name": name, "namespace": policy_namespace(c, system_ns)} if {
	name := c.entry.policy.simple.storeSecret
	is_string(name)
} else := null

key_error(c, r, system_ns, workload_ns) := msg if {
	is_string(c.policy.namespace)
	is_string(r.keySecretNamespace)
	r.keySecretNamespace != c.policy.namespace
	msg := sprintf(
		"ImagePolicy %s reads key secrets from its own namespace %s, not keySecretNamespace %s; denied",
		[c.policy.name, c.policy.namespace, r.keySecretNamespace],
	)
} else := msg if {
	not is_string(c.policy.namespace)
	not is_string(system_ns)
	msg := "no system namespace is configured for ClusterImagePolicy key secrets; denied"
} else := msg if {
	not is_string(c.policy.namespace)
	ns := key_namespace(c, r, system_ns)
	ns == workload_ns
	ns != system_ns
	msg := sprintf(
		concat("", [
			"ClusterImagePolicy %s would read key secret %v from the workload's own namespace %s; ",
			"a cluster policy's keys never come from there; denied",
		]),
		[c.policy.name, object.get(r, "keySecret", null), ns],
	)
} else := null

# needs_facts: the requirement is verified by Ostiary's verifiers (the others decide without facts).
needs_facts(req) if {
	req.type == "signedBy"
	req.error == null
}

needs_facts(req) if {
	req.type == "keyless"
	req.error == null
}

# ---- the proof ----------------------------------------------------------------------------------

facts_for(img, req) := [f |
	some f in object.get(img, "signatures", [])
	f.requirement == req
]

# proven(img, req): the digest a signedBy requirement's facts prove for this image.
proven(img, req) := f.digest if {
	needs_facts(req)
	some f in facts_for(img, req)
	f.verified == true
	f.format == req.format
	is_string(f.digest)
	startswith(f.digest, "sha256:")
	digest_ok(img, f.digest)
	some s in f.signatures
	accepted(img, req, f, s)
}

digest_ok(img, _) if not is_string(img.ref.digest)

digest_ok(img, digest) if img.ref.digest == digest

accepted(img, req, f, s) if {
	req.format != "notation"
	s.error == null
	s.key_id in f.keys
	s.digest == f.digest
	identity_accepted(img.ref, req, s)
}

# keyless (policy.cosign.identities): no key; the certificate, verified offline against the trusted
# root in Python, must be accepted by one of the identities.
accepted(_, req, f, s) if {
	req.type == "keyless"
	s.error == null
	s.digest == f.digest
	some id in req.identities
	keyless_ok(id, s.certificate)
}

# notation: integrity (s.error: the envelope, the signature over it with the signing certificate's
# key, the signed descriptor) always holds; every other validation that failed must be one the
# level only logs (notation_failures; notation_warnings reports them).
accepted(_, req, f, s) if {
	req.format == "notation"
	s.error == null
	s.digest == f.digest
	is_object(s.failures) # every validation was reported (app/signatures/notation.py)
	every v, _ in notation.failures(req, f, s) {
		notation.action(req, v) != "enforce"
	}
}

keyless_ok(id, cert) if {
	keyless_value_ok(id.issuer, id.issuer_regex, cert.issuer)
	some subject in cert.subjects
	keyless_value_ok(id.subject, id.subject_regex, subject)
	every name, value in id.extensions {
		cert.extensions[name] == value
	}
}

keyless_value_ok(exact, _, value) if {
	is_string(exact)
	value == exact
}

keyless_value_ok(null, pattern, value) if {
	is_string(pattern)
	is_string(value)
	regex.match(pattern, value)
}

identity_accepted(ref, req, s) if {
	req.format == "simple"
	identity_ok(ref, req.identity, s.identity_ref)
}

identity_accepted(ref, req, s) if {
	req.format == "cosign"
	cosign_identity_ok(ref, req.identity, s)
}

# notation_warnings(img, req): what the level only logs, for a requirement a signature satisfies: none
# when one accepted signature passed every validation, else the logged failures of the accepted ones.
notation_warnings(img, req) := set() if {
	some f in facts_for(img, req)
	some s in f.signatures
	accepted(img, req, f, s)
	count(notation.failures(req, f, s)) == 0
} else := {msg |
	some f in facts_for(img, req)
	some s in f.signatures
	accepted(img, req, f, s)
	some v, why in notation.failures(req, f, s)
	notation.action(req, v) == "log"
	msg := sprintf("notation trust policy (level %v): %s failed and is only logged at this level: %s: %v", [req.level, v, s.source, why])
}

# warnings(img, reqs): for each satisfied requirement, the validations its level only logs.
warnings(img, reqs) := {msg |
	some req in reqs
	req.format == "notation"
	req.type == "signedBy"
	satisfied(img, req)
	some msg in notation_warnings(img, req)
}

satisfied(_, req) if req.type == "insecureAcceptAnything"

satisfied(_, req) if req.type == "skip"

satisfied(img, req) if proven(img, req)

# ---- identity rules (containers/image signedIdentity, as Portieris passes them) ------------------

exact(ref, sid) if {
	sid.name == ref.name
	is_string(ref.tag)
	sid.tag == ref.tag
	sid.digest == null
}

exact(ref, sid) if {
	sid.name == ref.name
	not is_string(ref.tag)
	sid.tag == null
	sid.digest == ref.digest
}

repo_digest_or_exact(ref, sid) if {
	is_string(ref.tag)
	exact(ref, sid)
}

repo_digest_or_exact(ref, sid) if {
	not is_string(ref.tag)
	sid.name == ref.name
}

identity_ok(ref, identity, sid) if {
	identity.type == "matchRepoDigestOrExact"
	repo_digest_or_exact(ref, sid)
}

identity_ok(ref, identity, sid) if {
	identity.type == "matchExact"
	exact(ref, sid)
}

identity_ok(ref, identity, sid) if {
	identity.type == "matchRepository"
	sid.name == ref.name
}

identity_ok(_, identity, sid) if {
	identity.type == "matchExactReference"
	sid.name == identity.reference.name
	sid.tag == identity.reference.tag
	sid.digest == null
}

identity_ok(_, identity, sid) if {
	identity.type == "matchExactRepository"
	sid.name == identity.repository
}

identity_ok(ref, identity, sid) if {
	identity.type == "remapIdentity"
	repo_digest_or_exact(object.union(ref, {"name": remapped(ref.name, identity)}), sid)
}

# ---- cosign identity rule (docs/signatures.md) ----------------------------------------------------
# A legacy cosign signature signs `critical.identity.docker-reference`, the repository the signer
# named (cosign writes no tag); its name must be the image's repository (matchRepository, the
# default), the one named (matchExactRepository), or the image's remapped (remapIdentity). Tags and
# digests in it are ignored: the signed digest is checked on its own. A bundle signs no name (its
# in-toto subject carries a digest only): it proves the digest, and no identity rule applies.

cosign_identity_ok(_, _, s) if s.identity == null

cosign_identity_ok(ref, identity, s) if {
	identity.type == "matchRepository"
	s.identity_ref.name == ref.name
}

cosign_identity_ok(_, identity, s) if {
	identity.type == "matchExactRepository"
	s.identity_ref.name == identity.repository
}

cosign_identity_ok(ref, identity, s) if {
	identity.type == "remapIdentity"
	s.identity_ref.name == remapped(ref.name, identity)
}

# remapped: the image's name with `prefix` replaced by `signedPrefix` (whole path components
# only); the name unchanged when the prefix does not apply.
remapped(name, identity) := identity.signedPrefix if {
	name == identity.prefix
} else := concat("", [identity.signedPrefix, substring(name, count(identity.prefix), -1)]) if {
	startswith(name, concat("", [identity.prefix, "/"]))
} else := name

# ---- the digest pinned, and why not -------------------------------------------------------------

proven_digests(img, reqs) := {d | some req in reqs; d := proven(img, req)}

# pinned_digest: the one digest every signedBy requirement proves (undefined when none proves one).
pinned_digest(img, reqs) := d if {
	ds := proven_digests(img, reqs)
	count(ds) == 1
	some d in ds
	every req in reqs {
		satisfied(img, req)
	}
}

violations(img, reqs) := {msg |
	some req in reqs
	not satisfied(img, req)
	msg := problem(img, req)
} | disagreeing(img, reqs)

disagreeing(img, reqs) := {msg |
	ds := proven_digests(img, reqs)
	count(ds) > 1
	msg := sprintf("signature requirements prove different digests %v; denied", [sort([d | some d in ds])])
}

label(req) := sprintf("%s signing requirement %d", [req.format, req.index]) if {
	req.format == "simple"
} else := "cosign keyless requirement" if {
	req.format == "cosign"
	req.type == "keyless"
} else := sprintf("cosign key requirement %d", [req.index]) if {
	req.format == "cosign"
} else := "notation trust policy" if {
	req.format == "notation"
} else := sprintf("%v requirement %v", [object.get(req, "format", "?"), object.get(req, "index", "?")])

problem(img, req) := sprintf("%s is `reject`: no image may run under it", [label(req)]) if {
	req.type == "reject"
} else := sprintf("%s: %s", [label(req), req.error]) if {
	is_string(req.error)
} else := sprintf("%s: signature facts unavailable (not gathered for this image); denied", [label(req)]) if {
	count(facts_for(img, req)) == 0
} else := sprintf("%s: %s", [label(req), why_not(img, req)])

why_not(img, req) := msg if {
	some f in facts_for(img, req)
	f.verified != true
	msg := sprintf("not verified: %v", [object.get(f, "error", "no reason given")])
} else := msg if {
	some f in facts_for(img, req)
	count(f.signatures) == 0
	msg := sprintf("no signature found for %s (%v)", [img.ref.name, f.digest])
} else := msg if {
	req.type == "keyless"
	some f in facts_for(img, req)
	msg := sprintf("no keyless signature of %s (%v) has a certificate of an accepted identity %v: %s", [
		img.ref.name, f.digest, [id.written | some id in req.identities],
		concat("; ", [keyless_problem(f, s) | some s in f.signatures]),
	])
} else := msg if {
	req.format == "notation"
	some f in facts_for(img, req)
	msg := sprintf("no Notation signature of %s (%v) is trusted by trust store secret %v/%v: %s", [
		img.ref.name, f.digest,
		object.get(req, ["key_secret", "namespace"], "?"), object.get(req, ["key_secret", "name"], "?"),
		concat("; ", [signature_problem(img, req, f, s) | some s in f.signatures]),
	])
} else := msg if {
	some f in facts_for(img, req)
	msg := sprintf("no signature of %s (%v) verifies with key secret %v/%v under identity rule %v: %s", [
		img.ref.name, f.digest,
		object.get(req, ["key_secret", "namespace"], "?"), object.get(req, ["key_secret", "name"], "?"),
		object.get(req, ["identity", "type"], "?"),
		concat("; ", [signature_problem(img, req, f, s) | some s in f.signatures]),
	])
}

signature_problem(img, req, f, s) := sprintf("%s: %v", [s.source, s.error]) if {
	s.error != null
} else := sprintf("%s: signs digest %v, not %v (a signature of another image)", [s.source, s.digest, f.digest]) if {
	req.format == "notation"
	s.digest != f.digest
} else := msg if {
	req.format == "notation"
	msg := sprintf("%s: %s", [s.source, concat("; ", [sprintf("%s: %v", [v, why]) |
		some v, why in notation.failures(req, f, s)
		notation.action(req, v) == "enforce"
	])])
} else := sprintf("%s: signed by key %v, which is not in the key secret", [s.source, s.key_id]) if {
	not s.key_id in f.keys
} else := sprintf("%s: signs digest %v, not %v (a signature of another image)", [s.source, s.digest, f.digest]) if {
	s.digest != f.digest
} else := sprintf("%s: signed identity %v is not accepted for %s by %v", [
	s.source, s.identity,
	img.ref.normalized, object.get(req, ["identity", "type"], "?"),
])

keyless_problem(f, s) := msg if {
	s.error != null
	msg := sprintf("%s: %v%s", [s.source, s.error, keyless_whose(s)])
} else := msg if {
	s.digest != f.digest
	msg := sprintf("%s: signs digest %v, not %v (a signature of another image)", [s.source, s.digest, f.digest])
} else := msg if {
	c := s.certificate
	msg := sprintf(
		"%s: certificate of issuer %v, subject %v, extensions %v: no identity accepts it",
		[s.source, c.issuer, c.subjects, c.extensions],
	)
}

keyless_whose(s) := sprintf(" (certificate of issuer %v, subject %v)", [s.certificate.issuer, s.certificate.subjects]) if {
	is_object(s.certificate)
} else := ""
