# METADATA
# description: |
#   What the translator computes once and the decision reads (entry.rank, entry.needs, a policy's
#   wild buckets; app/policies/translate.py) can only deny, never admit what the policy in force
#   forbids: the rank orders entries as docs/policies.md says, a namespace's ImagePolicies replace
#   the ClusterImagePolicies, a changed policy changes the verdict, and a document without what
#   this library reads (written by another translator) is denied.
package ostiary.precomputed_test

import rego.v1

import data.ostiary.main
import data.ostiary.main_test as mt
import data.ostiary.matching
import data.ostiary.test_helpers as h
import data.ostiary.testdata

team_app := "icr.io/team/app:1.0"

other_app := "icr.io/other/app"

test_a_more_specific_deny_all_entry_beats_a_broader_allow if {
	# a-allow `icr.io/*` sorts first by name; z-deny `icr.io/team/*` (reject) is more specific
	d := h.first(h.pod([team_app]), testdata.policies.precedence)
	d.allowed == false
	d.policy.name == "z-deny"
	h.has_reason(d, "is `reject`: no image may run under it")

	# the broader allow still applies where the deny-all does not
	o := h.first(h.pod([other_app]), testdata.policies.precedence)
	o.allowed == true
	o.policy.name == "a-allow"
}

test_an_equally_specific_signature_entry_beats_an_allow_all if {
	# a-allow and z-cosign both `icr.io/team/*`; the cosign entry has requirements, so it is chosen
	# whatever the names, and an image without cosign facts is denied
	d := h.first(h.pod([team_app]), testdata.policies.tie_cosign)
	d.allowed == false
	d.policy.name == "z-cosign"
}

test_adding_a_deny_all_policy_changes_the_verdict if {
	h.first(h.pod([team_app]), testdata.policies.precedence_before).allowed == true
	h.first(h.pod([team_app]), testdata.policies.precedence).allowed == false
}

test_the_rank_decides_whatever_order_policies_are_read_in if {
	# the same two policies under other document keys (read in the other order)
	swapped := {"cluster": {
		"0": testdata.policies.precedence.cluster["z-deny"],
		"1": testdata.policies.precedence.cluster["a-allow"],
	}}
	h.first(h.pod([team_app]), swapped).allowed == false
	flipped := {"cluster": {
		"0": testdata.policies.precedence.cluster["a-allow"],
		"1": testdata.policies.precedence.cluster["z-deny"],
	}}
	h.first(h.pod([team_app]), flipped).allowed == false
}

test_a_namespace_policy_replaces_the_cluster_policies if {
	# team has an ImagePolicy: the ClusterImagePolicy `*` (allow-all) does not apply there
	d := h.first(h.pod_in("team", ["quay.io/org/app"]), testdata.policies.namespaces)
	d.allowed == false
	h.has_reason(d, "no repository entry in the ImagePolicies of namespace team matches")
	h.first(h.pod_in("default", ["quay.io/org/app"]), testdata.policies.namespaces).allowed == true
}

# ---- documents without what this library reads ----

deny_entry := "/cluster/z-deny/policy/repositories/0"

test_an_entry_without_a_rank_is_never_chosen if {
	# the deny-all entry without its rank: it matches nothing, and neither does anything else of
	# its policy; the image falls to the broader allow only because the allow really matches it
	# (a missing rank removes an entry, so it can only cost the admission of what the entry allows)
	policies := json.patch(testdata.policies.precedence, [{"op": "remove", "path": concat("/", [deny_entry, "rank"])}])
	d := h.first(h.pod([team_app]), policies)
	d.policy.name == "a-allow"
	alone := json.patch(testdata.policies.precedence_before, [{"op": "remove", "path": "/cluster/a-allow/policy/repositories/0/rank"}])
	a := h.first(h.pod([team_app]), alone)
	a.allowed == false
	h.has_reason(a, "no repository entry in the ClusterImagePolicies matches")
}

test_an_entry_without_needs_is_denied if {
	policies := json.patch(testdata.policies.precedence, [{"op": "remove", "path": concat("/", [deny_entry, "needs"])}])
	d := h.first(h.pod([team_app]), policies)
	d.allowed == false
	h.has_reason(d, "cannot be read by this library")

	# an allow entry without needs is denied too, never allowed without its requirements
	alone := json.patch(testdata.policies.precedence_before, [{"op": "remove", "path": "/cluster/a-allow/policy/repositories/0/needs"}])
	h.first(h.pod([team_app]), alone).allowed == false
}

test_needs_without_the_signature_flag_still_derive_the_signature_requirements if {
	policies := json.patch(testdata.policies.precedence, [{"op": "remove", "path": concat("/", [deny_entry, "needs", "signatures"])}])
	d := h.first(h.pod([team_app]), policies)
	d.allowed == false
	h.has_reason(d, "is `reject`")
}

test_needs_without_trust_deny if {
	# trust_nosigners: the entry enables trust, and the facts satisfy it
	p := testdata.policies.trust_nosigners
	inp := h.request("default", [h.trusted(0, "docker.io/phbelitz/sample-image:v1", testdata.facts.sample_v1)])
	h.first(inp, p).allowed == true

	# the same entry without needs.trust: its requirements are unreadable, so the image is denied
	# rather than admitted without the trust its policy enables
	some name, _ in p.cluster
	patched := json.patch(p, [{"op": "remove", "path": sprintf("/cluster/%s/policy/repositories/0/needs/trust", [name])}])
	d := h.first(inp, patched)
	d.allowed == false
	h.has_reason(d, "cannot be read by this library")
}

# The entry lookups of main.rego offer the entries of the buckets matching.host_keys names, wildcard
# hosts (the translator's `wild` suffixes) included.
test_the_entry_lookups_offer_the_entries_of_the_host_keys if {
	policies := testdata.matching_policies
	every img in [i | some i in testdata.images; i.ref.valid == true] {
		mt.found_in_policies(img.ref, policies) == found_by_host_keys(img.ref, policies)
		mt.found_in_buckets(img.ref, policies) == found_by_host_keys(img.ref, policies)
	}

	# the matching patterns include wildcard hosts, and their images find entries through them
	some img in testdata.images
	img.ref.valid == true
	some c in mt.found_in_policies(img.ref, testdata.matching_policies)
	startswith(testdata.matching_policies.cluster.matching.policy.repositories[c[1]].pattern.host_bucket, "*")
}

# The definition: every entry in a bucket of matching.host_keys of the image's host.
found_by_host_keys(ref, policies) := {[policy.head.name, i] |
	some policy in main.applicable with data.ostiary_policies as policies
		with input as h.request("team-a", [])
	some key in matching.host_keys(ref.registry)
	some i in object.get(policy.by_host, key, [])
}
