# METADATA
# description: |
#   A custom rules module that wrongly defines `deny` as a boolean instead of a set of messages,
#   for custom_test.rego: the decision must fail closed. Only for the test request named below.
package ostiary.custom.fixture_bool

import rego.v1

deny if input.request.name == "ostiary-test-custom-bool"
