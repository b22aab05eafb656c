"""The verification core's public names, as callers have imported them (`from app.notary.verify import ...`).

The code lives in its own modules (docs/internals.md, "The trust core"):

- metadata.py: limits, typed metadata (Key, RoleSpec, Envelope, Root, Timestamp, Snapshot, Targets)
  and the parsers and per-document checks;
- pins.py: pinned roots (RootPin, root_pin, default root pins, check_pinned_root);
- trusted.py: the state machine TrustedRepository and check_rotation;
- walker.py: the one walk over a repository (walk, load_all).
"""

from __future__ import annotations

from app.notary.metadata import (
    MAX_DELEGATIONS_PER_ROLE,
    MAX_KEYIDS_PER_ROLE,
    MAX_KEYS,
    MAX_META_ENTRIES,
    MAX_PATHS_PER_DELEGATION,
    MAX_ROLES,
    MAX_SIGNATURES,
    MAX_TARGETS_PER_ROLE,
    RELEASES_ROLE,
    TOP_ROLES,
    Envelope,
    Key,
    PrefixIndex,
    RoleSpec,
    Root,
    check_meta,
    check_signatures,
    parse_delegations,
    parse_envelope,
    parse_keys,
    parse_meta,
    parse_role_spec,
    parse_root,
    parse_targets,
    parse_time,
    restrict_paths,
    valid_delegation_name,
)
from app.notary.pins import (
    MAX_PIN_BLOCKS,
    RootPin,
    check_pinned_root,
    default_root_pins,
    load_default_root_pins,
    pem_blocks,
    root_pin,
)
from app.notary.trusted import TrustedRepository, check_rotation
from app.notary.walker import load_all, walk

__all__ = [
    "MAX_DELEGATIONS_PER_ROLE",
    "MAX_KEYIDS_PER_ROLE",
    "MAX_KEYS",
    "MAX_META_ENTRIES",
    "MAX_PATHS_PER_DELEGATION",
    "MAX_PIN_BLOCKS",
    "MAX_ROLES",
    "MAX_SIGNATURES",
    "MAX_TARGETS_PER_ROLE",
    "RELEASES_ROLE",
    "TOP_ROLES",
    "Envelope",
    "Key",
    "PrefixIndex",
    "RoleSpec",
    "Root",
    "RootPin",
    "TrustedRepository",
    "check_meta",
    "check_pinned_root",
    "check_rotation",
    "check_signatures",
    "default_root_pins",
    "load_all",
    "load_default_root_pins",
    "parse_delegations",
    "parse_envelope",
    "parse_keys",
    "parse_meta",
    "parse_role_spec",
    "parse_root",
    "parse_targets",
    "parse_time",
    "pem_blocks",
    "restrict_paths",
    "root_pin",
    "valid_delegation_name",
    "walk",
]
