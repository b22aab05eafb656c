# METADATA
# description: |
#   Tests of data.ostiary.matching: which repository entry applies to an image (DESIGN.md,
#   "Policies"). Patterns are the translator's output (testdata.entries, testdata.policies) and
#   references the image parser's (testdata.images[text].ref).
package ostiary.matching_test

import rego.v1

import data.ostiary.matching
import data.ostiary.test_helpers as h
import data.ostiary.testdata

ref(text) := testdata.images[text].ref

matches(pattern, text) if {
	matching.entry_matches(testdata.entries[pattern], ref(text))
} else := false

# [pattern as written, image as written, expected]
match_cases := [
	# a pattern without a tag matches any tag and any digest
	["nginx", "nginx", true],
	["nginx", "nginx:1.25", true],
	["nginx", "nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true],
	["nginx", "nginx:1.25@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true],
	["nginx", "ubuntu", false],
	["docker.io/library/nginx", "index.docker.io/library/nginx:1.25", true],
	["index.docker.io/library/nginx", "nginx:1.25", true],
	["index.docker.io/library/nginx", "docker.io/library/nginx:1.25", true],
	# a tagged pattern matches only images carrying that tag
	["nginx:1.25", "nginx:1.25", true],
	["nginx:1.25", "docker.io/library/nginx:1.25", true],
	["nginx:1.25", "nginx:1.25@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true],
	["nginx:1.25", "nginx", false],
	["nginx:1.25", "nginx:latest", false],
	["nginx:1.25", "nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false],
	["docker.io/library/nginx:1.25", "nginx:1.25", true],
	# :latest matches an untagged image (normalized to :latest), not a digest-only one
	["nginx:latest", "nginx", true],
	["nginx:latest", "nginx:latest", true],
	["nginx:latest", "nginx:1.25", false],
	["nginx:latest", "nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false],
	# :* matches every tag, the untagged image included
	["nginx:*", "nginx", true],
	["nginx:*", "nginx:1.25", true],
	["nginx:*", "ubuntu:22.04", false],
	["icr.io/team/app:1.*", "icr.io/team/app:1.5", true],
	["icr.io/team/app:1.*", "icr.io/team/app:1.0", true],
	["icr.io/team/app:1.*", "icr.io/team/app:1-debug", false],
	["icr.io/team/app:1.*", "icr.io/team/app", false],
	["icr.io/team/app:1.*", "icr.io/team/app-debug:1", false],
	# name and tag are matched separately: `*` in the name never runs into the tag
	["icr.io/team/*-debug", "icr.io/team/app:1-debug", false],
	["icr.io/team/*-debug", "icr.io/team/app-debug", true],
	["icr.io/team/*-debug", "icr.io/team/app-debug:1", true],
	# the part before the first `/` matches only the registry host
	["*.trusted.io/org/*", "evil.io/x.trusted.io/org/app", false],
	["*.trusted.io/org/*", "registry.trusted.io/org/app", true],
	["*.trusted.io/org/*", "registry.trusted.io/other/app", false],
	["*.trusted.io/org/*", "trusted.io/org/app", false],
	["*.trusted.io/org/*", "evil.io/org/app", false],
	# Docker Hub names are normalized on both sides
	["docker.io/library/*", "nginx", true],
	["docker.io/library/*", "nginx:1.25", true],
	["docker.io/library/*", "index.docker.io/library/nginx:1.25", true],
	["docker.io/library/*", "myorg/app:1.0", false],
	["docker.io/library/*", "ubuntu.evil.io/library/ubuntu", false],
	["docker.io/*", "nginx", true],
	["docker.io/*", "myorg/app:1.0", true],
	["docker.io/*", "quay.io/org/app", false],
	["myorg/*", "myorg/app:1.0", true],
	["myorg/*", "docker.io/myorg/app:1.0", true],
	["myorg/*", "quay.io/org/app", false],
	["ubuntu*", "ubuntu", true],
	["ubuntu*", "ubuntu:22.04", true],
	["ubuntu*", "ubuntu-debug", true],
	["ubuntu*", "ubuntu.evil.io/x", false],
	["ubuntu*", "ubuntu.evil.io/library/ubuntu", false],
	# Portieris wildcards: prefix*, *suffix, mid*dle
	["icr.io/team/app*", "icr.io/team/app", true],
	["icr.io/team/app*", "icr.io/team/app2", true],
	["icr.io/team/app*", "icr.io/team/app-debug:1", true],
	["icr.io/team/app*", "icr.io/team/myapp", false],
	["icr.io/team/app*", "icr.io/other/app", false],
	["icr.io/team/*app", "icr.io/team/app", true],
	["icr.io/team/*app", "icr.io/team/myapp", true],
	["icr.io/team/*app", "icr.io/team/app2", false],
	["icr.io/team/a*p", "icr.io/team/app", true],
	["icr.io/team/a*p", "icr.io/team/abcp", true],
	["icr.io/team/a*p", "icr.io/team/ap", true],
	["icr.io/team/a*p", "icr.io/team/app2", false],
	["icr.io/team/a*p", "icr.io/team/myapp", false],
	["icr.io/team/*", "icr.io/team/app:1.0", true],
	["icr.io/team/*", "icr.io/other/app", false],
	["icr.io/*", "icr.io/team/app", true],
	["icr.io/*", "icr.io/other/app", true],
	["icr.io/*", "us.icr.io/team/app", false],
	["icr.io/*", "xicr.io/team/app", false],
	# `*` alone matches everything
	["*", "nginx", true],
	["*", "nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", true],
	["*", "evil.io/x.trusted.io/org/app", true],
	["*", "localhost:5000/app", true],
	["*", "de.icr.io/x/y/z:1", true],
	# registry wildcard
	["*.icr.io/*", "us.icr.io/team/app", true],
	["*.icr.io/*", "de.icr.io/x/y/z:1", true],
	["*.icr.io/*", "icr.io/team/app", false],
	["*.icr.io/*", "xicr.io/team/app", false],
	# a wildcard inside the first label, and a wildcard host with a port
	["reg*.example.com/*", "registry.example.com/team/app:1.0", true],
	["reg*.example.com/*", "us.icr.io/team/app", false],
	["*.corp.example.com:5000/*", "eu.corp.example.com:5000/team/app", true],
	["*.corp.example.com:5000/*", "eu.corp.example.com/team/app", false],
	# hosts with ports, localhost
	["localhost:5000/*", "localhost:5000/app", true],
	["localhost:5000/*", "localhost/app", false],
	["localhost/app", "localhost/app", true],
	["localhost/app", "localhost:5000/app", false],
	# regular-expression characters in a pattern are literal
	["registry.example.com/a.b/*", "registry.example.com/a.b/c", true],
	["registry.example.com/a.b/*", "registry.example.com/aab/c", false],
]

test_every_match_case_names_a_generated_pattern_and_image if {
	missing := [c | some c in match_cases; not testdata.entries[c[0]]]
	print("patterns missing from testdata.entries:", missing)
	count(missing) == 0
	unknown := [c | some c in match_cases; not testdata.images[c[1]].ref.valid]
	print("images missing from testdata.images (or invalid):", unknown)
	count(unknown) == 0
}

test_entry_matches_table if {
	wrong := [c | some c in match_cases; matches(c[0], c[1]) != c[2]]
	print("wrong match results [pattern, image, expected]:", wrong)
	count(wrong) == 0
}

test_host_embedding_does_not_admit_a_path_that_looks_like_a_host if {
	not matching.entry_matches(testdata.entries["*.trusted.io/org/*"], ref("evil.io/x.trusted.io/org/app"))
}

test_star_in_name_never_runs_into_the_tag if {
	not matching.entry_matches(testdata.entries["icr.io/team/*-debug"], ref("icr.io/team/app:1-debug"))
}

test_docker_library_pattern_matches_a_short_official_name if {
	matching.entry_matches(testdata.entries["docker.io/library/*"], ref("nginx"))
}

test_official_pattern_prefix_does_not_match_a_registry_host if {
	not matching.entry_matches(testdata.entries["ubuntu*"], ref("ubuntu.evil.io/x"))
}

test_latest_pattern_matches_untagged_image if {
	ref("nginx").tag == "latest"
	matching.entry_matches(testdata.entries["nginx:latest"], ref("nginx"))
}

test_tagged_pattern_does_not_match_digest_only_image if {
	not matching.entry_matches(testdata.entries["nginx:1.25"], ref("nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"))
}

test_tagless_pattern_matches_any_tag_and_digest if {
	matching.tag_matches(testdata.entries.nginx.pattern, ref("nginx:1.25"))
	matching.tag_matches(testdata.entries.nginx.pattern, ref("nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"))
}

test_tag_matches_needs_a_tag_when_the_pattern_has_one if {
	not matching.tag_matches(testdata.entries["nginx:1.25"].pattern, ref("nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"))
	matching.tag_matches(testdata.entries["nginx:1.25"].pattern, ref("nginx:1.25"))
}

# ---- exactness and rank (the translator's entry_rank) ----

test_exact_is_a_wildcard_free_pattern_with_a_tag if {
	testdata.entries["nginx:1.25"].rank[0] == 0
	testdata.entries["docker.io/library/nginx:1.25"].rank[0] == 0
	testdata.entries["nginx:latest"].rank[0] == 0
	testdata.entries.nginx.rank[0] == 1
	testdata.entries["docker.io/library/nginx"].rank[0] == 1
	testdata.entries["nginx:*"].rank[0] == 1
}

# The rank's exactness needs no image: an exact entry that matches an image equals the image's
# name:tag (the digest aside), for every translated pattern and every test image.
test_an_exact_entry_that_matches_equals_the_image_name_and_tag if {
	wrong := [[p, t] |
		some p, entry in testdata.entries
		entry.rank[0] == 0
		some t, img in testdata.images
		img.ref.valid == true
		matching.entry_matches(entry, img.ref)
		entry.pattern.exact != sprintf("%s:%s", [img.ref.name, img.ref.tag])
	]
	wrong == []

	# and a tagged pattern never matches a digest-only image, so exactness never meets one
	not matching.entry_matches(testdata.entries["nginx:1.25"], ref("nginx@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"))
}

test_rank_orders_exact_specificity_requirements_then_names if {
	policy := testdata.policies.specificity.cluster.specificity.policy
	policy.repositories[3].rank == [0, -19, 1, "ClusterImagePolicy", "", "specificity", 3]
	ties := testdata.policies.ties.cluster
	some e in ties["b-policy"].policy.repositories
	e.name == "quay.io/org/*pp"
	e.rank[2] == 0 # trust: an entry with requirements
	some f in ties["a-policy"].policy.repositories
	f.name == "quay.io/org/ap*"
	f.rank[2] == 1
}

specificity_policies := [p.policy | some p in testdata.policies.specificity.cluster]

best_index(text) := matching.best(ref(text), specificity_policies).entry.index

test_candidates_are_every_matching_entry if {
	cs := matching.candidates(ref("icr.io/team/app:1.0"), specificity_policies)
	{c.entry.index | some c in cs} == {0, 1, 2, 3}
}

test_best_is_undefined_without_a_match if {
	not matching.best(ref("quay.io/org/app"), specificity_policies)
	not matching.best(ref("nginx"), [])
}

# ---- selection ----

test_exact_match_wins_over_equally_specific_wildcard_with_requirements if {
	# entry 2 `icr.io/team/app:1.0*` has as many literal characters and trust; entry 3 is exact
	best_index("icr.io/team/app:1.0") == 3
}

test_exact_match_wins_when_the_image_carries_a_digest if {
	best_index("icr.io/team/app:1.0@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa") == 3
}

test_most_non_wildcard_characters_wins if {
	best_index("icr.io/team/app:1.5") == 1 # icr.io/team/* over icr.io/*
	best_index("icr.io/other/app") == 0
}

test_tagless_pattern_scores_by_specificity_for_any_tag if {
	best_index("icr.io/team/tagless:9") == 4
}

test_tagged_pattern_does_not_apply_to_other_tags_or_digest_only if {
	best_index("icr.io/team/tagged:2.0") == 5
	best_index("icr.io/team/tagged:2.1") == 1
	best_index("icr.io/team/tagged@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb") == 1
}

selected_policy(text) := h.plan(h.pod([text]), testdata.policies.ties).images[0].policy

test_tie_requirements_beat_none if {
	# a-policy `quay.io/org/ap*` and b-policy `quay.io/org/*pp` are equally specific; b has trust
	p := selected_policy("quay.io/org/app")
	p.name == "b-policy"
	p.repository == "quay.io/org/*pp"
}

test_tie_without_requirements_is_broken_by_policy_name if {
	# b-policy is first in the YAML, a-policy first by name
	p := selected_policy("quay.io/org/xx")
	p.name == "a-policy"
	p.repository == "quay.io/org/x*"
}

test_tie_in_one_policy_is_broken_by_entry_index if {
	p := selected_policy("quay.io/org/yy")
	p.name == "a-policy"
	p.index == 2
}

test_tie_break_is_the_same_in_the_decision if {
	d := h.decide(h.pod(["quay.io/org/app"]), testdata.policies.ties)
	d.images[0].policy.name == "b-policy"
	d.images[0].allowed == false # trust without facts
}

test_best_does_not_depend_on_the_order_of_policies if {
	ps := [p.policy | some p in testdata.policies.ties.cluster]
	reversed := [ps[(count(ps) - 1) - i] | some i, _ in ps]
	every text in ["quay.io/org/app", "quay.io/org/xx", "quay.io/org/yy"] {
		a := matching.best(ref(text), ps)
		b := matching.best(ref(text), reversed)
		[a.policy.name, a.entry.index] == [b.policy.name, b.entry.index]
	}
}

# The host index (the translator's pattern.host_bucket / matching.host_keys) is only an optimisation: it must offer every
# entry that entry_matches would match, for every case of the table above.
indexed(pattern, text) if testdata.entries[pattern].pattern.host_bucket in matching.host_keys(ref(text).registry)

test_the_host_index_offers_every_matching_entry if {
	hidden := [c | some c in match_cases; matches(c[0], c[1]) == true; not indexed(c[0], c[1])]
	hidden == []
}

test_host_buckets if {
	testdata.entries["icr.io/team/app"].pattern.host_bucket == "=icr.io"
	testdata.entries["*.icr.io/*"].pattern.host_bucket == "*icr.io"
	testdata.entries["reg*.example.com/*"].pattern.host_bucket == "*example.com"
	testdata.entries["*"].pattern.host_bucket == "*"
	matching.host_keys("a.b.io") == ["=a.b.io", "*a.b.io", "*b.io", "*io", "*"]
}
