# METADATA
# description: |
#   Workloads labelled environment=production need every image released by the release signer:
#   role targets/del1, signed with the pinned key below, and that role signed the released digest.
#   Ostiary's input has the object, not its Namespace, so the label is read from the workload.
package ostiary.custom.production_signer

import rego.v1

release_role := "targets/del1"

release_keyids := {"5957cfccd680731c1f49cf97034d3959ab962fb5bf6e90478026281258149909"}

production if input.object.metadata.labels.environment == "production"

deny contains msg if {
	production
	some img in input.images
	not released_by_signer(img) # a helper: `not` over a missing field is then "not released", i.e. deny
	msg := sprintf("image %s: production workloads need a release signed by %s", [img.image, release_role])
}

released_by_signer(img) if {
	entry := img.trust.targets[img.ref.tag]
	is_string(entry.released)
	entry.roles[release_role] == entry.released
	some keyid in img.trust.roles[release_role].signed_by
	keyid in release_keyids
}
