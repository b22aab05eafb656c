# METADATA
# description: |
#   Which repository entry of which policy applies to an image (Portieris semantics on normalized
#   names; docs/policies.md). Entries carry patterns already normalized by the translator.
package ostiary.matching

import rego.v1

# entry_matches holds when a repository entry's pattern covers the image reference. Host, path
# and tag are matched separately, so a `*` never spans from the path into the registry host.
entry_matches(entry, ref) if {
	part_matches(entry.pattern.host, entry.pattern.host_regex, ref.registry)
	part_matches(entry.pattern.path, entry.pattern.path_regex, ref.repository)
	tag_matches(entry.pattern, ref)
}

# Literal parts compare as strings (cheap, and most entries fail here); only parts with a `*`
# use their anchored regular expression.
part_matches(literal, _, value) if {
	not contains(literal, "*")
	literal == value
}

part_matches(literal, pattern_regex, value) if {
	contains(literal, "*")
	regex.match(pattern_regex, value)
}

tag_matches(pattern, _) if pattern.any_tag

tag_matches(pattern, ref) if {
	not pattern.any_tag
	is_string(ref.tag)
	regex.match(pattern.tag_regex, ref.tag)
}

# is_exact: a pattern without wildcard equal to the image's name:tag (the digest aside).
is_exact(entry, ref) if {
	is_string(entry.pattern.exact)
	is_string(ref.tag)
	entry.pattern.exact == sprintf("%s:%s", [ref.name, ref.tag])
}

# has_requirements: the entry asks for something beyond "allow".
has_requirements(entry) if entry.policy.trust.enabled == true

has_requirements(entry) if {
	some kind in {"simple", "va", "vulnerability"}
	entry.policy[kind]
}

exact_rank(entry, ref) := 0 if is_exact(entry, ref)

else := 1

requirement_rank(entry) := 0 if has_requirements(entry)

else := 1

# sort_key orders candidates: exact match first, then most non-wildcard characters, then an
# entry with requirements, then kind, namespace, name and entry index (deterministic).
sort_key(policy, entry, ref) := [
	exact_rank(entry, ref),
	0 - entry.pattern.specificity,
	requirement_rank(entry),
	policy.kind,
	namespace_key(policy),
	policy.name,
	entry.index,
]

namespace_key(policy) := policy.namespace if is_string(policy.namespace)

else := ""

candidates(ref, policies) := {c |
	some policy in policies
	some entry in policy.repositories
	entry_matches(entry, ref)
	c := {"key": sort_key(policy, entry, ref), "policy": policy, "entry": entry}
}

# best is undefined when no entry matches.
best(ref, policies) := c if {
	cs := candidates(ref, policies)
	count(cs) > 0
	lowest := min({x.key | some x in cs})
	some c in cs
	c.key == lowest
}
