# METADATA
# description: |
#   Tests of trust.check, which proves `satisfied` first and explains only when it fails: the same
#   answer as computing every explanation, proven over the fact space of the fixtures.
package ostiary.trust_check_test

import rego.v1

import data.ostiary.test_helpers as h
import data.ostiary.testdata
import data.ostiary.trust
import data.ostiary.trust_test

pin_a := trust_test.pin_a

# ---- satisfied first (trust.check): no explanation holds together with `satisfied` ----
# trust.check proves `satisfied` and computes the explanations only when it fails. That gives the
# answer of computing them all (an image with an explanation is denied) only if no explanation can
# hold for facts and a requirement that satisfy. Proven here over the fact space of the fixtures:
# every captured fact document and the same facts with one field changed in each way the tests
# above change them, for every test image of the same repository, under the requirement that fits
# the captured facts and the one that fits the changed facts (a requirement that fits neither fails
# facts_fit, so `satisfied` cannot hold under it; test_requirements_that_do_not_fit_never_satisfy).

fitting_req(f) := {
	"enabled": true,
	"server": f.server,
	"signer_secrets": [{"name": s.secret, "namespace": "ostiary-system"} | some s in f.signers],
	"root_secrets": [],
	"root_pins": sort(f.root_pins),
	"signer_keys": [object.get(s, "key", null) | some s in f.signers],
}

req_variants(f) := [r |
	base := fitting_req(f)
	some change in [
		{},
		{"server": "https://notary.example.com"},
		{"server": null},
		{"signer_secrets": []},
		{"signer_secrets": [{"name": "other-secret", "namespace": "ostiary-system"}]},
		{"signer_keys": ["sha256:other"]},
		{"root_pins": [pin_a]},
	]
	r := object.union(base, change)
]

fact_variants(f) := [v |
	some change in [
		{},
		{"verified": false, "error": "broken"},
		{"gun": "docker.io/phbelitz/other"},
		{"root_trust": "pinned", "root_pins": [pin_a]},
		{"root_trust": "recorded"},
		{"targets": {}},
		{"signers": []},
		{"signers": [object.union(s, {"error": "no key"}) | some s in f.signers]},
		{"roles": {}},
	]
	v := object.union(f, change)
]

# the test images of the repository the facts are about (facts about another are a fact variant)
images_of(gun) := [t | some t, img in testdata.images; object.get(img.ref, "name", "") == gun]

# [facts, image, explanations] of every combination of the fact variants from..to that satisfies
satisfying(from, to) := [[name, t, trust.explanations(img, req)] |
	some name, f in testdata.facts
	some t in images_of(f.gun)
	site := h.site(0, t)
	some fv in array.slice(fact_variants(f), from, to)
	img := object.union(site, {"trust": fv})
	some req in {fitting_req(f), fitting_req(fv)}
	trust.satisfied(img, req)
]

# In parts, so that each stays well within opa test's time limit on a busy machine.
test_no_explanation_holds_with_satisfied if {
	cases := satisfying(0, 2)

	# not vacuous: many combinations satisfy, across facts and images
	count(cases) >= 10
	count({c[0] | some c in cases}) >= 8
	[c | some c in cases; count(c[2]) > 0] == []
}

test_no_explanation_holds_with_satisfied_other_gun_or_pinned_root if {
	[c | some c in satisfying(2, 4); count(c[2]) > 0] == []
}

test_no_explanation_holds_with_satisfied_recorded_root_or_no_targets if {
	[c | some c in satisfying(4, 6); count(c[2]) > 0] == []
}

test_no_explanation_holds_with_satisfied_changed_signers if {
	[c | some c in satisfying(6, 8); count(c[2]) > 0] == []
}

test_no_explanation_holds_with_satisfied_no_roles if {
	[c | some c in satisfying(8, 9); count(c[2]) > 0] == []
}

test_requirements_that_do_not_fit_never_satisfy if {
	every f in testdata.facts {
		every t in images_of(f.gun) {
			every req in [r | some r in req_variants(f); r != fitting_req(f)] {
				not trust.satisfied(h.trusted(0, t, f), req)
			}
		}
	}
}

test_check_gives_satisfied_or_the_explanations if {
	every f in testdata.facts {
		every t in images_of(f.gun) {
			check_agrees(h.trusted(0, t, f), fitting_req(f))
		}
	}
}

check_agrees(img, req) if {
	trust.satisfied(img, req)
	trust.check(img, req) == {"violations": set(), "pin": trust.pinned_digest(img, req)}
}

check_agrees(img, req) if {
	not trust.satisfied(img, req)
	c := trust.check(img, req)
	c.pin == null
	count(c.violations) > 0
	c.violations == trust.explanations(img, req)
}

check_agrees(img, req) if {
	not trust.satisfied(img, req)
	count(trust.explanations(img, req)) == 0
	trust.check(img, req).violations == {"trust requirements are not met by the trust facts (incomplete or malformed facts); denied"}
}
