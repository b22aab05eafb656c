# METADATA
# description: |
#   Tests of data.ostiary.trust: decisions from the verified Notary facts. The facts are what
#   Ostiary's verifier produced from real Docker Hub trust data (shared/fixtures/notary/
#   dockerhub-captured) through tests/unit/gen_rego_testdata.py; a few tests edit one field of
#   them to reach a case the captured data does not contain.
package ostiary.trust_test

import rego.v1

import data.ostiary.main
import data.ostiary.test_helpers as h
import data.ostiary.testdata
import data.ostiary.trust

alice_released := "sha256:ac904c9b191d14faf54b7952f2650a4bb21c201bf34131388b851e8ce992a652"

dave_released := "sha256:2b7b506572e4f3b9de7524ff84287db88ed24b0cf9448a7b04ad0664ecdef71b"

dave_del2 := "sha256:a825e8e950dceb81c7d86f6d34e4e47307e98f35505d180d404e194742a28079"

charlie_released := "sha256:a647a0f9c82dc5f3e7c4bd6483b496a49d570b4fdb1feacbfd57e965d2a1d662"

sample_v1 := "sha256:799c0fa8aa4c9fbff5a99aef1b4b5c3abb9c2f34134345005982fad3489893c7"

sample_sign := "sha256:a154797b8300165956ee1f16d98f3a1426301c1168f0462c73ce9bc03361cabf"

unsigned := "sha256:0000000000000000000000000000000000000000000000000000000000000000"

# judge: the decision about one image carrying `facts`, under the policies of `scenario`.
judge(text, facts, scenario) := h.first(
	h.request("default", [h.trusted(0, text, facts)]),
	testdata.policies[scenario],
)

# ---- allowed, pinned ----

test_signed_tag_is_pinned_to_the_released_digest if {
	d := judge("docker.io/phbelitz/sample-image:v1", testdata.facts.sample_v1, "trust_nosigners")
	d.allowed == true
	d.reasons == []
	d.pin == sample_v1
	d.mutate == true
}

test_signed_tag_with_all_required_signers_is_allowed if {
	d := judge("docker.io/phbelitz/alice-image:test", testdata.facts.alice_test_phbelitz_chamsen, "trust_phbelitz_chamsen")
	d.allowed == true
	d.pin == alice_released
}

test_releases_role_wins_over_targets if {
	# charlie: targets signed 4e06..., targets/releases (and del1) a647...
	d := judge("docker.io/phbelitz/delegation:test", testdata.facts.charlie_test_del1, "trust_del1")
	d.allowed == true
	d.pin == charlie_released
}

test_signer_that_signed_the_released_digest_is_allowed if {
	d := judge("docker.io/phbelitz/delegation:test", testdata.facts.dave_test_del1, "trust_del1")
	d.allowed == true
	d.pin == dave_released
}

test_tag_at_matching_digest_is_allowed if {
	d := judge(sprintf("docker.io/phbelitz/sample-image:v1@%s", [sample_v1]), testdata.facts.sample_v1_at_v1_digest, "trust_nosigners")
	d.allowed == true
	d.pin == sample_v1
}

test_digest_only_reference_signed_under_some_tag_is_allowed_and_pinned_to_it if {
	d := judge(sprintf("docker.io/phbelitz/sample-image@%s", [sample_v1]), testdata.facts.sample_digest_v1, "trust_nosigners")
	d.allowed == true
	d.pin == sample_v1
}

test_digest_only_reference_with_required_signer_is_allowed if {
	d := judge(sprintf("docker.io/phbelitz/delegation@%s", [dave_released]), testdata.facts.dave_digest_released_del1, "trust_del1")
	d.allowed == true
	d.pin == dave_released
}

test_mutate_image_false_keeps_the_pin_but_does_not_mutate if {
	d := judge("docker.io/phbelitz/sample-image:v1", testdata.facts.sample_v1, "trust_nomutate")
	d.allowed == true
	d.pin == sample_v1
	d.mutate == false
}

# ---- denied: facts missing or unverified ----

test_no_facts_means_trust_data_unavailable if {
	d := h.first(h.pod(["docker.io/phbelitz/sample-image:v1"]), testdata.policies.trust_nosigners)
	d.allowed == false
	d.reasons == ["trust data unavailable (not gathered for this image); denied"]
	d.pin == null
}

test_no_trust_server_is_denied_even_with_facts if {
	# registry.example.com/* enables trust without trustServer; no default for that host
	d := judge("registry.example.com/other/app:1.0", testdata.facts.sample_v1, "plan")
	d.allowed == false
	"no trust server is known for registry registry.example.com: set policy.trust.trustServer in the policy" in d.reasons
}

test_unverified_trust_data_is_denied_with_the_error if {
	f := testdata.facts.eve_test
	f.verified == false
	d := judge("docker.io/phbelitz/delegation:test", f, "trust_nosigners")
	d.allowed == false
	d.reasons == [sprintf("trust data for docker.io/phbelitz/delegation from https://notary.docker.io could not be verified: %s", [f.error])]
	d.pin == null
}

test_verified_must_be_true_not_truthy if {
	f := object.union(testdata.facts.sample_v1, {"verified": "yes"})
	d := judge("docker.io/phbelitz/sample-image:v1", f, "trust_nosigners")
	d.allowed == false
	h.has_reason(d, "could not be verified")
}

# ---- denied: tags and digests ----

test_unsigned_tag_is_denied if {
	d := judge("docker.io/phbelitz/alice-image:missing-tag", testdata.facts.alice_missing_tag, "trust_nosigners")
	d.allowed == false
	d.reasons == ["tag missing-tag is not signed in docker.io/phbelitz/alice-image (neither targets/releases nor targets has it)"]
	d.pin == null
}

test_tag_at_other_digest_is_denied if {
	d := judge(sprintf("docker.io/phbelitz/sample-image:v1@%s", [sample_sign]), testdata.facts.sample_v1_at_sign_digest, "trust_nosigners")
	d.allowed == false
	d.reasons == [sprintf("digest %s is not the signed digest of tag v1 (signed: %s)", [sample_sign, sample_v1])]
	d.pin == null
}

test_digest_only_reference_not_signed_is_denied if {
	d := judge(sprintf("docker.io/phbelitz/sample-image@%s", [unsigned]), testdata.facts.sample_digest_unsigned, "trust_nosigners")
	d.allowed == false
	d.reasons == [sprintf("digest %s is not signed under any tag in docker.io/phbelitz/sample-image", [unsigned])]
	d.pin == null
}

test_digest_only_reference_signed_only_by_a_delegation_not_released_is_denied if {
	# del2 signed a825... under `test`, but the released digest of `test` is 2b7b...
	d := judge(sprintf("docker.io/phbelitz/delegation@%s", [dave_del2]), testdata.facts.dave_digest_del2_del2, "trust_del2")
	d.allowed == false
	d.reasons == [sprintf("digest %s is not signed under any tag in docker.io/phbelitz/delegation by the required signers (del2)", [dave_del2])]
}

test_digest_only_reference_released_but_not_by_the_required_signer_is_denied if {
	d := judge(sprintf("docker.io/phbelitz/delegation@%s", [dave_released]), testdata.facts.dave_digest_released_del2, "trust_del2")
	d.allowed == false
	h.has_reason(d, "is not signed under any tag in docker.io/phbelitz/delegation by the required signers (del2)")
}

# ---- denied: signers ----

test_signer_signed_another_digest_is_denied if {
	# the dave/del2 case of expected.json
	d := judge("docker.io/phbelitz/delegation:test", testdata.facts.dave_test_del2, "trust_del2")
	d.allowed == false
	d.reasons == [sprintf("signer del2 (secret del2-secret): role targets/del2 signed %s for tag test, not %s", [dave_del2, dave_released])]
	d.pin == null
}

test_required_signers_that_disagree_are_denied if {
	d := judge("docker.io/phbelitz/delegation:test", testdata.facts.dave_test_del1_del2, "trust_del1_del2")
	d.allowed == false
	count(d.reasons) == 1
	h.has_reason(d, "signer del2 (secret del2-secret)")
}

test_signer_role_missing_is_denied if {
	d := judge("docker.io/phbelitz/alice-image:test", testdata.facts.alice_test_del1, "trust_del1")
	d.allowed == false
	d.reasons == ["signer del1 (secret del1-secret): docker.io/phbelitz/alice-image has no delegation role targets/del1"]
}

test_signer_key_not_among_the_role_signatures_is_denied if {
	# the secret names signer phbelitz but holds chamsen's key
	d := judge("docker.io/phbelitz/alice-image:test", testdata.facts.alice_test_phbelitz_with_chamsen_key, "trust_phbelitz")
	d.allowed == false
	d.reasons == ["signer phbelitz (secret phbelitz-secret): role targets/phbelitz is not signed with the key in the secret"]
}

test_signer_that_did_not_sign_the_tag_is_denied if {
	f := json.remove(testdata.facts.dave_test_del2, [["targets", "test", "roles", "targets/del2"]])
	d := judge("docker.io/phbelitz/delegation:test", f, "trust_del2")
	d.allowed == false
	d.reasons == ["signer del2 (secret del2-secret): role targets/del2 did not sign tag test"]
}

test_signer_error_is_denied if {
	d := judge("docker.io/phbelitz/delegation:test", testdata.facts.dave_test_del1_bad_pem, "trust_del1")
	d.allowed == false
	d.reasons == ["signer del1 (secret del1-secret): secret del1-secret: publicKey is not a PEM public key or certificate"]
}

test_signer_secret_not_found_is_denied if {
	# the shape app/admission/review.py gives a signer whose secret did not resolve
	missing := {"name": null, "secret": "del1-secret", "role": null, "keyids": [], "error": "secret del1-secret not found in namespace ostiary-system"}
	f := object.union(testdata.facts.dave_test_del1, {"signers": [missing]})
	d := judge("docker.io/phbelitz/delegation:test", f, "trust_del1")
	d.allowed == false
	h.has_reason(d, "secret del1-secret not found in namespace ostiary-system")
}

test_facts_for_fewer_signers_than_required_are_denied if {
	d := judge("docker.io/phbelitz/delegation:test", testdata.facts.dave_test_del1, "trust_del1_del2")
	d.allowed == false
	h.has_reason(d, "trust facts cover signers [\"del1-secret\"], but the policy requires [\"del1-secret\", \"del2-secret\"]; denied")
}

test_facts_for_more_signers_than_required_are_denied if {
	d := judge("docker.io/phbelitz/delegation:test", testdata.facts.dave_test_del1, "trust_nosigners")
	d.allowed == false
	h.has_reason(d, "trust facts cover signers [\"del1-secret\"], but the policy requires []; denied")
}

# ---- warn mode ----

test_warn_mode_signer_violation_becomes_a_warning if {
	d := judge("docker.io/phbelitz/delegation:test", testdata.facts.dave_test_del2, "trust_warn")
	d.allowed == true
	d.reasons == []
	d.warnings == [sprintf("warn mode: signer del2 (secret del2-secret): role targets/del2 signed %s for tag test, not %s", [dave_del2, dave_released])]
	d.pin == null
}

# ---- the rules one by one ----

test_trust_is_judged_only_for_trust_enabled_images if {
	inp := h.request("default", [
		h.trusted(0, "docker.io/phbelitz/alice-image:missing-tag", testdata.facts.alice_missing_tag),
		h.site(1, "registry.example.com/open/app:1.0"),
	])
	pols := object.union(testdata.policies.trust_nosigners, testdata.policies.plan)
	r := main.requirements with input as inp with data.ostiary_policies as pols
	r[0].trust.enabled == true
	r[1].trust.enabled == false
	v := main.violations with input as inp with data.ostiary_policies as pols
	count(v[0]) == 1
	v[1] == set()
}

test_verified if {
	trust.verified({"trust": {"verified": true}})
	not trust.verified({"trust": {"verified": false}})
	not trust.verified({})
}

test_released if {
	trust.released({"trust": testdata.facts.sample_v1}, "v1") == sample_v1
	not trust.released({"trust": testdata.facts.alice_missing_tag}, "missing-tag")
	not trust.released({"trust": testdata.facts.sample_v1}, "sign")
}

test_pinned_digest_only_when_satisfied if {
	judge("docker.io/phbelitz/sample-image:v1", testdata.facts.sample_v1, "trust_nosigners").pin == sample_v1
	judge(sprintf("docker.io/phbelitz/sample-image@%s", [sample_v1]), testdata.facts.sample_digest_v1, "trust_nosigners").pin == sample_v1
	judge("docker.io/phbelitz/alice-image:missing-tag", testdata.facts.alice_missing_tag, "trust_nosigners").pin == null
}

test_digest_signed if {
	trust.digest_signed({"ref": {"digest": sample_v1}, "trust": testdata.facts.sample_digest_v1})
	not trust.digest_signed({"ref": {"digest": unsigned}, "trust": testdata.facts.sample_digest_unsigned})
	trust.digest_signed({"ref": {"digest": dave_released}, "trust": testdata.facts.dave_digest_released_del1})
	not trust.digest_signed({"ref": {"digest": dave_released}, "trust": testdata.facts.dave_digest_released_del2})
}

test_signer_suffix if {
	trust.signer_suffix({"trust": testdata.facts.dave_test_del1_del2}) == " by the required signers (del1, del2)"
	trust.signer_suffix({"trust": testdata.facts.sample_v1}) == ""
}

test_key_signed if {
	f := testdata.facts.alice_test_phbelitz_chamsen
	every s in f.signers {
		trust.key_signed({"trust": f}, s)
	}
	g := testdata.facts.alice_test_phbelitz_with_chamsen_key
	not trust.key_signed({"trust": g}, g.signers[0])
}

test_signer_problem_is_undefined_for_a_good_signer if {
	f := testdata.facts.dave_test_del1
	not trust.signer_problem({"trust": f}, f.signers[0], "test", dave_released)
	g := testdata.facts.dave_test_del2
	trust.signer_problem({"trust": g}, g.signers[0], "test", dave_released)
}

test_violations_are_keyed_by_image_id if {
	inp := h.request("default", [
		h.trusted(0, "docker.io/phbelitz/sample-image:v1", testdata.facts.sample_v1),
		h.trusted(1, "docker.io/phbelitz/alice-image:missing-tag", testdata.facts.alice_missing_tag),
	])
	v := main.violations with input as inp with data.ostiary_policies as testdata.policies.trust_nosigners
	v[0] == set()
	count(v[1]) == 1
}

test_trust_violations_need_no_input if {
	# a function of the image and its requirement only: the same answer without any input
	img := h.trusted(1, "docker.io/phbelitz/alice-image:missing-tag", testdata.facts.alice_missing_tag)
	req := {"enabled": true, "server": "https://notary.docker.io", "signer_secrets": [], "root_pins": [], "signer_keys": []}
	count(trust.violations(img, req)) == 1
	trust.violations(h.trusted(0, "docker.io/phbelitz/sample-image:v1", testdata.facts.sample_v1), req) == set()
}

test_facts_from_another_trust_server_deny if {
	# facts gathered under a plan naming another server (a policy changed during the admission,
	# or a kept plan of an earlier policy set): never satisfied, and the reason says so
	img := h.trusted(0, "docker.io/phbelitz/sample-image:v1", testdata.facts.sample_v1)
	req := {"enabled": true, "server": "https://notary.docker.io", "signer_secrets": [], "root_pins": [], "signer_keys": []}
	trust.satisfied(img, req)
	other := object.union(req, {"server": "https://notary.example.com"})
	not trust.satisfied(img, other)
	not trust.pinned_digest(img, other)
	some msg in trust.violations(img, other)
	contains(msg, "but the policy requires trust server https://notary.example.com")
}

# ---- the requirement's root pins and signer keys are proven from the facts (issue 20) ----

unpinned_req := {"enabled": true, "server": "https://notary.docker.io", "signer_secrets": [], "root_pins": [], "signer_keys": []}

pin_a := "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"

pin_b := "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"

pinned_facts(pins) := object.union(testdata.facts.sample_v1, {"root_trust": "pinned", "root_pins": pins})

sample_img(facts) := h.trusted(0, "docker.io/phbelitz/sample-image:v1", facts)

test_first_use_facts_do_not_satisfy_an_entry_with_pins if {
	testdata.facts.sample_v1.root_trust == "first-use"
	trust.satisfied(sample_img(testdata.facts.sample_v1), unpinned_req)
	req := object.union(unpinned_req, {"root_pins": [pin_a]})
	not trust.satisfied(sample_img(testdata.facts.sample_v1), req)
	not trust.pinned_digest(sample_img(testdata.facts.sample_v1), req)
	some msg in trust.violations(sample_img(testdata.facts.sample_v1), req)
	contains(msg, "verified on a first-use root")
}

test_recorded_facts_do_not_satisfy_an_entry_with_pins if {
	facts := object.union(testdata.facts.sample_v1, {"root_trust": "recorded"})
	not trust.satisfied(sample_img(facts), object.union(unpinned_req, {"root_pins": [pin_a]}))
}

test_facts_pinned_by_other_pins_do_not_satisfy if {
	req := object.union(unpinned_req, {"root_pins": [pin_a]})
	trust.satisfied(sample_img(pinned_facts([pin_a])), req)
	not trust.satisfied(sample_img(pinned_facts([pin_b])), req)
	not trust.satisfied(sample_img(pinned_facts([pin_a, pin_b])), req)
	not trust.satisfied(sample_img(pinned_facts([pin_a])), object.union(req, {"root_pins": [pin_a, pin_b]}))
}

test_a_pinned_label_without_the_pins_proves_nothing if {
	req := object.union(unpinned_req, {"root_pins": [pin_a]})
	not trust.satisfied(sample_img(object.union(testdata.facts.sample_v1, {"root_trust": "pinned"})), req)
	not trust.satisfied(sample_img(object.remove(pinned_facts([pin_a]), ["root_pins"])), req)
	not trust.satisfied(sample_img(pinned_facts([pin_a])), unpinned_req)
}

test_a_requirement_without_pins_or_keys_proves_nothing if {
	req := object.remove(unpinned_req, ["root_pins"])
	not trust.satisfied(sample_img(testdata.facts.sample_v1), req)
	not trust.satisfied(sample_img(testdata.facts.sample_v1), object.remove(unpinned_req, ["signer_keys"]))
}

# The decision, with what the Reviewer reads into input.trust_material.
pinned_input(facts, material) := object.union(
	h.request("default", [sample_img(facts)]),
	{"trust_material": material},
)

test_decision_first_use_facts_under_an_entry_with_root_secrets_are_denied if {
	material := {"root_secrets": {"ostiary-system/hub-root": pin_a}, "signer_secrets": {}, "root_pins": {}}
	d := h.first(pinned_input(testdata.facts.sample_v1, material), testdata.policies.trust_pinned)
	d.allowed == false
	d.pin == null
	h.has_reason(d, "verified on a first-use root")
	ok := h.first(pinned_input(pinned_facts([pin_a]), material), testdata.policies.trust_pinned)
	ok.allowed == true
	ok.pin == sample_v1
}

test_decision_root_secret_not_read_proves_nothing if {
	d := h.first(
		pinned_input(pinned_facts([pin_a]), {"root_secrets": {}, "signer_secrets": {}, "root_pins": {}}),
		testdata.policies.trust_pinned,
	)
	d.allowed == false
}

test_decision_serve_root_pins_are_required_of_entries_without_root_secrets if {
	material := {"root_secrets": {}, "signer_secrets": {}, "root_pins": {"https://notary.docker.io": [pin_b]}}
	d := h.first(pinned_input(testdata.facts.sample_v1, material), testdata.policies.trust_nosigners)
	d.allowed == false
	h.has_reason(d, "verified on a first-use root")
	ok := h.first(pinned_input(pinned_facts([pin_b]), material), testdata.policies.trust_nosigners)
	ok.allowed == true

	# pins of another server are not this entry's
	other := {"root_secrets": {}, "signer_secrets": {}, "root_pins": {"https://notary.example.com": [pin_b]}}
	h.first(pinned_input(testdata.facts.sample_v1, other), testdata.policies.trust_nosigners).allowed == true
}

test_facts_verified_with_signer_key_a_do_not_satisfy_key_b_under_the_same_name if {
	# phbelitz-secret held phbelitz's key when the facts were verified; it holds chamsen's key now
	a := testdata.facts.alice_test_phbelitz
	b := testdata.facts.alice_test_phbelitz_with_chamsen_key
	a.signers[0].key != b.signers[0].key
	a.signers[0].secret == b.signers[0].secret
	img := h.trusted(0, "docker.io/phbelitz/alice-image:test", a)
	now_b := {"root_secrets": {}, "root_pins": {}, "signer_secrets": {"ostiary-system/phbelitz-secret": b.signers[0].key}}
	d := h.first(object.union(h.request("default", [img]), {"trust_material": now_b}), testdata.policies.trust_phbelitz)
	d.allowed == false
	d.pin == null
	h.has_reason(d, "did the key just change?")

	# with the key it was verified with, the same facts pass
	h.first(h.request("default", [img]), testdata.policies.trust_phbelitz).allowed == true
}

test_signer_facts_without_a_key_prove_nothing if {
	a := testdata.facts.alice_test_phbelitz
	keyless := object.union(a, {"signers": [object.remove(a.signers[0], ["key"])]})
	req := object.union(unpinned_req, {
		"signer_secrets": [{"name": "phbelitz-secret", "namespace": "ostiary-system"}],
		"signer_keys": [a.signers[0].key],
	})
	trust.satisfied(h.trusted(0, "docker.io/phbelitz/alice-image:test", a), req)
	not trust.satisfied(h.trusted(0, "docker.io/phbelitz/alice-image:test", keyless), req)
}
