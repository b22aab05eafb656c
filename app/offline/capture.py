"""`ostiary trust capture IMAGE... --out DIR`: record what Notary servers serve, byte for byte.

Why: trust policies deserve tests in CI, where there is no network and where yesterday's answer must
give today's verdict. A capture keeps the exact bytes of every role (root, timestamp, snapshot,
targets and each delegation the snapshot or a parent names) and what a replay needs (server URL, GUN,
the roles the server answered 404 for), so app/offline/replay.py can hand them to the real verifier
later, at a chosen time. Capture fetches with the webhook's own NotaryClient (same TLS, token flow and
size limits) and does not judge the bytes while fetching: a repository that does not verify is
captured as served, and the verification run afterwards (from the written files) says why.

Layout: DIR/ostiary-trust.json (format ostiary.dev/trust-capture/v1) and, per repository,
DIR/<server host>/<GUN>/<role>.json; delegations as DIR/.../targets/<name>.json.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from app.errors import InputError
from app.images import ImageRef, InvalidImageReference, parse_image
from app.notary import clock as clocks
from app.notary.client import NotaryClient
from app.notary.errors import LimitExceeded, RoleNotServed, TrustError
from app.notary.inspect import explain
from app.notary.metadata import parse_time, valid_delegation_name
from app.notary.servers import normalize_trust_server, trust_server_for
from app.notary.service import TrustRequest, TrustService
from app.notary.settings import TrustSettings
from app.notary.walker import MAX_DELEGATIONS
from app.offline.replay import INDEX_FORMAT, INDEX_NAME, ReplayClient, load_trust_data
from app.yamlio import DocumentError, load_json_file

TOP_LEVEL = ("root", "timestamp", "snapshot", "targets")


class CaptureError(InputError):
    """The capture cannot start (bad image reference, no server, unwritable directory)."""


@dataclass
class CaptureResult:
    image: str
    server: str
    gun: str
    path: str = ""
    roles: list[str] = field(default_factory=list)
    not_served: list[str] = field(default_factory=list)
    error: str | None = None  # why fetching failed (nothing written for the repository then)
    verified: str | None = None  # why the captured bytes do not verify now; None when they do
    valid_until: str | None = None  # the earliest `expires` of the captured roles (RFC 3339)
    expires_first: str | None = None  # the role that expires first
    tag_not_signed: bool = False  # the trust data verifies, and does not sign the image's tag

    @property
    def no_trust_data(self) -> bool:
        return self.error is None and not self.roles and "root" in self.not_served

    @property
    def unsigned(self) -> bool:
        """The image is not signed — the server has no trust data for the repository (root answered
        404), or the repository's trust data verifies and does not sign the tag: recorded as such, a
        negative fixture that offline runs deny exactly as the webhook denies it live. Trust data
        that does not verify (bad signature, expired, tampered) is not "unsigned": it fails the run."""
        return self.no_trust_data or (self.error is None and self.tag_not_signed)

    @property
    def ok(self) -> bool:
        return self.error is None and (self.verified is None or self.unsigned)

    def describe(self) -> str:
        if self.error:
            return f"{self.image}: not captured from {self.server}: {self.error}"
        if self.no_trust_data:
            return (
                f"{self.image}: recorded as UNSIGNED: {self.server} has no trust data for {self.gun} "
                "(a negative fixture: offline runs deny it as the webhook does)"
            )
        if self.unsigned:
            return (
                f"{self.image}: recorded as UNSIGNED: the trust data of {self.gun} verifies but {self.verified} "
                "(a negative fixture: offline runs deny it as the webhook does)"
            )
        head = f"{self.image}: captured {self.gun} from {self.server} into {self.path} ({', '.join(self.roles) or 'no roles'}"
        head += f"; not served: {', '.join(self.not_served)})" if self.not_served else ")"
        head += "; verifies now" if self.verified is None else f"; does NOT verify now: {self.verified}"
        if self.valid_until:
            head += f"; valid until {self.valid_until} ({self.expires_first} expires first)"
        return head


def earliest_expiry(served: dict[str, bytes]) -> tuple[str, str] | None:
    """(expires, role) of the captured role that expires first; None when no role says (bytes unjudged:
    a role without a readable `expires` is skipped, verification reports it)."""
    found: list[tuple[str, str]] = []
    for role, data in served.items():
        try:
            when = parse_time(role, json.loads(data)["signed"]["expires"])
        except (ValueError, KeyError, TypeError, TrustError):
            continue
        found.append((when.strftime("%Y-%m-%dT%H:%M:%SZ"), role))
    return min(found) if found else None


def validity_summary(results: list[CaptureResult]) -> str | None:
    """One line: until when the whole capture verifies (the earliest expiry of any captured role)."""
    dated = [(r.valid_until, r.gun, r.expires_first) for r in results if r.valid_until and r.error is None]
    if not dated:
        return None
    until, gun, role = min(dated)
    return (
        f"the capture verifies until {until} ({role} of {gun} expires first); offline runs after that "
        'need --at or a fresh capture (docs/policy-as-code.md, "Keeping captures fresh")'
    )


def _sub_directory(server: str, gun: str) -> str:
    host = urlsplit(server).netloc.replace(":", "_")
    return f"{host}/{gun.replace(':', '_')}"


def _named_roles(data: bytes, *, snapshot: bool) -> list[str]:
    """Delegation roles a snapshot lists, or a targets role delegates to (best effort: bytes unjudged)."""
    try:
        signed = json.loads(data)["signed"]
        names = list(signed["meta"]) if snapshot else [r["name"] for r in signed["delegations"]["roles"]]
    except (ValueError, KeyError, TypeError):
        return []
    return [n for n in names if isinstance(n, str) and n not in TOP_LEVEL and valid_delegation_name(n)]


def fetch_repository(
    client: NotaryClient,
    server: str,
    gun: str,
    deadline: float,
    credentials: tuple[tuple[str, str], ...] = (),
) -> tuple[dict[str, bytes], list[str]]:
    """Every role of (server, GUN) as served, and the roles answered 404. Raises FetchError otherwise.

    Not walker.walk: that walk verifies as it goes and stops at the first failure, while a capture
    must keep what a repository that does not verify serves (verification runs afterwards, through
    the service and so through the walker, on the written files)."""
    served: dict[str, bytes] = {}
    missing: list[str] = []
    queue: list[str] = list(TOP_LEVEL)
    asked: set[str] = set()
    while queue:
        role = queue.pop(0)
        if role in asked:
            continue
        asked.add(role)
        if len(asked) > len(TOP_LEVEL) + MAX_DELEGATIONS:
            raise LimitExceeded(
                role, f"{gun} names more than {MAX_DELEGATIONS} delegations; refusing to capture"
            )
        try:
            data = client.fetch_role(server, gun, role, deadline=deadline, credentials=credentials)
        except RoleNotServed:
            missing.append(role)
            if role == "root":
                break  # not signed on this server: nothing else to ask for
            continue
        served[role] = data
        if role == "snapshot":
            queue.extend(_named_roles(data, snapshot=True))
        elif role.startswith("targets"):
            queue.extend(_named_roles(data, snapshot=False))
    return served, missing


def _write(out: Path, sub: str, served: dict[str, bytes]) -> dict:
    base = out / sub
    if base.is_dir():
        shutil.rmtree(base)  # a role no longer served must not linger from an earlier capture
    files = {}
    for role, data in served.items():
        target = base / f"{role}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        files[role] = {"length": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return files


def _merge_index(out: Path, entries: list[dict]) -> None:
    index_file = out / INDEX_NAME
    index: dict = {"format": INDEX_FORMAT, "repositories": []}
    if index_file.is_file():
        try:
            index = load_json_file(index_file)
        except DocumentError as exc:
            raise CaptureError(f"{index_file} exists but is not JSON ({exc}); use another --out") from None
        if index.get("format") != INDEX_FORMAT:
            raise CaptureError(f"{index_file} is not an Ostiary trust capture; use another --out")
    replaced = {(e["server"], e["gun"]) for e in entries}
    kept = [e for e in index.get("repositories") or [] if (e.get("server"), e.get("gun")) not in replaced]
    index["repositories"] = sorted(kept + entries, key=lambda e: (e["gun"], e["server"]))
    index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


# One image to capture: (the image as given, its parsed reference, its Notary server, normalized).
Planned = tuple[str, ImageRef, str]
# What fetching a repository gave: (the roles served, the roles answered 404), or why it failed.
Fetched = tuple[dict[str, bytes], list[str]] | str


def capture_images(
    images: list[str],
    out: Path,
    *,
    trust_server: str | None = None,
    trust_servers: dict[str, str] | None = None,
    ca_file: str | None = None,
    timeout: float = 30.0,
    client: NotaryClient | None = None,
    credentials: tuple[tuple[str, str], ...] = (),
) -> list[CaptureResult]:
    """Capture every image's repository into `out`, then verify each image from the written bytes.

    The Notary server of an image: `trust_servers[registry host]` when listed, else `trust_server`,
    else the registry's default. `credentials` ((username, password) pairs) are offered to the
    server's token service, as the webhook offers pull secrets; they are never written to `out`."""
    plan = [_planned(image, trust_server, trust_servers or {}) for image in images]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CaptureError(f"cannot create {out}: {exc}") from None

    client = client or NotaryClient(ca_file=ca_file)
    results: list[CaptureResult] = []
    entries: dict[tuple[str, str], dict] = {}
    fetched: dict[tuple[str, str], Fetched] = {}
    try:
        for image, ref, server in plan:
            key = (server, ref.name)
            if key not in fetched:
                fetched[key] = _fetch(client, server, ref.name, clocks.monotonic() + timeout, credentials)
            result = CaptureResult(image, server, ref.name)
            outcome = fetched[key]
            if isinstance(outcome, str):
                result.error = outcome
            else:
                entries[key] = _record(result, out, outcome)
            results.append(result)
    finally:
        client.close()
    _merge_index(out, list(entries.values()))
    _verify(results, plan, out)
    return results


def _planned(image: str, trust_server: str | None, trust_servers: dict[str, str]) -> Planned:
    """The image, its reference and its Notary server (normalized); CaptureError when one is wrong."""
    try:
        ref = parse_image(image)
    except InvalidImageReference as exc:
        raise CaptureError(str(exc)) from None
    server = trust_server_for(ref.registry, trust_servers.get(ref.registry) or trust_server)
    if server is None:
        raise CaptureError(
            f"{image}: no Notary server is known for registry {ref.registry}; pass --trust-server URL "
            f"or --trust-server {ref.registry}=URL"
        )
    normalized, error = normalize_trust_server(server)
    if error is not None:
        raise CaptureError(f"{image}: {error}")
    return image, ref, normalized


def _fetch(
    client: NotaryClient, server: str, gun: str, deadline: float, credentials: tuple[tuple[str, str], ...]
) -> Fetched:
    try:
        return fetch_repository(client, server, gun, deadline, credentials)
    except TrustError as exc:
        return str(exc)


def _record(result: CaptureResult, out: Path, fetched: tuple[dict[str, bytes], list[str]]) -> dict:
    """Write a fetched repository under `out`, note it on `result`; its entry of the capture index."""
    served, missing = fetched
    sub = _sub_directory(result.server, result.gun)
    files = _write(out, sub, served)
    result.path, result.roles, result.not_served = str(out / sub), sorted(served), missing
    expiry = earliest_expiry(served)
    if expiry is not None:
        result.valid_until, result.expires_first = expiry
    return {
        "server": result.server,
        "gun": result.gun,
        "path": sub,
        "not_served": missing,
        "captured_at": clocks.utcnow().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": files,
    }


def _verify(results: list[CaptureResult], plan: list[Planned], out: Path) -> None:
    """Verify each captured image now, from the files just written (the same replay later runs use)."""
    captured = [
        (r, ref, server) for r, (_, ref, server) in zip(results, plan, strict=False) if r.error is None
    ]
    if not captured:
        return
    service = TrustService(TrustSettings(cache_entries=0), client=ReplayClient(load_trust_data([out])))
    facts = service.gather(
        [TrustRequest(image=ref, server=server) for _, ref, server in captured],
        deadline=clocks.monotonic() + 60.0,
    )
    for (result, _, _), fact in zip(captured, facts, strict=False):
        result.verified = explain(fact)
        result.tag_not_signed = _tag_not_signed(fact)


def _tag_not_signed(facts: dict) -> bool:
    """The trust data verified, the image was asked for by tag, and no role releases that tag."""
    if facts.get("verified") is not True or facts.get("digest") is not None or facts.get("tag") is None:
        return False
    return not any(entry.get("released") for entry in (facts.get("targets") or {}).values())
