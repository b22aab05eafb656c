# METADATA
# description: |
#   A custom rules module as a platform team writes it (package ostiary.custom.<name>), for
#   custom_test.rego. It only speaks for the test requests named below, so it changes no other
#   decision.
package ostiary.custom.fixture_deny

import rego.v1

deny contains msg if {
	input.request.name == "ostiary-test-custom-deny"
	some img in input.images
	startswith(img.ref.name, "registry.example.com/open/")
	msg := sprintf("unreviewed image %s", [img.image])
}

warn contains "consider pinning images by digest" if {
	input.request.name in {"ostiary-test-custom-deny", "ostiary-test-custom-warn"}
}
