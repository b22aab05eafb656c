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

candidates(ref, policies) := candidates_of(ref, [{"policy": policy, "entry": entry} |
	some policy in policies
	some entry in policy.repositories
])

# candidates_of: the matching ones among {policy, entry} items. An array, not a set: a set would
# hash every candidate's whole entry to insert it, and the sort key already tells them apart.
candidates_of(ref, items) := [c |
	some item in items
	entry_matches(item.entry, ref)
	c := {"key": sort_key(item.policy, item.entry, ref), "policy": item.policy, "entry": item.entry}
]

# best is undefined when no entry matches.
best(ref, policies) := lowest_of(candidates(ref, policies))

best_of(ref, items) := lowest_of(candidates_of(ref, items))

lowest_of(cs) := c if {
	count(cs) > 0
	lowest := min({x.key | some x in cs})
	some c in cs
	c.key == lowest
}

# host_keys: the buckets an image of `host` looks in: its exact host, and every suffix of its
# labels (including none) for the wildcard entries. At most one more key than the host has labels.
# Entries are bucketed by the translator (app/policies/translate.py Pattern.host_bucket, stored as
# entry.pattern.host_bucket and in each policy's by_host).
host_keys(host) := array.concat([concat("", ["=", host])], [concat("", ["*", concat(".", array.slice(labels, i, n))]) |
	labels := split(host, ".")
	n := count(labels)
	some i in numbers.range(0, n)
])
