# METADATA
# description: |
#   Tests of the composition of custom rules (package ostiary.custom.<name>) into the decision.
#   The modules under test are custom_fixture_*_test.rego; they only act on test requests with
#   their names. Assertions use `in` where rules loaded beside the library could add messages.
package ostiary.custom_test

import rego.v1

import data.ostiary.main
import data.ostiary.test_helpers as h
import data.ostiary.testdata

named(name, texts) := json.patch(h.pod(texts), [{"op": "replace", "path": "/request/name", "value": name}])

open_image := "registry.example.com/open/app:1.0"

test_custom_deny_set_denies_the_request_with_its_message if {
	d := main.decision with input as named("ostiary-test-custom-deny", [open_image])
		with data.ostiary_policies as testdata.policies.plan
	d.allowed == false
	"fixture_deny: unreviewed image registry.example.com/open/app:1.0" in d.denials
	d.images[0].allowed == true # the policy allows the image; the custom rule denies the request
}

test_custom_warn_adds_warnings_without_denying if {
	d := main.decision with input as named("ostiary-test-custom-warn", [open_image])
		with data.ostiary_policies as testdata.policies.plan
	"fixture_deny: consider pinning images by digest" in d.warnings
	every m in d.denials {
		not startswith(m, "fixture_")
	}
	d.images[0].allowed == true
}

test_custom_deny_as_boolean_fails_closed if {
	d := main.decision with input as named("ostiary-test-custom-bool", [open_image])
		with data.ostiary_policies as testdata.policies.plan
	d.allowed == false
	"custom rules fixture_bool: deny must be a set of messages (deny contains msg if ...); denied" in d.denials
}

test_custom_rules_are_silent_for_other_requests if {
	d := main.decision with input as h.pod([open_image]) with data.ostiary_policies as testdata.policies.plan
	every m in d.denials {
		not startswith(m, "fixture_")
		not startswith(m, "custom rules fixture_")
	}
	every w in d.warnings {
		not startswith(w, "fixture_")
	}
}

test_custom_deny_applies_to_a_request_without_images if {
	d := main.decision with input as h.pod([]) with data.ostiary_policies as {}
		with data.ostiary.custom as {"team": {"deny": {"no images is suspicious"}}}
	d == {"allowed": false, "denials": ["team: no images is suspicious"], "warnings": [], "images": []}
}

test_custom_denials_and_image_denials_are_composed_and_sorted if {
	d := main.decision with input as h.pod(["ubuntu.evil.io/x"]) with data.ostiary_policies as testdata.policies.plan
		with data.ostiary.custom as {"zz": {"deny": {"late"}}, "aa": {"deny": {"early", 7}}}
	d.allowed == false
	d.denials == [
		"aa: 7",
		"aa: early",
		"image ubuntu.evil.io/x (/spec/containers/0/image): no repository entry in the ClusterImagePolicies matches ubuntu.evil.io/x:latest (no match means deny)",
		"zz: late",
	]
}

test_custom_deny_not_a_set_fails_closed if {
	every value in [["an array"], {"an": "object"}, "a string", 1] {
		d := main.decision with input as h.pod([]) with data.ostiary_policies as {}
			with data.ostiary.custom as {"odd": {"deny": value}}
		d.denials == ["custom rules odd: deny must be a set of messages (deny contains msg if ...); denied"]
	}
}

test_custom_empty_deny_set_allows if {
	d := main.decision with input as h.pod([open_image]) with data.ostiary_policies as testdata.policies.plan
		with data.ostiary.custom as {"quiet": {"deny": set(), "warn": set()}}
	d.allowed == true
	d.warnings == []
}

test_custom_warnings_follow_image_warnings if {
	d := main.decision with input as h.pod(["registry.example.com/team/app:1.0"])
		with data.ostiary_policies as testdata.policies.warn
		with data.ostiary.custom as {"team": {"warn": {"b", "a"}}}
	d.allowed == true
	d.warnings == [
		"image registry.example.com/team/app:1.0: warn mode: trust data unavailable (not gathered for this image); denied",
		"team: a",
		"team: b",
	]
}

test_custom_warn_not_a_set_is_ignored if {
	d := main.decision with input as h.pod([]) with data.ostiary_policies as {}
		with data.ostiary.custom as {"odd": {"warn": ["x"]}}
	d.allowed == true
	d.warnings == []
}

test_custom_denials_and_warnings_sets if {
	ds := main.custom_denials with input as h.pod([]) with data.ostiary.custom as {"a": {"deny": {"x"}}, "b": {"deny": true}}
	ds == {"a: x", "custom rules b: deny must be a set of messages (deny contains msg if ...); denied"}
	ws := main.custom_warnings with input as h.pod([]) with data.ostiary.custom as {"a": {"warn": {"y"}}}
	ws == {"a: y"}
}
