"""Replay captured Notary trust data, so trust policies are tested without network and still verified.

Why a replaying *client* and not canned facts: TrustService already takes the client that fetches
roles (its `client=` argument), and its clock (`clock=`). Handing it a client that answers from a
directory of captured bytes keeps everything else as it is in the webhook: the walk in TUF order, trust
on first use, the verifier (app/notary/walker.py over app/notary/trusted.py) with every signature, hash, length, version and
expiry check, at the `--at` time. Tampered bytes fail exactly as tampered answers from a server would.

Two layouts are read:

- a capture by `ostiary trust capture` (app/offline/capture.py): DIR/ostiary-trust.json lists each
  repository (server, GUN, sub-directory, the roles the server answered 404 for) and the role files
  are DIR/<sub-directory>/<role>.json, byte for byte as served;
- a bare repository directory, DIR/{root,timestamp,snapshot,targets}.json and DIR/targets/NAME.json
  (the layout of ../shared/fixtures/notary/dockerhub-captured/*): the GUN is the common name of the
  root certificates, the server the default Notary server of its registry, and a missing file is a
  role the server did not serve.

    client = ReplayClient(load_trust_data(["captured/"]))
    service = TrustService(client=client, clock=lambda: at)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.errors import InputError
from app.notary.errors import FetchError, RoleNotServed
from app.notary.keys import KeyFormatError, certificate_common_name, load_certificate
from app.notary.metadata import valid_delegation_name
from app.notary.servers import DEFAULT_TRUST_SERVERS, normalize_trust_server
from app.yamlio import DocumentError, load_json_file

INDEX_NAME = "ostiary-trust.json"
SIGNATURE_INDEX_NAME = "ostiary-signatures.json"  # app/signatures/replay.py INDEX_NAME
INDEX_FORMAT = "ostiary.dev/trust-capture/v1"
TOP_LEVEL_ROLES = ("root", "timestamp", "snapshot", "targets")


class TrustDataError(InputError):
    """A trust data directory cannot be used; the message says which and why."""


@dataclass(frozen=True)
class CapturedRepository:
    server: str  # normalized as TrustService normalizes it: https://host[:port][/path]
    gun: str
    directory: Path
    not_served: frozenset[str] = frozenset()  # roles answered 404 at capture time
    served: frozenset[str] | None = None  # captures: the roles recorded; None for a bare directory
    captured_at: str | None = None

    def role_path(self, role: str) -> Path | None:
        if role not in TOP_LEVEL_ROLES and not valid_delegation_name(role):
            return None
        return self.directory / f"{role}.json"


def normalize_server(server: str) -> str:
    normalized, error = normalize_trust_server(server)
    if error is not None:
        raise TrustDataError(str(error))
    return normalized


def gun_of_root(root_file: Path) -> str:
    """The GUN a bare root.json is for: the common name of its root certificates (one for all)."""
    try:
        doc = load_json_file(root_file)
        signed = doc["signed"]
        keyids = signed["roles"]["root"]["keyids"]
        names: set[str | None] = set()
        for keyid in keyids:
            key = signed["keys"][keyid]
            names.add(certificate_common_name(load_certificate(key["keyval"]["public"])))
    except (OSError, ValueError, KeyError, TypeError, KeyFormatError) as exc:
        raise TrustDataError(f"{root_file}: cannot read the GUN from the root certificates: {exc}") from None
    found = sorted(n for n in names if n)
    if len(found) != 1 or None in names:
        raise TrustDataError(f"{root_file}: root certificates name {found or 'no'} GUN; expected one")
    return found[0]


def _bare(directory: Path) -> CapturedRepository:
    gun = gun_of_root(directory / "root.json")
    registry = gun.split("/", 1)[0]
    server = DEFAULT_TRUST_SERVERS.get(registry)
    if server is None:
        raise TrustDataError(
            f"{directory}: no default Notary server is known for registry {registry}; "
            f"capture it with `ostiary trust capture` (which records the server)"
        )
    return CapturedRepository(normalize_server(server), gun, directory)


def _indexed(directory: Path) -> list[CapturedRepository]:
    index_file = directory / INDEX_NAME
    try:
        index = load_json_file(index_file)
    except DocumentError as exc:
        raise TrustDataError(f"not readable JSON: {exc}") from None
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise TrustDataError(f"{index_file}: format is not {INDEX_FORMAT}")
    repositories = []
    for number, entry in enumerate(index.get("repositories") or []):
        where = f"{index_file}: repositories[{number}]"
        try:
            server, gun, sub = str(entry["server"]), str(entry["gun"]), str(entry["path"])
            not_served = frozenset(str(r) for r in entry.get("not_served") or [])
            served = frozenset(str(r) for r in entry["files"])
        except (KeyError, TypeError):
            raise TrustDataError(f"{where}: needs server, gun, path and files") from None
        sub_dir = (directory / sub).resolve()
        if directory.resolve() not in sub_dir.parents:
            raise TrustDataError(f"{where}: path {sub!r} leaves {directory}")
        repositories.append(
            CapturedRepository(
                normalize_server(server), gun, sub_dir, not_served, served, entry.get("captured_at")
            )
        )
    return repositories


def load_trust_data(paths: Iterable[str | Path]) -> list[CapturedRepository]:
    """Every captured repository under `paths` (captures or bare repository directories)."""
    result: list[CapturedRepository] = []
    for item in paths:
        directory = Path(item)
        if (directory / INDEX_NAME).is_file():
            result.extend(_indexed(directory))
        elif (directory / "root.json").is_file():
            result.append(_bare(directory))
        elif (directory / SIGNATURE_INDEX_NAME).is_file():
            continue  # only signatures (cosign, simple): app/signatures/replay.py reads it
        elif directory.is_dir():
            raise TrustDataError(
                f"{directory}: neither a capture ({INDEX_NAME}) nor a repository directory (root.json)"
            )
        else:
            raise TrustDataError(f"{directory}: no such directory")
    return result


class _NoTokens:
    requests_made = 0


class ReplayClient:
    """NotaryClient's fetch_role, answered from captured bytes. Nothing goes to the network."""

    def __init__(self, repositories: Sequence[CapturedRepository]):
        self.tokens = _NoTokens()
        self._repositories: dict[tuple[str, str], CapturedRepository] = {}
        for repo in repositories:
            key = (repo.server, repo.gun)
            other = self._repositories.get(key)
            if other is not None and other.directory != repo.directory:
                raise TrustDataError(
                    f"{repo.gun} from {repo.server} is captured twice ({other.directory} and {repo.directory}); "
                    "give one of them"
                )
            self._repositories[key] = repo

    def close(self) -> None:
        """Nothing to close: no connections."""

    def fetch_role(
        self,
        server: str,
        gun: str,
        role: str,
        *,
        deadline: float,
        credentials: Sequence[tuple[str, str]] = (),
        account: Callable[[int], None] | None = None,
    ) -> bytes:
        repo = self._repositories.get((server, gun))
        if repo is None:
            known = ", ".join(sorted(f"{g} ({s})" for s, g in self._repositories)) or "none"
            raise FetchError(
                role,
                f"no captured trust data for {gun} from notary server {server} (captured: {known}); "
                f"record it with `ostiary trust capture {gun}:TAG --out DIR`",
            )
        path = repo.role_path(role)
        if role in repo.not_served:
            raise RoleNotServed(
                role, f"notary server {server} did not serve {role}.json for {gun} (HTTP 404 when captured)"
            )
        recorded = repo.served is None or role in repo.served
        if path is None or not recorded or not path.is_file():
            if repo.served is not None:
                raise FetchError(
                    role,
                    f"captured trust data for {gun} in {repo.directory} has no {role}.json "
                    "(not recorded at capture): capture it again",
                )
            raise RoleNotServed(
                role, f"notary server {server} does not serve {role}.json for {gun} (not in {repo.directory})"
            )
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise FetchError(role, f"cannot read captured {path}: {exc}") from None
        if account is not None:  # the trust service's byte budget, as for data from a server
            account(len(data))
        return data
