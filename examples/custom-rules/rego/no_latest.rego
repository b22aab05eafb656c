# METADATA
# description: No image may use the tag `latest`, written or implied (`nginx` means `nginx:latest`).
package ostiary.custom.no_latest

import rego.v1

deny contains msg if {
	some img in input.images
	img.ref.valid == true
	img.ref.tag == "latest"
	msg := sprintf("image %s uses the tag latest (written or implied); name a version or a digest", [img.image])
}
