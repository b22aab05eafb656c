# METADATA
# description: |
#   Trust rules: decide from the verified Notary facts (input.images[i].trust, produced by
#   Ostiary's TUF verifier; docs/rego-input.md) whether an image whose policy enables trust may
#   run, and which digest it is pinned to. Anything missing or unverified denies.
package ostiary.trust

import rego.v1

import data.ostiary.main

checked contains [img, req] if {
	some img in input.images
	req := main.requirements[img.id].trust
	req.enabled == true
}

verified(img) if img.trust.verified == true

released(img, tag) := d if {
	d := img.trust.targets[tag].released
	is_string(d)
}

# pinned_digest: the digest an admitted image is pinned to.
pinned_digest(img) := released(img, img.ref.tag) if is_string(img.ref.tag)

pinned_digest(img) := img.ref.digest if {
	not is_string(img.ref.tag)
	is_string(img.ref.digest)
}

violations[img.id] contains msg if {
	some [img, req] in checked
	not is_string(req.server)
	msg := sprintf(
		"no trust server is known for registry %s: set policy.trust.trustServer in the policy",
		[img.ref.registry],
	)
}

violations[img.id] contains msg if {
	some [img, req] in checked
	is_string(req.server)
	not img.trust
	msg := "trust data unavailable (not gathered for this image); denied"
}

violations[img.id] contains msg if {
	some [img, _] in checked
	img.trust
	not verified(img)
	msg := sprintf("trust data for %s from %s could not be verified: %v", [img.trust.gun, img.trust.server, img.trust.error])
}

violations[img.id] contains msg if {
	some [img, req] in checked
	verified(img)
	count(img.trust.signers) != count(req.signer_secrets)
	msg := sprintf("expected facts for %d signers, got %d; denied", [count(req.signer_secrets), count(img.trust.signers)])
}

# ---- tag references (with or without a digest) ----

violations[img.id] contains msg if {
	some [img, _] in checked
	verified(img)
	is_string(img.ref.tag)
	not released(img, img.ref.tag)
	msg := sprintf("tag %s is not signed in %s (neither targets/releases nor targets has it)", [img.ref.tag, img.trust.gun])
}

violations[img.id] contains msg if {
	some [img, _] in checked
	verified(img)
	is_string(img.ref.tag)
	is_string(img.ref.digest)
	d := released(img, img.ref.tag)
	d != img.ref.digest
	msg := sprintf("digest %s is not the signed digest of tag %s (signed: %s)", [img.ref.digest, img.ref.tag, d])
}

violations[img.id] contains msg if {
	some [img, _] in checked
	verified(img)
	is_string(img.ref.tag)
	digest := released(img, img.ref.tag)
	some signer in img.trust.signers
	msg := signer_problem(img, signer, img.ref.tag, digest)
}

# ---- digest-only references: the digest must be released under some tag, by every signer ----

violations[img.id] contains msg if {
	some [img, _] in checked
	verified(img)
	not is_string(img.ref.tag)
	not digest_signed(img)
	msg := sprintf("digest %s is not signed under any tag in %s%s", [img.ref.digest, img.trust.gun, signer_suffix(img)])
}

digest_signed(img) if {
	some tag, target in img.trust.targets
	target.released == img.ref.digest
	every signer in img.trust.signers {
		not signer_problem(img, signer, tag, img.ref.digest)
	}
}

signer_suffix(img) := sprintf(" by the required signers (%s)", [concat(", ", [s.name | some s in img.trust.signers])]) if {
	count(img.trust.signers) > 0
} else := ""

# signer_problem is undefined when the signer signed `digest` for `tag` with the key its secret
# holds; otherwise it is the first problem found.
signer_problem(img, signer, tag, digest) := msg if {
	is_string(signer.error)
	msg := sprintf("signer %s (secret %s): %s", [signer.name, signer.secret, signer.error])
} else := msg if {
	not img.trust.roles[signer.role]
	msg := sprintf("signer %s (secret %s): %s has no delegation role %s", [signer.name, signer.secret, img.trust.gun, signer.role])
} else := msg if {
	not key_signed(img, signer)
	msg := sprintf("signer %s (secret %s): role %s is not signed with the key in the secret", [signer.name, signer.secret, signer.role])
} else := msg if {
	not img.trust.targets[tag].roles[signer.role]
	msg := sprintf("signer %s (secret %s): role %s did not sign tag %s", [signer.name, signer.secret, signer.role, tag])
} else := msg if {
	signed := img.trust.targets[tag].roles[signer.role]
	signed != digest
	msg := sprintf("signer %s (secret %s): role %s signed %s for tag %s, not %s", [signer.name, signer.secret, signer.role, signed, tag, digest])
}

key_signed(img, signer) if {
	some keyid in signer.keyids
	keyid in img.trust.roles[signer.role].signed_by
}
