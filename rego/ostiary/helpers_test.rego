# METADATA
# description: |
#   Helpers shared by the library's tests: inputs built from the generated fixtures in
#   data.ostiary.testdata (testdata.rego, made by tests/unit/gen_rego_testdata.py).
#   Decisions are taken with data.ostiary.custom emptied, so that custom rules loaded beside the
#   library (`ostiary test --rego-dir`) cannot change what these tests see.
package ostiary.test_helpers

import rego.v1

import data.ostiary.main
import data.ostiary.testdata

# site: the image `text` as input.images[id] (ImageSite.as_input from the generator).
site(id, text) := object.union(testdata.images[text], {
	"id": id,
	"path": sprintf("/spec/containers/%d/image", [id]),
	"container": {"kind": "containers", "name": sprintf("c%d", [id])},
})

# trusted: the image with its trust facts (input.images[i].trust).
trusted(id, text, facts) := object.union(site(id, text), {"trust": facts})

# request: the input document of a Pod in namespace `ns` with the given input images.
request(ns, images) := {
	"request": {
		"uid": "0df28fbd-5f5f-4b2a-9b4b-3d7a0a8a7b1e",
		"operation": "CREATE",
		"kind": {"group": "", "version": "v1", "kind": "Pod"},
		"resource": {"group": "", "version": "v1", "resource": "pods"},
		"subResource": null,
		"name": "pod",
		"namespace": ns,
		"dryRun": false,
		"userInfo": {"username": "tester"},
	},
	"object": {},
	"images": images,
	"config": testdata.config,
	"trust_material": material_of(images),
}

# material_of: input.trust_material as the Reviewer would read it when the signer secrets (of
# ClusterImagePolicies: in the system namespace) hold the keys the facts were verified with, and
# no root is pinned. Tests of what the decision proves give their own (trust_test.rego).
material_of(images) := {
	"root_secrets": {},
	"root_pins": {},
	"signer_secrets": {sprintf("%s/%s", [testdata.config.system_namespace, s.secret]): object.get(s, "key", null) |
		some img in images
		some s in object.get(img, ["trust", "signers"], [])
		is_string(object.get(s, "secret", null))
	},
}

# pod: a Pod in namespace "default" whose containers run the given image texts, in order.
pod(texts) := request("default", [site(i, t) | some i, t in texts])

pod_in(ns, texts) := request(ns, [site(i, t) | some i, t in texts])

decide(inp, policies) := d if {
	d := main.decision with input as inp with data.ostiary_policies as policies with data.ostiary.custom as {}
}

plan(inp, policies) := p if {
	p := main.plan with input as inp with data.ostiary_policies as policies with data.ostiary.custom as {}
}

# first: the decision about the only (first) image.
first(inp, policies) := decide(inp, policies).images[0]

# has_reason: some reason of the image decision contains `fragment`.
has_reason(image_decision, fragment) if {
	some r in image_decision.reasons
	contains(r, fragment)
}
