# METADATA
# description: |
#   Trust rules: decide from the verified Notary facts (input.images[i].trust, produced by
#   Ostiary's TUF verifier; docs/rego-input.md) whether an image whose policy enables trust may
#   run, and which digest it is pinned to.
#   Fail closed by construction: an image passes only when `satisfied` proves every requirement
#   from the facts; the specific violations below only explain why. Anything missing, malformed
#   or unverified leaves `satisfied` undefined, and then a violation is always reported.
#   Every rule here is a function of one image and its trust requirement (`req`, computed by
#   data.ostiary.main from the policy): this package reads neither input nor main, so there is
#   no import cycle, and the cost of a decision is linear in the number of images.
package ostiary.trust

import rego.v1

verified(img) if img.trust.verified == true

released(img, tag) := d if {
	d := img.trust.targets[tag].released
	is_string(d)
	startswith(d, "sha256:")
}

gun(img) := object.get(img, ["trust", "gun"], img.ref.name)

signers(img) := s if {
	s := img.trust.signers
	is_array(s)
} else := []

# ---- the proof --------------------------------------------------------------------------------

# facts_fit: the facts are about this image, from the verifier, from the required trust server
# (policies carry it normalized, as the verifier reports it), for exactly the required signers
# with exactly the required keys, on a root trusted as the requirement says: pinned by exactly
# the required pins, or (no pins required) recorded or first used. `req.root_pins` and
# `req.signer_keys` are what the secrets and pins hold now (main.proven_requirement); a
# requirement without them proves nothing.
facts_fit(img, req) if {
	is_string(req.server)
	verified(img)
	img.trust.server == req.server
	img.trust.gun == img.ref.name
	is_array(img.trust.signers)
	[s.secret | some s in img.trust.signers] == [s.name | some s in req.signer_secrets]
	signer_keys_proven(img, req)
	root_proven(img, req)
}

signer_keys_proven(img, req) if {
	is_array(req.signer_keys)
	[object.get(s, "key", null) | some s in img.trust.signers] == req.signer_keys
}

root_proven(img, req) if {
	is_array(req.root_pins)
	count(req.root_pins) > 0
	img.trust.root_trust == "pinned"
	is_array(img.trust.root_pins)
	sort(img.trust.root_pins) == req.root_pins
}

root_proven(img, req) if {
	req.root_pins == []
	img.trust.root_trust in {"first-use", "recorded"}
	img.trust.root_pins == []
}

# satisfied is the only way an image with trust enabled passes.
satisfied(img, req) if {
	facts_fit(img, req)
	is_string(img.ref.tag)
	digest := released(img, img.ref.tag)
	digest_agrees(img, digest)
	every signer in img.trust.signers {
		signer_ok(img, signer, img.ref.tag, digest)
	}
}

satisfied(img, req) if {
	facts_fit(img, req)
	not is_string(img.ref.tag)
	digest_signed(img)
}

digest_agrees(img, _) if not is_string(img.ref.digest)

digest_agrees(img, digest) if img.ref.digest == digest

digest_signed(img) if {
	is_string(img.ref.digest)
	some tag, target in img.trust.targets
	released(img, tag) == img.ref.digest
	every signer in img.trust.signers {
		signer_ok(img, signer, tag, img.ref.digest)
	}
}

# signer_ok: the signer's role signed `digest` for `tag`, and a key from its secret signed the role.
signer_ok(img, signer, tag, digest) if {
	signer.error == null
	is_string(signer.role)
	key_signed(img, signer)
	img.trust.targets[tag].roles[signer.role] == digest
}

# pinned_digest: the digest an admitted image is pinned to (defined only when satisfied).
pinned_digest(img, req) := released(img, img.ref.tag) if {
	satisfied(img, req)
	is_string(img.ref.tag)
} else := img.ref.digest if {
	satisfied(img, req)
	not is_string(img.ref.tag)
}

# ---- why not: specific explanations -------------------------------------------------------------

# check(img, req): the outcome of the trust proof for one image whose policy enables trust
# (`req.enabled`): {"violations": set(), "pin": the digest} when `satisfied`, else
# {"violations": why, "pin": null}. `satisfied` is proved first and the explanations are computed
# only when it fails: each explanation contradicts a condition of `satisfied` (facts_fit, the
# released digest, digest_agrees, digest_signed, signer_ok), so none can hold together with it,
# and this gives the answer computing them all would give. trust_test.rego proves that over the
# fact space of its fixtures (test_no_explanation_holds_with_satisfied). When it fails, the
# explanations, and a catch-all so that an image that is not `satisfied` is never without one
# (partial or unexpected facts deny with a generic reason).
check(img, req) := {"violations": set(), "pin": d} if {
	d := pinned_digest(img, req)
} else := {"violations": why_not(img, req), "pin": null}

violations(img, req) := check(img, req).violations

why_not(img, req) := e if {
	e := explanations(img, req)
	count(e) > 0
} else := {"trust requirements are not met by the trust facts (incomplete or malformed facts); denied"}

explanations(img, req) := union({
	no_server(img, req),
	unavailable(img, req),
	unverified(img),
	other_gun(img),
	other_server(img, req),
	other_signers(img, req),
	other_signer_keys(img, req),
	other_root(img, req),
	unsigned_tag(img),
	refused_tag(img),
	other_digest(img),
	signer_problems(img),
	unsigned_digest(img),
})

no_server(img, req) := {msg |
	not is_string(req.server)
	msg := sprintf(
		"no trust server is known for registry %s: set policy.trust.trustServer in the policy",
		[img.ref.registry],
	)
}

unavailable(img, req) := {"trust data unavailable (not gathered for this image); denied" |
	is_string(req.server)
	not img.trust
}

unverified(img) := {msg |
	img.trust
	not verified(img)
	msg := sprintf(
		"trust data for %s from %v could not be verified: %v",
		[gun(img), object.get(img.trust, "server", null), object.get(img.trust, "error", "no reason given")],
	)
}

other_gun(img) := {msg |
	verified(img)
	img.trust.gun != img.ref.name
	msg := sprintf("trust facts are for %v, not %s; denied", [img.trust.gun, img.ref.name])
}

# Facts from another server than the one the policy in force names: gathered under a policy that
# changed during this admission (the next attempt gathers from the new server).
other_server(img, req) := {msg |
	verified(img)
	is_string(req.server)
	img.trust.server != req.server
	msg := sprintf(
		"trust facts come from %v, but the policy requires trust server %s (did the policy just change?); denied",
		[img.trust.server, req.server],
	)
}

other_signers(img, req) := {msg |
	verified(img)
	[s.secret | some s in signers(img)] != [s.name | some s in req.signer_secrets]
	msg := sprintf(
		"trust facts cover signers %v, but the policy requires %v; denied",
		[[s.secret | some s in signers(img)], [s.name | some s in req.signer_secrets]],
	)
}

# Facts verified with another key than the signer secret holds now (rotated during this admission).
other_signer_keys(img, req) := {msg |
	verified(img)
	[s.secret | some s in signers(img)] == [s.name | some s in req.signer_secrets]
	some i, s in signers(img)
	object.get(s, "key", null) != object.get(req, ["signer_keys", i], null)
	msg := sprintf(
		"trust facts for signer secret %v were verified with key %v, but the secret holds %v now (did the key just change?); denied",
		[s.secret, object.get(s, "key", null), object.get(req, ["signer_keys", i], null)],
	)
}

# Facts verified on another root trust than the requirement demands: a first-use or recorded root
# for an entry with pins, other pins, or pinned facts for an entry without pins.
other_root(img, req) := {msg |
	verified(img)
	not root_proven(img, req)
	msg := sprintf(
		"trust facts were verified on a %v root (pins %v), but the requirement in force demands %s %s",
		[
			object.get(img.trust, "root_trust", null), object.get(img.trust, "root_pins", null),
			root_demand(req), "(did the policy or its root pins just change?); denied",
		],
	)
}

root_demand(req) := sprintf("the root pinned by %v", [req.root_pins]) if {
	count(req.root_pins) > 0
} else := "an unpinned root (first use or recorded)" if {
	req.root_pins == []
} else := "a root requirement this decision does not have"

unsigned_tag(img) := {msg |
	verified(img)
	is_string(img.ref.tag)
	not released(img, img.ref.tag)
	not docker_refusal(img, img.ref.tag)
	msg := sprintf("tag %s is not signed in %s (neither targets/releases nor targets has it)", [img.ref.tag, gun(img)])
}

# The tag is signed, but not so that Docker would pull it (e.g. first found in targets/releases/x,
# or without a sha256): the verifier says why in `refused`.
refused_tag(img) := {msg |
	verified(img)
	is_string(img.ref.tag)
	not released(img, img.ref.tag)
	reason := docker_refusal(img, img.ref.tag)
	msg := sprintf("tag %s in %s is refused as Docker refuses it: %s", [img.ref.tag, gun(img), reason])
}

docker_refusal(img, tag) := reason if {
	reason := img.trust.targets[tag].refused
	is_string(reason)
	not contains(reason, "is not signed in") # unsigned: the message above says so
}

other_digest(img) := {msg |
	verified(img)
	is_string(img.ref.tag)
	is_string(img.ref.digest)
	d := released(img, img.ref.tag)
	d != img.ref.digest
	msg := sprintf("digest %s is not the signed digest of tag %s (signed: %s)", [img.ref.digest, img.ref.tag, d])
}

signer_problems(img) := {msg |
	verified(img)
	is_string(img.ref.tag)
	digest := released(img, img.ref.tag)
	some signer in signers(img)
	not signer_ok(img, signer, img.ref.tag, digest)
	msg := signer_problem(img, signer, img.ref.tag, digest)
}

unsigned_digest(img) := {msg |
	verified(img)
	not is_string(img.ref.tag)
	not digest_signed(img)
	msg := sprintf("digest %v is not signed under any tag in %s%s", [img.ref.digest, gun(img), signer_suffix(img)])
}

signer_suffix(img) := sprintf(" by the required signers (%s)", [concat(", ", [sprintf("%v", [s.name]) | some s in signers(img)])]) if {
	count(signers(img)) > 0
} else := ""

# signer_problem explains why signer_ok does not hold (it decides nothing). Values that may be
# absent are read with object.get: in Rego `not f(x.y)` fails, not succeeds, when x.y is absent.
signer_problem(img, signer, tag, digest) := msg if {
	object.get(signer, "error", "no error field") != null
	msg := sprintf("%s: %v", [who(signer), object.get(signer, "error", "no error field")])
} else := msg if {
	not is_string(object.get(signer, "role", null))
	msg := sprintf("%s: no role in the trust facts", [who(signer)])
} else := msg if {
	not object.get(img.trust, ["roles", signer.role], false)
	msg := sprintf("%s: %s has no delegation role %s", [who(signer), gun(img), signer.role])
} else := msg if {
	not key_signed(img, signer)
	msg := sprintf("%s: role %s is not signed with the key in the secret", [who(signer), signer.role])
} else := msg if {
	not is_string(object.get(img.trust, ["targets", tag, "roles", signer.role], null))
	msg := sprintf("%s: role %s did not sign tag %s", [who(signer), signer.role, tag])
} else := msg if {
	signed := object.get(img.trust, ["targets", tag, "roles", signer.role], null)
	signed != digest
	msg := sprintf("%s: role %s signed %s for tag %s, not %s", [who(signer), signer.role, signed, tag, digest])
}

who(signer) := sprintf("signer %s (secret %v)", [signer.name, object.get(signer, "secret", "?")]) if {
	is_string(signer.name)
} else := sprintf("required signer (secret %v)", [object.get(signer, "secret", "?")])

key_signed(img, signer) if {
	some keyid in signer.keyids
	keyid in img.trust.roles[signer.role].signed_by
}
