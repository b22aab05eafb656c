"""Durable trust-on-first-use state: one record per (trust server, GUN) that outlives the process.

Why: in memory, every restart, every new replica and every cache eviction was a new "first use", so
whoever controlled the Notary server at that moment chose the root, and rollback protection started
again from nothing. A record keeps, per (server, GUN):

- the first verified root.json (its exact bytes, key IDs, version and sha256), moved only by a root
  rotation signed as TUF requires (checked by the service, and again here under the lock);
- the highest version seen of every role (root, timestamp, snapshot, targets, delegations), which
  only ever goes up;
- when and by which process it was first seen, and last changed; and how it came to be
  (`first-use` by an admission, `operator` by `ostiary trust pin`).

`RecordStore` is the interface (the service only uses it); `FileRecordStore` keeps records in a
directory (`ostiary serve --state-dir`), one JSON file per (server, GUN). Writes are atomic (temp file
in the same directory, fsync, rename, fsync of the directory) and made under an exclusive lock of the
record's own lock file (flock), so two processes writing at once never corrupt a record nor lower a
version: `update` re-reads the record under the lock and hands it to the caller's `change`, which
decides (and may refuse by raising). Readers need no lock: rename is atomic, so they see the old or
the new file, never half of one. A record that cannot be read (corrupt, foreign) is an error, never
"no record": failing closed there means an operator looks, instead of a silent new first use.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, Self

from app.errors import UnavailableError
from app.notary import clock as clocks
from app.yamlio import DocumentError, load_json

RECORD_FORMAT = "ostiary.dev/trust-record/v1"
HOW = ("first-use", "operator")
LOCK_TIMEOUT = 5.0  # seconds a writer waits for another writer of the same record


class StateError(UnavailableError):
    """The trust state could not be read or written; the message says where and what to do."""


def default_state_dir() -> Path:
    """$XDG_STATE_HOME/ostiary, else ~/.local/state/ostiary (the XDG base directory default)."""
    base = os.environ.get("XDG_STATE_HOME")
    if base and os.path.isabs(base):
        return Path(base) / "ostiary"
    return Path.home() / ".local" / "state" / "ostiary"


def this_process() -> str:
    """Who is writing, for `ostiary trust pins`: host (the pod name in a cluster) and process id."""
    return f"{socket.gethostname()} pid {os.getpid()}"


def utc_text(moment: datetime | None = None) -> str:
    return (moment or clocks.utcnow()).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def root_digest(root: bytes) -> str:
    return "sha256:" + hashlib.sha256(root).hexdigest()


@dataclass(frozen=True)
class TrustRecord:
    server: str
    gun: str
    root: bytes  # root.json exactly as verified: the anchor handed to the next verification
    root_keyids: tuple[str, ...]  # the root role's key IDs in that root.json
    versions: Mapping[str, int] = field(default_factory=dict)  # role -> highest version seen
    first_seen_at: str = ""
    first_seen_by: str = ""
    updated_at: str = ""
    updated_by: str = ""
    how: str = "first-use"

    @property
    def root_digest(self) -> str:
        return root_digest(self.root)

    @property
    def root_version(self) -> int:
        return int(self.versions.get("root", 0))

    def with_versions(self, versions: Mapping[str, int], by: str, at: str) -> TrustRecord:
        """This record with every role's version raised to `versions` where higher (never lowered)."""
        merged = dict(self.versions)
        for role, version in versions.items():
            if version > merged.get(role, -1):
                merged[role] = version
        if merged == dict(self.versions):
            return self
        return replace(self, versions=merged, updated_at=at, updated_by=by)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
            "server": self.server,
            "gun": self.gun,
            "root": base64.b64encode(self.root).decode("ascii"),
            "rootDigest": self.root_digest,
            "rootKeyIDs": list(self.root_keyids),
            "versions": dict(sorted(self.versions.items())),
            "firstSeen": {"at": self.first_seen_at, "by": self.first_seen_by},
            "updated": {"at": self.updated_at, "by": self.updated_by},
            "how": self.how,
        }

    def root_certificates(self) -> str:
        """The PEM certificates of the root role's keys in the recorded (verified) root.json."""
        signed = json.loads(self.root)["signed"]
        return "".join(
            base64.b64decode(signed["keys"][keyid]["keyval"]["public"]).decode("ascii")
            for keyid in signed["roles"]["root"]["keyids"]
        )

    @classmethod
    def from_json(cls, data: object, where: str) -> TrustRecord:
        """Parse strictly: a record that does not look exactly right is refused (StateError)."""

        def bad(why: str) -> StateError:
            return StateError(
                f"trust record {where} is unreadable ({why}); Ostiary denies this repository until it is "
                "repaired or removed (`ostiary trust unpin IMAGE`, or delete the file)"
            )

        if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
            raise bad(f"not a {RECORD_FORMAT} document")
        server, gun, how = data.get("server"), data.get("gun"), data.get("how")
        if not isinstance(server, str) or not isinstance(gun, str) or not server or not gun:
            raise bad("server or gun missing")
        if how not in HOW:
            raise bad(f"how is {how!r}")
        try:
            root = base64.b64decode(str(data.get("root", "")).encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise bad("root is not base64") from None
        if not root or data.get("rootDigest") != root_digest(root):
            raise bad("root does not match rootDigest")
        keyids = data.get("rootKeyIDs")
        versions = data.get("versions")
        if not isinstance(keyids, list) or not all(isinstance(k, str) for k in keyids):
            raise bad("rootKeyIDs is not a list of strings")
        if not isinstance(versions, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in versions.items()
        ):
            raise bad("versions is not a map of role to non-negative integer")
        first, updated = data.get("firstSeen") or {}, data.get("updated") or {}
        return cls(
            server=server,
            gun=gun,
            root=root,
            root_keyids=tuple(keyids),
            versions=dict(versions),
            first_seen_at=str(first.get("at", "")),
            first_seen_by=str(first.get("by", "")),
            updated_at=str(updated.get("at", "")),
            updated_by=str(updated.get("by", "")),
            how=how,
        )


# change(current record or None) -> the record to write, or None to leave things as they are.
# It runs under the store's lock with the record as it is *now*, and may raise to refuse.
Change = Callable[[TrustRecord | None], TrustRecord | None]


class RecordStore(Protocol):
    """Where trust records live. Every method may raise StateError (the caller fails closed)."""

    @property
    def description(self) -> str:
        """Where, for messages: "state directory /var/lib/ostiary"."""
        ...

    def get(self, server: str, gun: str) -> TrustRecord | None: ...

    def update(self, server: str, gun: str, change: Change) -> TrustRecord | None:
        """Apply `change` to the current record atomically (no other writer in between); returns the
        record now stored (None when there is none)."""
        ...

    def delete(self, server: str, gun: str) -> bool: ...

    def records(self) -> list[TrustRecord]: ...


def record_name(server: str, gun: str) -> str:
    """A file (or object) name for (server, GUN): GUNs hold '/' and ':', so a digest of both."""
    return hashlib.sha256(f"{server}\n{gun}".encode()).hexdigest()[:40]


class FileRecordStore:
    """Records as files DIR/records/<name>.json, each written atomically under DIR/records/<name>.lock."""

    def __init__(self, directory: str | os.PathLike, *, lock_timeout: float = LOCK_TIMEOUT):
        self.directory = Path(directory)
        self._records = self.directory / "records"
        self._lock_timeout = lock_timeout
        self._threads = threading.Lock()  # one writer thread per process at a time (flock does the rest)

    @property
    def description(self) -> str:
        return f"state directory {self.directory}"

    def ensure(self) -> FileRecordStore:
        """Create the directory (mode 0700) or fail now, at start, with a reason."""
        try:
            self._records.mkdir(parents=True, exist_ok=True, mode=0o700)
            with tempfile.NamedTemporaryFile(dir=self._records, prefix=".probe-", delete=True):
                pass
        except OSError as exc:
            raise StateError(f"cannot use {self.description} for trust records: {exc}") from exc
        return self

    def _path(self, server: str, gun: str) -> Path:
        return self._records / f"{record_name(server, gun)}.json"

    def _read(self, path: Path) -> TrustRecord | None:
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"cannot read trust record {path}: {exc}") from exc
        try:
            data = load_json(text, str(path))
        except DocumentError as exc:
            raise StateError(
                f"trust record {path} is unreadable (not JSON: {exc}); Ostiary denies this repository until "
                "it is repaired or removed (`ostiary trust unpin IMAGE`, or delete the file)"
            ) from None
        return TrustRecord.from_json(data, str(path))

    def get(self, server: str, gun: str) -> TrustRecord | None:
        record = self._read(self._path(server, gun))
        if record is not None and (record.server, record.gun) != (server, gun):
            raise StateError(
                f"trust record {self._path(server, gun)} is for {record.server} {record.gun}, not {gun}"
            )
        return record

    def update(self, server: str, gun: str, change: Change) -> TrustRecord | None:
        path = self._path(server, gun)
        with self._threads, self._locked(path.with_suffix(".lock")):
            current = self.get(server, gun)
            new = change(current)
            if new is None or new == current:
                return current
            if (new.server, new.gun) != (server, gun):
                raise StateError(f"internal error: a record for {new.gun} cannot be stored as {gun}")
            self._write(path, json.dumps(new.to_json(), indent=2, sort_keys=True).encode() + b"\n")
            return new

    def delete(self, server: str, gun: str) -> bool:
        path = self._path(server, gun)
        with self._threads, self._locked(path.with_suffix(".lock")):
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            except OSError as exc:
                raise StateError(f"cannot remove trust record {path}: {exc}") from exc
            self._sync_directory()
            return True

    def records(self) -> list[TrustRecord]:
        try:
            paths = sorted(self._records.glob("*.json"))
        except OSError as exc:
            raise StateError(f"cannot list {self.description}: {exc}") from exc
        found = [r for r in (self._read(p) for p in paths) if r is not None]
        return sorted(found, key=lambda r: (r.server, r.gun))

    # -- atomic write and locking ----------------------------------------------------------------

    def _write(self, path: Path, data: bytes) -> None:
        try:
            self._records.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, temp = tempfile.mkstemp(dir=self._records, prefix=f".{path.stem}-", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temp, path)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
                raise
            self._sync_directory()
        except OSError as exc:
            raise StateError(f"cannot write trust record {path}: {exc}") from exc

    def _sync_directory(self) -> None:
        """Make the rename itself durable (a crash after rename must not bring the old file back)."""
        fd = os.open(self._records, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _locked(self, lock_path: Path) -> _FileLock:
        return _FileLock(lock_path, self._lock_timeout, self.description)


class _FileLock:
    """An exclusive flock on a lock file, waited for at most `timeout` seconds (then StateError)."""

    def __init__(self, path: Path, timeout: float, where: str):
        self.path, self.timeout, self.where = path, timeout, where
        self.fd: int | None = None

    def __enter__(self) -> Self:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open lock {self.path} in {self.where}: {exc}") from exc
        deadline = clocks.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    self._close()
                    raise StateError(f"cannot lock {self.path}: {exc}") from exc
            if clocks.monotonic() >= deadline:
                self._close()
                raise StateError(
                    f"another process has held the lock {self.path} for over {self.timeout:.0f}s; "
                    "the trust record was not changed"
                )
            time.sleep(0.005)

    def __exit__(self, *_exc: object) -> None:
        self._close()

    def _close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None


def mark_operator_pinned(store: RecordStore, server: str, gun: str, by: str) -> TrustRecord:
    """Mark the record of (server, GUN), just written by a verification, as kept deliberately by an
    operator (`ostiary trust pin`). StateError when there is none."""
    record = store.update(
        server, gun, lambda current: current and replace(current, how="operator", updated_by=by)
    )
    if record is None:
        raise StateError(f"no record of {gun} after verifying it")
    return record


class MemoryRecordStore:
    """Records in memory, never written anywhere: the offline commands start from the cluster's
    recorded roots (`load_records`) and keep what a run records to that run."""

    def __init__(self, records: Iterable[TrustRecord] = (), description: str = "memory"):
        self._records = {(r.server, r.gun): r for r in records}
        self._lock = threading.Lock()
        self._description = description

    @property
    def description(self) -> str:
        return self._description

    def get(self, server: str, gun: str) -> TrustRecord | None:
        return self._records.get((server, gun))

    def update(self, server: str, gun: str, change: Change) -> TrustRecord | None:
        with self._lock:
            current = self._records.get((server, gun))
            new = change(current)
            if new is None or new == current:
                return current
            self._records[(server, gun)] = new
            return new

    def delete(self, server: str, gun: str) -> bool:
        with self._lock:
            return self._records.pop((server, gun), None) is not None

    def records(self) -> list[TrustRecord]:
        return sorted(self._records.values(), key=lambda r: (r.server, r.gun))


def load_records(path: str | os.PathLike) -> list[TrustRecord]:
    """The recorded roots of trust in `path`: the output of `ostiary trust pins --json` (a file), or
    a state directory of `ostiary serve`. StateError when it cannot be read or a record is not right."""
    where = Path(path)
    if where.is_dir():
        if not (where / "records").is_dir():
            raise StateError(f"{where} is not a state directory of `ostiary serve` (no records/ in it)")
        return FileRecordStore(where).records()
    try:
        data = load_json(where.read_bytes(), str(where))
    except OSError as exc:
        raise StateError(f"cannot read trust records {where}: {exc}") from None
    except DocumentError as exc:
        raise StateError(f"trust records {where} are not JSON: {exc}") from None
    if not isinstance(data, list):
        raise StateError(f"trust records {where}: expected the list `ostiary trust pins --json` prints")
    return [TrustRecord.from_json(item, f"{where}[{index}]") for index, item in enumerate(data)]
