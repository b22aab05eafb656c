"""`ostiary trust inspect IMAGE`: the trust facts of one image, as the admission path would see them.

Why: when a pod is denied for trust reasons, the person holding the pager needs to see exactly what
Ostiary saw (which roles verified, which digest each signed, which key IDs a signer key maps to)
without a cluster. This runs the same TrustService an admission runs, for one image, once.

The facts are the document `input.images[i].trust` of the decision query (docs/internals.md).
"verified" here means: the trust data verified, the tag (or digest) is released, and when signers were
given, every signer key was readable and its role signed that same released digest (summarize_verified).
That is a convenience summary for a terminal; admission decisions are made by the Rego policy.

    facts, ok = inspect_image("docker.io/library/alpine:3.19", trust_server=None, ca_file=None,
                              signers=[], at=None, default_servers=DEFAULT_TRUST_SERVERS)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from app.images import InvalidImageReference, parse_image
from app.notary import clock as clocks
from app.notary.errors import BadImageReference, NoTrustServer
from app.notary.facts import failure_facts
from app.notary.metadata import valid_delegation_name
from app.notary.servers import DEFAULT_TRUST_SERVERS, trust_server_for
from app.notary.service import Signer, TrustRequest, TrustService
from app.notary.settings import TrustSettings

DEFAULT_TIMEOUT = 30.0


def inspect_image(
    image: str,
    *,
    trust_server: str | None,
    ca_file: str | None,
    signers: Sequence[tuple[str, str]],
    at: datetime | None,
    default_servers: Mapping[str, str] = DEFAULT_TRUST_SERVERS,
    credentials: Sequence[tuple[str, str]] = (),
    timeout: float = DEFAULT_TIMEOUT,
) -> tuple[dict, bool]:
    """(facts, verified) for `image`; `signers` are (name, PEM) pairs; `at` fixes the clock (UTC if naive).

    Never raises for trust failures or a bad image reference: they are in the facts' `error`.
    """
    signer_list = tuple(
        Signer(secret=f"--signer {name}", name=name, public_key_pem=pem) for name, pem in signers
    )
    signer_tuples = [(s.secret, s.name, s.public_key_pem) for s in signer_list]
    try:
        ref = parse_image(image)
    except InvalidImageReference as invalid:
        facts = failure_facts(
            trust_server, image, None, None, BadImageReference(None, str(invalid)), signer_tuples
        )
        return facts, False
    server = trust_server_for(ref.registry, trust_server, dict(default_servers))
    if server is None:
        error = NoTrustServer(
            None,
            f"no Notary trust server is known for registry {ref.registry}; pass --trust-server URL",
        )
        facts = failure_facts(None, ref.name, ref.tag, ref.digest, error, signer_tuples)
        return facts, False
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    moment = at

    def clock() -> datetime:
        return moment if moment is not None else clocks.utcnow()

    service = TrustService(TrustSettings(cache_entries=0), ca_file=ca_file, clock=clock)
    try:
        request = TrustRequest(image=ref, server=server, signers=signer_list, credentials=tuple(credentials))
        facts = service.gather([request], deadline=clocks.monotonic() + timeout)[0]
    finally:
        service.close()
    return facts, summarize_verified(facts)


def parse_signer_option(text: str) -> tuple[str, str]:
    """`--signer NAME=PEMFILE` -> (name, PEM text); ValueError with a message for the command line."""
    name, sep, path = text.partition("=")
    name = name.strip()
    if not sep or not name or not path:
        raise ValueError(f"--signer {text!r}: expected NAME=PEMFILE")
    if not valid_delegation_name(f"targets/{name}") or "/" in name:
        raise ValueError(f"--signer {text!r}: {name!r} is not a valid signer name")
    try:
        with open(path, encoding="utf-8") as handle:
            return name, handle.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"--signer {text!r}: cannot read {path}: {error}") from error


def parse_at_option(text: str) -> datetime:
    """`--at 2020-11-20T00:00:00Z` (or a date) -> an aware UTC datetime; ValueError otherwise."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise ValueError(f"--at {text!r}: not an ISO 8601 time such as 2020-11-20T00:00:00Z") from error
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def summarize_verified(facts: Mapping) -> bool:
    """True when the trust data verified, the reference is released, and every signer signed that release.

        A tag must have a released digest (and equal the written digest for tag@digest); a digest-only
        reference must be the released digest of some tag. Each required signer's role must have signed the
        same digest, and a signature with the signer's key must have verified over that role (the same
    rule the Rego policy applies).
    """
    return explain(facts) is None


def explain(facts: Mapping) -> str | None:
    """Why `summarize_verified` is False, in one sentence for a terminal; None when it is True."""
    if facts.get("verified") is not True:
        return str(facts.get("error") or "trust data not verified")
    targets = facts.get("targets") or {}
    wanted = facts.get("digest")
    tag = facts.get("tag")
    entries = [
        entry
        for entry in targets.values()
        if entry.get("released") and (wanted is None or entry.get("released") == wanted)
    ]
    if not entries:
        if tag is not None and wanted is None:
            return f"tag {tag} is not signed by targets or targets/releases"
        if tag is not None:
            released = (targets.get(tag) or {}).get("released")
            return f"tag {tag} is released as {released}, not {wanted}"
        return f"digest {wanted} is not the released digest of any signed tag"
    roles = facts.get("roles") or {}
    for signer in facts.get("signers") or []:
        if signer.get("error"):
            return str(signer["error"])
        role = signer.get("role")
        signed_by = set((roles.get(role) or {}).get("signed_by") or [])
        if not signed_by & set(signer.get("keyids") or []):
            return (
                f"signer {signer.get('name')} ({role}): the role is not signed with the given key"
                if role in roles
                else f"signer {signer.get('name')}: the trust data has no role {role}"
            )
        if not any((entry.get("roles") or {}).get(role) == entry.get("released") for entry in entries):
            signed = sorted({d for e in entries if (d := (e.get("roles") or {}).get(role))})
            released = sorted({str(e.get("released")) for e in entries})
            if not signed:
                return f"signer {signer.get('name')} ({role}) did not sign this image"
            return (
                f"signer {signer.get('name')} ({role}) signed {', '.join(signed)}, "
                f"but the released digest is {', '.join(released)}"
            )
    return None
