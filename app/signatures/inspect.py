"""`ostiary trust inspect --format cosign|simple|notation`: the facts of one requirement as a person reads
them, one line per signature found (and one clear line when none was), beside the JSON facts.

A signature line says what the signature proves without the policy's identity rules (those are Rego's,
applied at admission): the key or CA it verified with (cosign key-based, simple signing, Notation), or
the certificate identity, OIDC issuer and Rekor entry (keyless), the identity it signs and the digest
it signs — or why it proves nothing.

    valid    registry.test/app:sha256-….sig layer 0: cosign key sha256:ab…, signs sha256:12… (the
             reference's digest), identity registry.test/app
    invalid  registry.test/app@sha256:… (from …): the signature does not verify with any key …
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LABELS = {"cosign": "cosign", "simple": "simple signing", "notation": "Notation"}


def _keyless(facts: Mapping[str, Any]) -> bool:
    requirement = facts.get("requirement")
    return isinstance(requirement, Mapping) and requirement.get("type") == "keyless"


def proves(facts: Mapping[str, Any], signature: Mapping[str, Any]) -> bool:
    """Whether `signature` verified (by a key of the requirement, or keyless through the trusted root),
    passed every Notation validation, and signs the digest the reference resolves to. Identity rules
    and Notation's verification levels are not applied here."""
    if signature.get("error") is not None or signature.get("digest") != facts.get("digest"):
        return False
    if any((signature.get("failures") or {}).values()):  # Notation: every validation counts, as strict
        return False
    if _keyless(facts):
        return isinstance(signature.get("certificate"), Mapping)
    return signature.get("key_id") in (facts.get("keys") or [])


def ok(facts: Mapping[str, Any]) -> bool:
    """Some signature proves the digest (see `proves`)."""
    return facts.get("verified") is True and any(proves(facts, s) for s in facts.get("signatures") or [])


def _who(facts: Mapping[str, Any], signature: Mapping[str, Any]) -> list[str]:
    fmt = facts.get("format")
    parts = []
    certificate = signature.get("certificate")
    if isinstance(certificate, Mapping):
        subjects = ", ".join(str(s) for s in certificate.get("subjects") or []) or "(no subject)"
        parts.append(f"keyless, subject {subjects}, issuer {certificate.get('issuer')}")
        for name, value in sorted((certificate.get("extensions") or {}).items()):
            parts.append(f"{name} {value}")
        entry = signature.get("log_entry")
        if isinstance(entry, Mapping):
            parts.append(f"Rekor entry {entry.get('index')} at {entry.get('integrated_time')}")
    elif signature.get("key_id") is not None:
        kind = {"cosign": "cosign key", "simple": "OpenPGP key", "notation": "CA"}.get(str(fmt), "key")
        parts.append(f"{kind} {signature['key_id']}")
    subject = signature.get("subject_dn")
    if subject:
        parts.append(f"certificate subject {subject}")
    return parts


def describe(facts: Mapping[str, Any]) -> list[str]:
    """One line per signature of `facts` (a verifier's facts, app/signatures/facts.py); one line saying
    so when there are none, or why none could be looked for."""
    fmt = str(facts.get("format"))
    label = LABELS.get(fmt, fmt) + (" keyless" if _keyless(facts) else "")
    digest = facts.get("digest")
    if facts.get("verified") is not True:
        return [f"{label}: not verified: {facts.get('error')}"]
    signatures = facts.get("signatures") or []
    if not signatures:
        return [f"{label}: no signature found for {digest}"]
    lines = []
    for signature in signatures:
        parts = _who(facts, signature)
        signed = signature.get("digest")
        if signed is not None:
            parts.append(
                f"signs {signed} (the reference's digest)"
                if signed == digest
                else f"signs {signed}, not {digest} (a signature of another image)"
            )
        if signature.get("identity"):
            parts.append(f"identity {signature['identity']}")
        failed = [f"{name} failed: {why}" for name, why in (signature.get("failures") or {}).items() if why]
        if signature.get("error") is not None:
            parts.append(str(signature["error"]))
        elif failed:
            parts += failed
        elif not _keyless(facts) and signature.get("key_id") not in (facts.get("keys") or []):
            parts.append("not by a key given")
        verdict = "valid  " if proves(facts, signature) else "invalid"
        lines.append(f"{verdict} {signature.get('source')}: {', '.join(parts)}")
    return lines
