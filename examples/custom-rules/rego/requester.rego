# METADATA
# description: Only the CI deployer (or members of release-managers) may change the production namespace.
package ostiary.custom.requester

import rego.v1

deployers := {"system:serviceaccount:ci:deployer"}

allowed_requester if input.request.userInfo.username in deployers

allowed_requester if "release-managers" in input.request.userInfo.groups

deny contains msg if {
	input.request.namespace == "production"
	not allowed_requester
	msg := sprintf("%s may not change the production namespace; deploy through CI", [object.get(input.request.userInfo, "username", "an anonymous requester")])
}
