# METADATA
# description: |
#   Which repository entry of which policy applies to an image (Portieris semantics on normalized
#   names; docs/policies.md). Entries carry patterns already normalized by the translator, and
#   their rank: everything of the order in which entries win that depends on the policy alone.
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
	part_matches(pattern.tag, pattern.tag_regex, ref.tag)
}

# The order in which entries win, lowest first (the translator's `rank` of each entry,
# app/policies/translate.py entry_rank): an exact pattern (a tag and no wildcard: when it matches
# an image it equals the image's name:tag, the digest aside), then most non-wildcard characters,
# then an entry with requirements, then kind, namespace, policy name and entry index, so the
# choice never depends on the order policies or entries are read in. The rank tells every entry
# of a scope apart, so comparing [rank, policy, entry] triples compares ranks only.

# best_of: the winning {policy, entry} among `offered` ([policy head, entry] pairs), undefined when
# none matches the image.
best_of(ref, offered) := {"policy": m[1], "entry": m[2]} if {
	ms := [[entry.rank, o[0], entry] |
		some o in offered
		entry := o[1]
		entry_matches(entry, ref)
	]
	count(ms) > 0
	m := min(ms)
}

# best: the same against every entry of `policies` (no host index; the tests compare the two).
best(ref, policies) := best_of(ref, [[policy.head, entry] |
	some policy in policies
	some entry in policy.repositories
])

candidates(ref, policies) := [{"policy": policy.head, "entry": entry} |
	some policy in policies
	some entry in policy.repositories
	entry_matches(entry, ref)
]

# host_keys: the buckets an image of `host` looks in: its exact host, and every suffix of its
# labels (including none) for the wildcard entries. At most one more key than the host has labels.
# Entries are bucketed by the translator (app/policies/translate.py Pattern.host_bucket, stored as
# entry.pattern.host_bucket and in each policy's by_host).
host_keys(host) := array.concat([concat("", ["=", host])], [concat("", ["*", concat(".", array.slice(labels, i, n))]) |
	labels := split(host, ".")
	n := count(labels)
	some i in numbers.range(0, n)
])
