# METADATA
# description: |
#   Ostiary's two queries. `plan`: which policy entry applies to each image and what facts it
#   needs. `decision`: the verdict per image (reasons, warnings, digest to pin) and for the
#   request, composed with the custom rules in data.ostiary.custom.<name>.
#   The input document is described in docs/rego-input.md.
package ostiary.main

import rego.v1

import data.ostiary.matching
import data.ostiary.signatures
import data.ostiary.trust

# Portieris: if the namespace has any ImagePolicy, only those apply; else ClusterImagePolicies.
# Arrays, not sets: a set would hash every policy's whole document to insert it, in every query.
namespace_policies := [doc.policy | some doc in object.get(data.ostiary_policies.namespaced, input.request.namespace, {})]

cluster_policies := [doc.policy | some doc in data.ostiary_policies.cluster]

applicable := namespace_policies if {
	count(namespace_policies) > 0
} else := cluster_policies

default scope := "the ClusterImagePolicies"

scope := sprintf("the ImagePolicies of namespace %s", [input.request.namespace]) if {
	count(namespace_policies) > 0
}

# The applicable entries that can match an image's host, as [policy head, entry] pairs: each
# policy carries its entries indexed by host bucket (policy.by_host, built by the translator), so
# an image is matched only against the entries of its own host's buckets, never against all of
# them, and no index of every entry is built per query. For a Pod of few images each applicable
# policy's index is looked in; for many images, one index per query of which policies have entries
# in which bucket is built first, so the cost per image does not grow with the number of policies
# (both give the same entries).
many_images := 32

entries_for(ref) := entries_in_policies(ref) if {
	count(input.images) <= many_images
} else := entries_in_buckets(ref)

entries_in_policies(ref) := array.concat(
	[[policy.head, policy.repositories[i]] |
		key := concat("", ["=", ref.registry])
		some policy in applicable
		some i in object.get(policy.by_host, key, [])
	],
	[[policy.head, policy.repositories[i]] |
		some policy in applicable
		some w in policy.wild
		host_in(ref.registry, w[1], w[2])
		some i in policy.by_host[w[0]]
	],
)

# host_in: `host` is one whose labels end in `suffix` (matching.host_keys gives that bucket).
host_in(_, "", _)

host_in(host, suffix, _) if host == suffix

host_in(host, _, dotted) if endswith(host, dotted)

entries_in_buckets(ref) := [[policy.head, policy.repositories[i]] |
	some key in matching.host_keys(ref.registry)
	some n in object.get(policies_by_bucket, key, set())
	policy := applicable[n]
	some i in policy.by_host[key]
]

# policies_by_bucket: bucket -> the positions in `applicable` of the policies with entries in it.
policies_by_bucket[key] contains n if {
	some n, policy in applicable
	some key, _ in policy.by_host
}

# selected: image id -> the chosen {policy, entry}. A complete rule, so it is computed once
# per query however often it is looked up.
selected := {img.id: c |
	some img in input.images
	img.ref.valid == true
	c := matching.best_of(img.ref, entries_for(img.ref))
}

# Ostiary's own namespace and the default trust server per registry are defined once, in Python
# (app/policies/model.py, app/notary/servers.py), and arrive in input.config. Without them a
# ClusterImagePolicy's signer secrets have no namespace and no registry has a default trust
# server: both deny, never allow.
default system_namespace := null

system_namespace := ns if {
	ns := input.config.system_namespace
	is_string(ns)
}

# Signer secrets of an ImagePolicy live in its namespace; those of a ClusterImagePolicy in
# Ostiary's own namespace, never in the workload's (a tenant must not bring its own key).
secret_namespace(policy) := policy.namespace if is_string(policy.namespace)

else := system_namespace

requirements := {img.id: image_requirements(c, img.ref) |
	some img in input.images
	c := selected[img.id]
}

# image_requirements: what the chosen entry asks of the image. What depends on the policy alone
# (entry.needs: trust enabled, its server, the Secrets' names, whether it names signature
# verifiers, mutateImage) the translator computed (app/policies/translate.py entry_needs); here
# only what depends on the request and the configuration is added. An entry without `needs` (a
# document of another translator) has no requirements, and its image is denied (image_check).
image_requirements(c, ref) := {
	"trust": {
		"enabled": n.trust == true,
		"server": server_of(n, ref),
		"signer_secrets": [{"name": name, "namespace": ns} | some name in n.signers],
		# Ostiary extension: pinned root-of-trust material, from the same namespace as signer secrets.
		"root_secrets": [{"name": name, "namespace": ns} | some name in n.roots],
	},
	# Signature requirements beyond Notary v1 (rego/ostiary/signatures.rego), in policy order.
	"signatures": signature_requirements(c, n),
	"mutate": n.mutate != false,
} if {
	n := c.entry.needs
	ns := secret_namespace(c.policy)
}

server_of(n, ref) := n.server if {
	is_string(n.server)
} else := server if {
	server := input.config.trust_servers[ref.registry]
	is_string(server)
} else := null

# Only an entry that names a signature verifier can have signature requirements; a `needs` without
# the flag derives them (never skips them).
signature_requirements(c, n) := [] if {
	object.get(n, "signatures", true) == false
} else := signatures.requirements(c, system_namespace, input.request.namespace)

policy_summary(c) := {
	"kind": c.policy.kind,
	"name": c.policy.name,
	"namespace": c.policy.namespace,
	"repository": c.entry.name,
	"index": c.entry.index,
	"mode": c.policy.mode,
}

# needs_trust_facts: some image's entry requires trust, so its verified facts must be gathered
# before the decision can be made.
needs_trust_facts if {
	some r in requirements
	r.trust.enabled == true
}

needs_trust_facts if {
	some r in requirements
	some req in r.signatures
	signatures.needs_facts(req)
}

plan_images := {"images": [image_plan(img) | some img in input.images]}

# METADATA
# description: |
#   Which entry applies to each image and what facts it needs (Ostiary's first query). When no
#   image needs trust facts, the decision is already known and comes with it, so the admission
#   costs one query instead of two (the input of a second query would be the same).
# entrypoint: true
plan := object.union(plan_images, {"decision": decision}) if {
	not needs_trust_facts
} else := plan_images

image_plan(img) := {
	"id": img.id,
	"policy": policy_summary(selected[img.id]),
	"requirements": requirements[img.id],
} if {
	selected[img.id]
} else := {"id": img.id, "policy": null, "requirements": null}

# ---- violations per image id -------------------------------------------------------------

# images_by_id: each input image under its id (a complete rule: built once per query), so
# per-image lookups never rescan input.images.
images_by_id := {img.id: img | some img in input.images}

# checks: image id -> what the image's proofs give, computed once per image and read by the
# reasons, the pin and the plan alike: {"violations": the set of reasons it is refused (empty when
# none), "pin": the digest its trust or signature proof gives when nothing is refused, else null}.
# A complete rule built in one pass over the images, each image's from that image alone: the cost
# of a decision grows linearly with the number of images.
checks := {img.id: image_check(img) | some img in input.images}

violations := {id: c.violations | some id, c in checks}

# An invalid reference and an image no entry matches have one reason each and nothing to prove;
# only an image with a chosen entry is checked against its requirements.
image_check(img) := {"violations": unparsable(img), "pin": null} if {
	not img.ref.valid == true
} else := {"violations": unmatched(img), "pin": null} if {
	not selected[img.id]
} else := {"violations": v, "pin": pin_of(v, t.pin, s.pin)} if {
	t := trust_check(img)
	s := signature_check(img, t.pin)
	v := ((unsupported(img) | unreadable(img)) | t.violations) | s.violations
}

# The trust proof's digest first (both must agree when both are required: other_format_digest),
# and only for an image nothing refuses.
pin_of(v, tpin, spin) := tpin if {
	count(v) == 0
	tpin != null
} else := spin if {
	count(v) == 0
	spin != null
} else := null

# An image whose reference is not valid, or that carries no readable `ref` at all (an input Ostiary
# never builds), has exactly one reason: a missing field is a refusal, never a pass.
unparsable(img) := {invalid_message(img.ref)} if {
	is_object(img.ref)
} else := {"invalid image reference: the input carries no reference for this image"}

unmatched(img) := {msg |
	img.ref.valid == true
	not selected[img.id]
	msg := sprintf("no repository entry in %s matches %s (no match means deny)", [scope, img.ref.normalized])
}

unsupported(img) := {msg |
	c := selected[img.id]
	some kind in c.entry.needs.unsupported
	msg := sprintf("policy.%s of %s %s is not supported by Ostiary; denied rather than unchecked", [kind, c.policy.kind, c.policy.name])
}

# An image whose chosen entry gave no requirements (an entry the library cannot read) is denied.
unreadable(img) := {msg |
	c := selected[img.id]
	not requirements[img.id]
	msg := sprintf(
		"entry %v of %s %s cannot be read by this library (translated by another version?); denied",
		[c.entry.name, c.policy.kind, c.policy.name],
	)
}

# trust_check: the trust proof of an image whose entry enables trust (trust.check), with what its
# secrets and pins hold now; nothing to prove otherwise.
trust_check(img) := trust.check(img, proven_requirement(req)) if {
	req := requirements[img.id].trust
	req.enabled == true
} else := {"violations": set(), "pin": null}

# Signature requirements: each must hold; with trust enabled too, both must prove the same digest.
signature_check(img, tpin) := {"violations": (signatures.violations(img, reqs) | other_format_digest(tpin, spin)), "pin": spin} if {
	reqs := requirements[img.id].signatures
	count(reqs) > 0
	spin := signature_pin(img, reqs)
} else := {"violations": set(), "pin": null}

signature_pin(img, reqs) := d if {
	d := signatures.pinned_digest(img, reqs)
} else := null

other_format_digest(notary, signed) := {msg |
	notary != null
	signed != null
	notary != signed
	msg := sprintf(
		"Notary trust data signs %s but the signature requirements prove %s; both must sign the same digest; denied",
		[notary, signed],
	)
}

# proven_requirement: the trust requirement with what its secrets and pins hold now (Python reads
# them after gathering, input.trust_material), which the facts must prove they were verified with:
# the fingerprints of the root pins (the entry's rootSecrets, else serve --root-pins for its server)
# and of each signer secret's key, in the order of signer_secrets. A secret not read for this
# admission proves nothing ("unknown" never equals a fingerprint).
proven_requirement(req) := object.union(req, {
	"root_pins": required_root_pins(req),
	"signer_keys": [object.get(input, ["trust_material", "signer_secrets", secret_key(s)], "unknown") |
		some s in req.signer_secrets
	],
})

secret_key(s) := sprintf("%v/%v", [s.namespace, s.name])

required_root_pins(req) := sort([object.get(input, ["trust_material", "root_secrets", secret_key(s)], "unknown") |
	some s in req.root_secrets
]) if {
	count(req.root_secrets) > 0
} else := sort(pins) if {
	pins := input.trust_material.root_pins[req.server]
	is_array(pins)
} else := []

invalid_message(ref) := ref.error if {
	is_string(ref.error)
	startswith(ref.error, "invalid image reference")
} else := sprintf("invalid image reference: %v", [object.get(ref, "error", "no reason given")])

warn_mode(id) if selected[id].policy.mode == "warn"

# An image no entry matches, where every applicable policy is in warn mode, is a warning too:
# rolling a policy out in warn mode must not deny anything.
warn_mode(id) if {
	img := images_by_id[id]
	img.ref.valid == true
	not selected[id]
	count(applicable) > 0
	every policy in applicable {
		policy.mode == "warn"
	}
}

# A namespace ImagePolicy Ostiary refused (directory mode: invalid, over a bound, or not compiled
# by OPA) stays in its namespace as a policy of no entries with `refused` set
# (app/policies/translate.py refused_module): every image there is denied naming it, in any mode,
# while other namespaces and the ClusterImagePolicies are unaffected.
refusals contains msg if {
	some policy in applicable
	is_string(policy.refused)
	msg := sprintf(
		"ImagePolicy %s/%s is refused by Ostiary, so every image in namespace %s is denied until it is fixed: %s",
		[policy.namespace, policy.name, policy.namespace, policy.refused],
	)
}

reasons(id) := sort([m | some m in (refusals | violations[id])]) if count(refusals) > 0

else := [] if warn_mode(id)

else := sort([m | some m in violations[id]])

image_warnings(id) := array.concat(mode_warnings(id), signature_warnings(id))

mode_warnings(id) := sort([sprintf("warn mode: %s", [m]) | some m in violations[id]]) if warn_mode(id)

else := []

# What a signature requirement's level only logs (Notation permissive and audit): a warning, not a denial.
signature_warnings(id) := sort([w | some w in signatures.warnings(images_by_id[id], reqs)]) if {
	reqs := requirements[id].signatures
	count(reqs) > 0
} else := []

image_decision(img) := {
	"id": img.id,
	"image": img.image,
	"path": img.path,
	"allowed": count(r) == 0,
	"reasons": r,
	"warnings": image_warnings(img.id),
	"pin": checks[img.id].pin,
	"mutate": object.get(requirements, [img.id, "mutate"], false),
	"policy": policy_of(img.id),
} if {
	r := reasons(img.id)
}

policy_of(id) := policy_summary(selected[id]) if {
	selected[id]
} else := null

image_decisions := [image_decision(img) | some img in input.images]

# ---- custom rules: package ostiary.custom.<name>, `deny contains msg`, `warn contains msg` ----

custom_denials contains sprintf("%s: %v", [name, msg]) if {
	some name, rules in data.ostiary.custom
	is_set(rules.deny)
	some msg in rules.deny
}

custom_denials contains msg if {
	some name, rules in data.ostiary.custom
	not is_set(rules.deny)
	rules.deny
	msg := sprintf("custom rules %s: deny must be a set of messages (deny contains msg if ...); denied", [name])
}

custom_warnings contains sprintf("%s: %v", [name, msg]) if {
	some name, rules in data.ostiary.custom
	is_set(rules.warn)
	some msg in rules.warn
}

image_denials contains sprintf("image %s (%s): %s", [d.image, d.path, reason]) if {
	some d in image_decisions
	some reason in d.reasons
}

denials := sort([m | some m in (image_denials | custom_denials)])

warnings := array.concat(
	sort([sprintf("image %s: %s", [d.image, w]) | some d in image_decisions; some w in d.warnings]),
	sort([w | some w in custom_warnings]),
)

# METADATA
# description: The verdict per image and for the request (Ostiary's second query).
# entrypoint: true
decision := {
	"allowed": count(denials) == 0,
	"denials": denials,
	"warnings": warnings,
	"images": image_decisions,
}
