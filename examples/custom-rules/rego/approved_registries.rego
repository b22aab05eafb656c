# METADATA
# description: Images come from approved registries only.
package ostiary.custom.approved_registries

import rego.v1

approved := {"registry.example.com", "docker.io"}

deny contains msg if {
	some img in input.images
	img.ref.valid == true
	not img.ref.registry in approved
	msg := sprintf("image %s: registry %s is not approved (approved: %s)", [img.image, img.ref.registry, concat(", ", sort(approved))])
}
