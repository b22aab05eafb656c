# METADATA
# description: |
#   Tests of data.ostiary.main: which policies apply (namespace exclusivity), the plan, the
#   decision and its shape, warn mode, unsupported verifiers and invalid references.
package ostiary.main_test

import rego.v1

import data.ostiary.main
import data.ostiary.test_helpers as h
import data.ostiary.testdata

nginx_normalized := "docker.io/library/nginx:latest"

# ---- which policies apply ----

test_namespace_image_policy_applies_in_its_namespace if {
	d := h.first(h.pod_in("team", ["icr.io/team/app"]), testdata.policies.namespaces)
	d.allowed == true
	d.policy.kind == "ImagePolicy"
	d.policy.name == "team-policy"
	d.policy.namespace == "team"
}

test_namespace_image_policy_is_exclusive_even_when_it_does_not_match if {
	# the ClusterImagePolicy `*` would allow nginx; the namespace's ImagePolicy does not match it
	d := h.decide(h.pod_in("team", ["nginx"]), testdata.policies.namespaces)
	d.allowed == false
	d.images[0].allowed == false
	d.images[0].policy == null
	d.images[0].reasons == [sprintf("no repository entry in the ImagePolicies of namespace team matches %s (no match means deny)", [nginx_normalized])]
}

test_namespace_with_an_empty_image_policy_denies_everything if {
	d := h.first(h.pod_in("locked", ["nginx"]), testdata.policies.namespaces)
	d.allowed == false
	h.has_reason(d, "the ImagePolicies of namespace locked")
}

refused_team := {"policy": {
	"kind": "ImagePolicy", "name": "broken", "namespace": "team", "mode": "warn",
	"refused": "spec.repositories[0].name: empty tag after ':'", "repositories": [], "by_host": {},
	"head": {"kind": "ImagePolicy", "name": "broken", "namespace": "team", "mode": "warn"},
}}

with_refused_team := object.union(testdata.policies.namespaces, {"namespaced": {"team": {"broken": refused_team}}})

test_a_refused_image_policy_denies_every_image_of_its_namespace_naming_it if {
	# even where another ImagePolicy of the namespace matches, and whatever the mode
	d := h.decide(h.pod_in("team", ["icr.io/team/app"]), with_refused_team)
	d.allowed == false
	d.images[0].reasons == ["ImagePolicy team/broken is refused by Ostiary, so every image in namespace team is denied until it is fixed: spec.repositories[0].name: empty tag after ':'"]
}

test_a_refused_image_policy_leaves_other_namespaces_alone if {
	h.first(h.pod_in("default", ["nginx"]), with_refused_team).allowed == true
	h.first(h.pod_in("other", ["nginx"]), with_refused_team).allowed == true
}

test_cluster_policies_apply_in_namespaces_without_image_policies if {
	d := h.first(h.pod_in("default", ["nginx"]), testdata.policies.namespaces)
	d.allowed == true
	d.policy.kind == "ClusterImagePolicy"
	d.policy.name == "allow-all"
	d.policy.namespace == null
}

test_other_namespaces_image_policies_do_not_apply if {
	# other-policy (namespace other) allows docker.io/library/*, team-policy icr.io/team/*
	h.first(h.pod_in("other", ["nginx"]), testdata.policies.namespaces).allowed == true
	h.first(h.pod_in("other", ["icr.io/team/app"]), testdata.policies.namespaces).allowed == false
	h.first(h.pod_in("team", ["nginx"]), testdata.policies.namespaces).allowed == false
}

test_applicable_and_scope if {
	ps := main.applicable with input as h.pod_in("team", ["nginx"]) with data.ostiary_policies as testdata.policies.namespaces
	{p.name | some p in ps} == {"team-policy"}
	s := main.scope with input as h.pod_in("team", ["nginx"]) with data.ostiary_policies as testdata.policies.namespaces
	s == "the ImagePolicies of namespace team"
	cs := main.applicable with input as h.pod_in("default", ["nginx"]) with data.ostiary_policies as testdata.policies.namespaces
	{p.name | some p in cs} == {"allow-all"}
	s2 := main.scope with input as h.pod_in("default", ["nginx"]) with data.ostiary_policies as testdata.policies.namespaces
	s2 == "the ClusterImagePolicies"
}

test_namespace_policies_and_cluster_policies_sets if {
	inp := h.pod_in("team", ["nginx"])
	ns := main.namespace_policies with input as inp with data.ostiary_policies as testdata.policies.namespaces
	count(ns) == 1
	cl := main.cluster_policies with input as inp with data.ostiary_policies as testdata.policies.namespaces
	{p.name | some p in cl} == {"allow-all"}
}

# ---- deny by default ----

test_no_match_denies_naming_the_normalized_image if {
	d := h.first(h.pod(["ubuntu.evil.io/x"]), testdata.policies.plan)
	d.allowed == false
	d.reasons == ["no repository entry in the ClusterImagePolicies matches ubuntu.evil.io/x:latest (no match means deny)"]
	d.pin == null
	d.mutate == false
	d.policy == null
}

test_no_policies_at_all_denies if {
	d := h.decide(h.pod(["nginx"]), {})
	d.allowed == false
	d.denials == [sprintf("image nginx (/spec/containers/0/image): no repository entry in the ClusterImagePolicies matches %s (no match means deny)", [nginx_normalized])]
	e := h.decide(h.pod(["nginx"]), {"cluster": {}, "namespaced": {}})
	e.allowed == false
}

test_no_policies_data_at_all_denies if {
	# data.ostiary_policies undefined (nothing loaded)
	d := main.decision with input as h.pod(["nginx"]) with data.ostiary.custom as {}
	d.allowed == false
	count(d.denials) == 1
}

test_entry_without_policy_allows_without_pin if {
	every text in ["registry.example.com/open/app:1.0", "registry.example.com/empty/app:1.0", "registry.example.com/null/app:1.0"] {
		d := h.first(h.pod([text]), testdata.policies.plan)
		d.allowed == true
		d.reasons == []
		d.warnings == []
		d.pin == null
	}
}

test_trust_disabled_allows_without_facts if {
	d := h.first(h.pod(["registry.example.com/disabled/app:1.0"]), testdata.policies.plan)
	d.allowed == true
	d.pin == null
}

test_invalid_reference_is_denied_as_invalid if {
	every text in ["NGINX", "nginx@sha256:abc", "nginx:bad tag"] {
		d := h.first(h.pod([text]), testdata.policies.namespaces) # allow-all `*` applies
		d.allowed == false
		count(d.reasons) == 1
		startswith(d.reasons[0], "invalid image reference ")
		contains(d.reasons[0], text)
		d.policy == null
		d.pin == null
	}
}

test_invalid_reference_message_carries_the_parser_error if {
	d := h.first(h.pod(["nginx@sha256:abc"]), testdata.policies.namespaces)
	d.reasons == [testdata.images["nginx@sha256:abc"].ref.error]
}

test_invalid_reference_gets_no_plan if {
	p := h.plan(h.pod(["NGINX"]), testdata.policies.namespaces)
	p.images == [{"id": 0, "policy": null, "requirements": null}]
}

test_invalid_reference_is_denied_even_if_ref_fields_look_matchable if {
	# valid=false wins over anything else the ref carries
	img := object.union(h.site(0, "nginx"), {"ref": {"valid": false, "error": "bad", "registry": "docker.io", "repository": "library/nginx", "tag": "latest"}})
	d := h.first(h.request("default", [img]), testdata.policies.namespaces)
	d.allowed == false
	d.reasons == ["invalid image reference: bad"]
}

test_an_image_without_ref_valid_is_denied if {
	# an input whose ref lacks `valid` (or has no ref at all) is refused, never passed unchecked
	site := h.site(0, "nginx")
	bare := object.remove(site, ["ref"])
	img := object.union(bare, {"ref": object.remove(site.ref, ["valid"])})
	d := h.first(h.request("default", [img]), testdata.policies.namespaces)
	d.allowed == false
	d.reasons == ["invalid image reference: no reason given"]
	d2 := h.first(h.request("default", [bare]), testdata.policies.namespaces)
	d2.allowed == false
	d2.reasons == ["invalid image reference: the input carries no reference for this image"]
}

# ---- plan ----

plan_of(ns, text) := h.plan(h.pod_in(ns, [text]), testdata.policies.plan).images[0]

test_plan_default_trust_server_for_docker_hub if {
	p := plan_of("default", "nginx")
	p.requirements == {
		"trust": {"enabled": true, "server": "https://notary.docker.io", "signer_secrets": [], "root_secrets": []},
		"signatures": [],
		"mutate": true,
	}
	p.policy == {
		"kind": "ClusterImagePolicy", "name": "plan", "namespace": null,
		"repository": "docker.io/library/*", "index": 0, "mode": "enforce",
	}
}

test_plan_default_trust_server_for_quay if {
	plan_of("default", "quay.io/coreos/etcd:v3.5").requirements.trust.server == "https://quay.io:443"
}

test_plan_no_default_trust_server_for_other_hosts if {
	p := plan_of("default", "registry.example.com/other/app:1.0")
	p.requirements.trust.enabled == true
	p.requirements.trust.server == null
}

test_plan_trust_server_from_policy_wins_over_default if {
	plan_of("default", "docker.io/myorg/tool:2").requirements.trust.server == "https://notary.myorg.example"
	plan_of("default", "registry.example.com/team/app:1.0").requirements.trust.server == "https://notary.example.com"
}

test_plan_cluster_policy_signer_secrets_live_in_the_system_namespace if {
	plan_of("default", "registry.example.com/team/app:1.0").requirements.trust.signer_secrets == [
		{"name": "alice-key", "namespace": "ostiary-system"},
		{"name": "bob-key", "namespace": "ostiary-system"},
	]
}

test_plan_system_namespace_comes_from_config if {
	inp := object.union(h.pod(["registry.example.com/team/app:1.0"]), {"config": {"system_namespace": "ostiary"}})
	p := h.plan(inp, testdata.policies.plan).images[0]
	{s.namespace | some s in p.requirements.trust.signer_secrets} == {"ostiary"}
}

test_plan_system_namespace_comes_only_from_config if {
	# Defined once, in Python, sent in input.config; without it no namespace is guessed: the signer
	# secrets of a ClusterImagePolicy have none, so they cannot be read and the image is denied.
	inp := object.remove(h.pod(["registry.example.com/team/app:1.0"]), ["config"])
	p := h.plan(inp, testdata.policies.plan).images[0]
	{s.namespace | some s in p.requirements.trust.signer_secrets} == {null}
	ns := main.system_namespace with input as inp
	ns == null
	ns2 := main.system_namespace with input as {"config": {"system_namespace": 7}}
	ns2 == null
	h.plan(h.pod(["registry.example.com/team/app:1.0"]), testdata.policies.plan).images[0].requirements.trust.signer_secrets[0].namespace == testdata.config.system_namespace
}

test_plan_image_policy_signer_secrets_live_in_its_namespace if {
	p := plan_of("team-ns", "registry.example.com/team/app:1.0")
	p.policy.kind == "ImagePolicy"
	p.policy.namespace == "team-ns"
	p.requirements.trust.signer_secrets == [{"name": "team-key", "namespace": "team-ns"}]
}

test_secret_namespace if {
	main.secret_namespace({"namespace": "team"}) == "team"
	ns := main.secret_namespace({"namespace": null}) with input as {"config": {"system_namespace": "sys"}}
	ns == "sys"
}

test_server_of if {
	main.server_of({"server": "https://n.example"}, {"registry": "docker.io"}) == "https://n.example"
	cfg := {"config": testdata.config}
	s1 := main.server_of({"server": null}, {"registry": "docker.io"}) with input as cfg
	s1 == "https://notary.docker.io"
	s2 := main.server_of({"server": null}, {"registry": "quay.io"}) with input as cfg
	s2 == "https://quay.io:443"
	s3 := main.server_of({"server": null}, {"registry": "index.docker.io"}) with input as cfg
	s3 == null
	s4 := main.server_of({"server": null}, {"registry": "registry.example.com"}) with input as cfg
	s4 == null

	# the defaults come only from input.config (defined once, in app/notary/servers.py)
	main.server_of({"server": null}, {"registry": "docker.io"}) == null
}

test_plan_mutate_false_when_mutate_image_false if {
	p := plan_of("default", "registry.example.com/nomutate/app:1.0")
	p.requirements.mutate == false
	p.requirements.trust.enabled == false
}

test_plan_trust_disabled_lists_signers_but_is_not_enabled if {
	p := plan_of("default", "registry.example.com/disabled/app:1.0")
	p.requirements.trust.enabled == false
	p.requirements.trust.signer_secrets == [{"name": "unused-key", "namespace": "ostiary-system"}]
}

test_plan_covers_every_image_in_order if {
	p := h.plan(h.pod(["nginx", "NGINX", "ubuntu.evil.io/x", "quay.io/org/app"]), testdata.policies.plan)
	[i.id | some i in p.images] == [0, 1, 2, 3]
	p.images[0].policy.index == 0
	p.images[1].policy == null
	p.images[2].policy == null
	p.images[3].policy.repository == "quay.io/*"
}

test_plan_with_no_images if {
	p := h.plan(h.pod([]), testdata.policies.plan)
	p.images == []
	p.decision.allowed == true # nothing needs trust facts: the plan brings the decision
}

test_the_plan_brings_the_decision_only_when_no_trust_facts_are_needed if {
	open := h.plan(h.pod(["registry.example.com/open/app:1.0"]), testdata.policies.plan)
	open.decision == h.decide(h.pod(["registry.example.com/open/app:1.0"]), testdata.policies.plan)
	trusted := h.plan(h.pod(["docker.io/phbelitz/sample-image:v1"]), testdata.policies.trust_nosigners)
	not trusted.decision
}

# ---- unsupported verifiers ----

test_simple_policy_without_signature_facts_is_denied if {
	d := h.first(h.pod(["registry.example.com/simple/app:1.0"]), testdata.policies.plan)
	d.allowed == false
	d.reasons == ["simple signing requirement 0: signature facts unavailable (not gathered for this image); denied"]
}

test_va_policy_is_denied_as_unsupported if {
	d := h.first(h.pod(["registry.example.com/va/app:1.0"]), testdata.policies.plan)
	d.allowed == false
	h.has_reason(d, "policy.va of ClusterImagePolicy plan is not supported")
}

test_vulnerability_policy_is_denied_as_unsupported if {
	# the entry as the translator writes it for policy {"vulnerability": {}} (entry_needs,
	# tests/unit/test_translate.py)
	policies := json.patch(testdata.policies.plan, [
		{"op": "add", "path": "/cluster/plan/policy/repositories/7/policy", "value": {"vulnerability": {}}},
		{"op": "add", "path": "/cluster/plan/policy/repositories/7/needs/unsupported", "value": ["vulnerability"]},
	])
	d := h.first(h.pod(["registry.example.com/open/app:1.0"]), policies)
	d.allowed == false
	h.has_reason(d, "policy.vulnerability of ClusterImagePolicy plan is not supported")
}

# ---- trust without facts / server (the trust rules see the plan's requirements) ----

test_trust_enabled_without_facts_is_denied if {
	d := h.first(h.pod(["nginx"]), testdata.policies.plan)
	d.allowed == false
	d.reasons == ["trust data unavailable (not gathered for this image); denied"]
	d.pin == null
	d.mutate == true
}

test_trust_enabled_without_server_is_denied if {
	d := h.first(h.pod(["registry.example.com/other/app:1.0"]), testdata.policies.plan)
	d.allowed == false
	d.reasons == ["no trust server is known for registry registry.example.com: set policy.trust.trustServer in the policy"]
}

# ---- warn mode ----

test_warn_mode_turns_violations_into_warnings if {
	d := h.decide(h.pod(["registry.example.com/team/app:1.0"]), testdata.policies.warn)
	d.allowed == true
	d.denials == []
	d.images[0].allowed == true
	d.images[0].reasons == []
	d.images[0].warnings == ["warn mode: trust data unavailable (not gathered for this image); denied"]
	d.images[0].pin == null
	d.images[0].policy.mode == "warn"
	d.warnings == ["image registry.example.com/team/app:1.0: warn mode: trust data unavailable (not gathered for this image); denied"]
}

test_warn_mode_covers_unsupported_verifiers if {
	d := h.first(h.pod(["registry.example.com/simple/app:1.0"]), testdata.policies.warn)
	d.allowed == true
	d.warnings == ["warn mode: simple signing requirement 0 is `reject`: no image may run under it"]
}

test_warn_mode_without_violations_has_no_warnings if {
	d := h.decide(h.pod(["registry.example.com/open/app:1.0"]), testdata.policies.warn)
	d.allowed == true
	d.warnings == []
	d.images[0].warnings == []
}

test_warn_mode_of_an_image_policy if {
	d := h.decide(h.pod_in("trial", ["registry.example.com/team/app:1.0"]), testdata.policies.warn_namespace)
	d.allowed == true
	count(d.warnings) == 1
}

test_warn_mode_does_not_leak_to_enforce_policies if {
	# trust_warn (warn) covers docker.io/phbelitz/*, plan (enforce) docker.io/library/*
	policies := object.union(testdata.policies.trust_warn, testdata.policies.plan)
	d := h.decide(h.pod(["nginx", "docker.io/phbelitz/delegation:test"]), policies)
	d.allowed == false
	d.images[0].allowed == false
	d.images[0].policy.mode == "enforce"
	d.images[1].allowed == true
	d.images[1].policy.mode == "warn"
	d.denials == ["image nginx (/spec/containers/0/image): trust data unavailable (not gathered for this image); denied"]
	d.warnings == ["image docker.io/phbelitz/delegation:test: warn mode: trust data unavailable (not gathered for this image); denied"]
}

test_warn_mode_helpers if {
	inp := h.pod(["registry.example.com/team/app:1.0"])
	main.warn_mode(0) with input as inp with data.ostiary_policies as testdata.policies.warn
	not main.warn_mode(0) with input as inp with data.ostiary_policies as testdata.policies.plan
	r := main.reasons(0) with input as inp with data.ostiary_policies as testdata.policies.warn
	r == []
	w := main.image_warnings(0) with input as inp with data.ostiary_policies as testdata.policies.plan
	w == []
}

# ---- decision shape ----

test_decision_shape if {
	d := h.decide(h.pod(["registry.example.com/open/app:1.0", "ubuntu.evil.io/x"]), testdata.policies.plan)
	object.keys(d) == {"allowed", "denials", "warnings", "images"}
	is_boolean(d.allowed)
	is_array(d.denials)
	is_array(d.warnings)
	count(d.images) == 2
	every i in d.images {
		object.keys(i) == {"id", "image", "path", "allowed", "reasons", "warnings", "pin", "mutate", "policy"}
	}
	d.images[0] == {
		"id": 0,
		"image": "registry.example.com/open/app:1.0",
		"path": "/spec/containers/0/image",
		"allowed": true,
		"reasons": [],
		"warnings": [],
		"pin": null,
		"mutate": true,
		"policy": {
			"kind": "ClusterImagePolicy", "name": "plan", "namespace": null,
			"repository": "registry.example.com/open/*", "index": 7, "mode": "enforce",
		},
	}
	d.images[1].id == 1
	d.images[1].path == "/spec/containers/1/image"
	d.images[1].allowed == false
}

test_one_denied_image_denies_the_request_and_is_named if {
	d := h.decide(h.pod(["registry.example.com/open/app:1.0", "ubuntu.evil.io/x"]), testdata.policies.plan)
	d.allowed == false
	d.denials == ["image ubuntu.evil.io/x (/spec/containers/1/image): no repository entry in the ClusterImagePolicies matches ubuntu.evil.io/x:latest (no match means deny)"]
	d.warnings == []
}

test_denials_are_sorted_and_cover_every_reason if {
	d := h.decide(h.pod(["ubuntu.evil.io/x", "NGINX", "registry.example.com/simple/app:1.0"]), testdata.policies.plan)
	count(d.denials) == 3
	d.denials == sort(d.denials)
}

test_pod_without_images_is_allowed if {
	d := h.decide(h.pod([]), testdata.policies.plan)
	d == {"allowed": true, "denials": [], "warnings": [], "images": []}
}

test_mutate_false_in_decision_when_mutate_image_false if {
	d := h.first(h.pod(["registry.example.com/nomutate/app:1.0"]), testdata.policies.plan)
	d.allowed == true
	d.mutate == false
}

test_selected_only_for_valid_matching_images if {
	inp := h.pod(["nginx", "NGINX", "ubuntu.evil.io/x"])
	s := main.selected with input as inp with data.ostiary_policies as testdata.policies.plan
	object.keys(s) == {0}
	s[0].entry.name == "docker.io/library/*"
}

test_policy_summary if {
	c := {"policy": {"kind": "ImagePolicy", "name": "p", "namespace": "n", "mode": "warn"}, "entry": {"name": "x/*", "index": 4}}
	main.policy_summary(c) == {"kind": "ImagePolicy", "name": "p", "namespace": "n", "repository": "x/*", "index": 4, "mode": "warn"}
}

# The two ways of finding an image's candidate entries (per policy for few images, through the
# per-query bucket index for many) offer the same entries for every test image and policy set.
test_both_entry_lookups_offer_the_same_entries if {
	every policies in testdata.policies {
		every img in testdata.images {
			found_in_policies(img.ref, policies) == found_in_buckets(img.ref, policies)
		}
	}
}

found_in_policies(ref, policies) := {[c[0].name, c[1].index] |
	some c in main.entries_in_policies(ref) with data.ostiary_policies as policies
		with input as h.request("team-a", [])
}

found_in_buckets(ref, policies) := {[c[0].name, c[1].index] |
	some c in main.entries_in_buckets(ref) with data.ostiary_policies as policies
		with input as h.request("team-a", [])
}

test_a_pod_of_many_images_selects_as_a_pod_of_one if {
	texts := [t | some t, img in testdata.images; img.ref.valid == true]
	count(texts) > main.many_images
	sites := [h.site(i, t) | some i, t in texts]
	many := main.selected with input as h.request("default", sites) with data.ostiary_policies as testdata.policies.plan
	every i, t in texts {
		one := main.selected with input as h.request("default", [h.site(i, t)])
			with data.ostiary_policies as testdata.policies.plan
		object.get(many, i, null) == object.get(one, i, null)
	}
}
