# METADATA
# description: |
#   Regression tests for library bugs found while writing the suite (all fixed): partial trust
#   facts, missing signer facts, facts not matching what was asked, warn-mode rollouts, and `:*`
#   against digest-only references.
package ostiary.regression_test

import rego.v1

import data.ostiary.test_helpers as h
import data.ostiary.testdata

dave_del2 := "sha256:a825e8e950dceb81c7d86f6d34e4e47307e98f35505d180d404e194742a28079"

judge(text, facts, scenario) := h.first(
	h.request("default", [h.trusted(0, text, facts)]),
	testdata.policies[scenario],
)

# ---- Bug 1 (trust.rego): a violation vanishes when a field used only in its message is absent ----
#
# Every trust violation builds its message with sprintf over facts fields (img.trust.gun,
# img.trust.server, img.trust.error, signer.name, signer.secret, signer.role). When one of them is
# undefined the whole rule body is undefined, no violation is produced, and the image is ALLOWED
# (with pin null when no digest is found). trust.rego's own contract is "Anything missing or
# unverified denies"; DESIGN.md: fail closed. The verifier in Python fills these fields today, so
# this is reached only with partial facts, but it turns any future gap there into an allow.
# Fix idea: build messages from object.get(img.trust, "gun", "?") etc., or decide `denied` first
# and attach the message separately; plus the invariant below.

test_bug1_empty_facts_object_is_denied if {
	# input.images[0].trust = {}  (policy trust_nosigners: docker.io/phbelitz/*, trust enabled)
	d := judge("docker.io/phbelitz/sample-image:v1", {}, "trust_nosigners")
	d.allowed == false
}

test_bug1_unverified_facts_without_gun_and_server_are_denied if {
	# input.images[0].trust = {"verified": false, "error": "boom"}
	d := judge("docker.io/phbelitz/sample-image:v1", {"verified": false, "error": "boom"}, "trust_nosigners")
	d.allowed == false
}

test_bug1_verified_facts_without_targets_and_gun_are_denied if {
	# input.images[0].trust = {"verified": true}: no target for tag v1, but the message needs gun
	d := judge("docker.io/phbelitz/sample-image:v1", {"verified": true}, "trust_nosigners")
	d.allowed == false
}

test_bug1_signer_fact_without_name_is_still_checked if {
	# the dave/del2 facts (del2 signed a825..., released is 2b7b...) with "name" dropped from the
	# signer: the "signed another digest" message uses signer.name, so the violation vanishes
	f := testdata.facts.dave_test_del2
	signer := object.remove(f.signers[0], ["name"])
	d := judge("docker.io/phbelitz/delegation:test", object.union(f, {"signers": [signer]}), "trust_del2")
	d.allowed == false
}

test_bug1_invariant_trust_enabled_and_allowed_means_pinned if {
	# whatever the facts, an enforced trust-enabled image is either denied or pinned to a digest
	every facts in [{}, {"verified": false, "error": "boom"}, {"verified": true}] {
		d := judge("docker.io/phbelitz/sample-image:v1", facts, "trust_nosigners")
		d.allowed == false
	}
	ok := judge("docker.io/phbelitz/sample-image:v1", testdata.facts.sample_v1, "trust_nosigners")
	ok.allowed == true
	startswith(ok.pin, "sha256:")
}

# ---- Bug 2 (trust.rego): required signers are skipped when facts carry no `signers` list ----
#
# `count(img.trust.signers) != count(req.signer_secrets)` is undefined (not true) when
# img.trust.signers is absent or null, and the per-signer rules iterate nothing, so a tag signed
# only by someone else is admitted and pinned although the policy requires signer del2.

test_bug2_required_signer_with_signers_fact_absent_is_denied if {
	# policy trust_del2 (signerSecrets: [del2-secret]); facts dave_test_del2 without "signers"
	f := object.remove(testdata.facts.dave_test_del2, ["signers"])
	d := judge("docker.io/phbelitz/delegation:test", f, "trust_del2")
	d.allowed == false
}

test_bug2_required_signer_with_signers_fact_null_is_denied if {
	f := object.union(testdata.facts.dave_test_del2, {"signers": null})
	d := judge("docker.io/phbelitz/delegation:test", f, "trust_del2")
	d.allowed == false
}

# ---- Bug 3 (trust.rego, hardening): facts are not matched to the requirements they answer ----
#
# Only the number of signer facts is compared with the required signer secrets; which secret a
# fact is about is never checked, nor that the facts are about this image's repository (gun) and
# from the planned server. Facts for signer del1 satisfy a policy that requires del2; facts of
# another repository satisfy this one. Python assembles facts in plan order today, so this is
# defence in depth, but the library is the single place that decides.

test_bug3_facts_for_another_signer_are_denied if {
	# policy trust_del2 requires del2-secret; the single signer fact is del1's (del1-secret)
	d := judge("docker.io/phbelitz/delegation:test", testdata.facts.dave_test_del1, "trust_del2")
	d.allowed == false
}

test_bug3_facts_for_another_repository_are_denied if {
	# facts with gun docker.io/phbelitz/delegation given for docker.io/phbelitz/alice-image:test
	d := judge("docker.io/phbelitz/alice-image:test", testdata.facts.dave_test, "trust_nosigners")
	d.allowed == false
}

# ---- Bug 4 (main.rego, spec reading): warn mode still denies an image its policy does not match ----
#
# DESIGN.md: "A policy may run in warn mode (violations become AdmissionResponse warnings, nothing
# is denied)". A namespace whose only ImagePolicy is in warn mode denies every image that policy
# does not match (the ClusterImagePolicies no longer apply), so rolling out an ImagePolicy in warn
# mode can take a namespace down -- the outage warn mode exists to prevent. Expected: the no-match
# becomes a warning when every applicable policy is in warn mode. (If the lead reads DESIGN
# otherwise, document it in docs and move this test, inverted, into main_test.rego.)

test_bug4_warn_mode_image_policy_no_match_is_a_warning if {
	# namespace trial: ImagePolicy trial (mode warn) covers registry.example.com/* only
	d := h.decide(h.pod_in("trial", ["nginx"]), testdata.policies.warn_namespace)
	d.allowed == true
	count(d.warnings) == 1
}

# ---- Discrepancy 5 (translator, not the library): `:*` matches a digest-only image ----
#
# DESIGN.md: "A pattern with a tag matches only images carrying that tag (... `nginx:latest` does
# not match a digest-only `nginx@sha256:…`); `:latest` and `:*` match an untagged image." The
# translator gives `nginx:*` any_tag=true (its docstring: "No tag, or `:*`, matches any tag and any
# digest"), so `nginx:*` matches `nginx@sha256:…`, which carries no tag.

test_discrepancy5_star_tag_pattern_does_not_match_digest_only_image if {
	not data.ostiary.matching.entry_matches(
		testdata.entries["nginx:*"],
		testdata.images["nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"].ref,
	)
}
