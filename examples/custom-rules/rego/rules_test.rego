# Unit tests of the custom rules: `ostiary test --rego-dir examples/custom-rules/rego`.
package ostiary.custom.rules_test

import rego.v1

import data.ostiary.custom.approved_registries
import data.ostiary.custom.no_latest
import data.ostiary.custom.production_signer
import data.ostiary.custom.requester

image(text, registry, tag) := {"image": text, "ref": {"valid": true, "registry": registry, "tag": tag}}

test_latest_is_denied if {
	count(no_latest.deny) == 1 with input as {"images": [image("nginx", "docker.io", "latest")]}
}

test_a_version_tag_passes if {
	count(no_latest.deny) == 0 with input as {"images": [image("nginx:1.25", "docker.io", "1.25")]}
}

test_unapproved_registry_is_denied if {
	some msg in approved_registries.deny with input as {"images": [image("quay.io/x/y:1", "quay.io", "1")]}
	contains(msg, "registry quay.io is not approved")
}

test_production_without_trust_facts_is_denied if {
	count(production_signer.deny) == 1 with input as {
		"object": {"metadata": {"labels": {"environment": "production"}}},
		"images": [image("registry.example.com/app:1", "registry.example.com", "1")],
	}
}

test_unlabelled_workloads_need_no_signer if {
	count(production_signer.deny) == 0 with input as {
		"object": {"metadata": {}},
		"images": [image("registry.example.com/app:1", "registry.example.com", "1")],
	}
}

test_requester_without_username_is_denied_in_production if {
	count(requester.deny) == 1 with input as {"request": {"namespace": "production", "userInfo": {}}}
}

test_release_managers_may_deploy_to_production if {
	count(requester.deny) == 0 with input as {"request": {"namespace": "production", "userInfo": {"username": "ann", "groups": ["release-managers"]}}}
}
