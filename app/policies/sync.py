"""Keep OPA's set of modules and policy documents exactly equal to what Ostiary wants it to hold.

Two kinds are kept: Rego modules (the library and custom rules: /v1/policies) and the policies'
data documents (RegoModule.is_data: /v1/data/ostiary_policies/..., app/policies/translate.py).
Both are compared by id under distinct keys (a data document's key is DATA_PREFIX + id), modules
by text and documents by value (same_json: a document OPA hands back in another form, 1.0 for 1,
is the same document, never a difference to repair again and again). A module and a document at
the same path are two things: an old process's policy module is deleted as foreign while the
documents are written (OPA refuses them until the module is gone; the writes are retried while any
progress is made). Every document is written in one PUT of the whole tree under
POLICY_DATA_ROOT whenever any of them differs (``_write_documents``: OPA's cost per write grows
with all the documents, not with the one written).

OPA keeps policies in memory only, so the desired set lives here and can be pushed again at any
time. Every change is computed against what OPA holds *now* (GET /v1/policies, ids and text, and
GET /v1/data/ostiary_policies),
never against what this process remembers pushing: a module left by an earlier process, an older
version or anyone else is removed by the first write, and ``repair()`` (run every few seconds by
the watchdog or the cluster source) puts back any difference and reports it. Every look reads both
answers; only what OPA answers byte for byte as at the last look is not decoded and compared again
(app/opa/listing.py, ``_documents``): the listing with the library's ASTs and 200 policies'
documents cost the worker ~65 ms per look decoded, ~2 ms not (docs/performance.md).

**The marker.** Both reads cost OPA far more than Ostiary (63–90 ms of OPA's CPU per look with the
library and 200 policies: it serialises every module's AST and every document), so the readiness
probe (twice a second) does not look in full each time. After every change it made and every full
look that found OPA exact, PolicySync writes a marker, ``data.ostiary_sync`` = {"set": <fingerprint
of the set OPA holds>} (MARKER_ROOT: a root of its own that no package path reaches, so no decision
reads it, and outside POLICY_DATA_ROOT, so the comparison never sees it), and deletes it before it
starts changing OPA. ``in_place(within=...)`` and ``repair(within=...)`` then take a full look
within that many seconds, at the same generation and of the same set, plus OPA still holding this
set's marker (one read of a few bytes), as OPA holding the set: an OPA restarted empty has no
marker, whenever it restarted. The marker is a pure function of the set, not of the process:
several Ostiary processes sharing one OPA with the same set write the same value (they never undo
each other's), one with another set sees a marker not its own (OPA does not hold its set, which is
true), and nothing is left behind per process.

Changes are all or nothing: when OPA refuses a module, OPA is brought back to the previous
desired set, so it never runs a half-applied one.

With a push guard (app/policies/pushguard.py), a set over the push budget, or one OPA died of, is
not pushed: OPA keeps the last set that fitted (``held_back`` says why; readiness, metrics and
Events report it through ``on_hold``) until the set asked for changes, or its retry time comes.
"""

from __future__ import annotations

import functools
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from app import jsonio
from app.errors import ConfigError
from app.opa.client import DataAnswer, OpaClient, OpaError, OpaModuleRefused
from app.paths import rego_library_dir
from app.policies.model import POLICY_DATA_ROOT, RegoModule
from app.policies.pushguard import PushGuard, fingerprint, set_bytes
from app.policies.reconcile import Drift, drift, plan
from app.policies.translate import canonical_json

log = logging.getLogger(__name__)


# The marker of the set OPA holds (module docstring): data.ostiary_sync = {"set": fingerprint}. A
# root of its own: no package (the library's are under ostiary, custom ones under ostiary.custom)
# and no policy document lies on its path, so no rule reads it and a write of it costs OPA nothing.
MARKER_ROOT = "ostiary_sync"
MARKER_PATH = f"{MARKER_ROOT}/set"

# Scratch modules of apply-time validation live under a package the library never reads, so one
# can never take part in a decision, even during the milliseconds it exists.
SCRATCH_PACKAGE = "ostiary_validation_scratch"


def library_modules(directory: Path | None = None) -> list[RegoModule]:
    """The static Rego library (rego/ostiary/*.rego without tests), as modules."""
    directory = directory or rego_library_dir()
    modules = []
    for path in sorted(directory.glob("*.rego")):
        if path.name.endswith("_test.rego"):
            continue
        modules.append(
            RegoModule(id=f"ostiary/lib/{path.stem}", package="", source=path.read_text(), origin=str(path))
        )
    if not modules:
        raise ConfigError(f"no Rego library modules in {directory}: the installation is incomplete")
    return modules


Operation = tuple[str, Callable[[], None]]

# The data documents of policies live under POLICY_DATA_ROOT of OPA's data (app/policies/model.py);
# their keys in the comparison carry DATA_PREFIX so that they never coincide with a module id.
DATA_PREFIX = "data:"


def _key(module: RegoModule) -> str:
    return DATA_PREFIX + module.id if module.is_data else module.id


def _is_virtual(path: str, prefixes: list[str]) -> bool:
    """Whether `path` is at, under or above a module's package (its virtual documents)."""
    return any(path == p or path.startswith(p + "/") or p.startswith(path + "/") for p in prefixes)


def _documents_under(value: object, path: str, depth: int) -> list[tuple[str, object]]:
    """(path, document) of each document `depth` levels under `path`; a value that is no object
    above that depth is a document of its own (foreign: removed by the next write)."""
    if depth == 0 or not isinstance(value, dict):
        return [(path, value)]
    found: list[tuple[str, object]] = []
    for name, member in value.items():
        found += _documents_under(member, f"{path}/{name}", depth - 1)
    return found


# How deep each policy document lies under its scope: cluster/<name>, namespaced/<ns>/<name>.
_SCOPE_DEPTH = {"cluster": 1, "namespaced": 2}


def policy_documents(root: object, packages: Iterable[str] = ()) -> dict[str, object]:
    """What OPA holds under POLICY_DATA_ROOT as {DATA_PREFIX + id: document}: each
    cluster/<name> and namespaced/<ns>/<name> document, and anything else there under its own
    path (foreign: removed by the next write). Paths at or under a module's package (`packages`,
    as data paths) are that module's virtual documents: compared as modules, not here."""
    if root is None:
        return {}
    prefixes = [p.strip("/") for p in packages]
    if isinstance(root, dict):
        found = []
        for scope, members in root.items():
            found += _documents_under(members, f"{POLICY_DATA_ROOT}/{scope}", _SCOPE_DEPTH.get(scope, 0))
    else:
        found = [(POLICY_DATA_ROOT, root)]
    return {DATA_PREFIX + path: value for path, value in found if not _is_virtual(path, prefixes)}


def same_json(a: object, b: object) -> bool:
    """Whether two decoded JSON values are the same document, whatever form OPA handed one back in:
    numbers by value (1 and 1.0, 1e3 and 1000; an integer beyond 64 bits that the decoder of
    OPA's answers turned into the nearest float), but never a boolean for a number (Python's
    True == 1), objects by keys and values, arrays in order."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (isinstance(a, float) != isinstance(b, float) and float(a) == float(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _tree_text(documents: Mapping[str, str]) -> str:
    """One JSON text holding every document (relative path -> its JSON text) at its path, built
    from the documents' own texts (nothing decoded and encoded again)."""
    tree: dict = {}
    for path, text in documents.items():
        *parents, name = path.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = text

    def render(node: dict | str) -> str:
        if isinstance(node, str):
            return node
        return (
            "{"
            + ",".join(f"{json.dumps(k, ensure_ascii=False)}:{render(v)}" for k, v in sorted(node.items()))
            + "}"
        )

    return render(tree)


def _until_settled(operations: list[Operation]) -> None:
    """Run (module id, operation) pairs; OPA compiles each change against what it already holds,
    so a module calling a function of one not pushed yet (or a foreign module conflicting with
    one of ours until it is deleted) is refused. Retry the refused ones while any progress is
    made; what is still refused then is a real error and is raised."""
    pending = operations
    while pending:
        refused: list[Operation] = []
        last_error: OpaError | None = None
        for module_id, operation in pending:
            try:
                operation()
            except OpaError as exc:
                refused.append((module_id, operation))
                last_error = exc
        if last_error is not None and len(refused) == len(pending):
            raise last_error
        pending = refused


class PolicySync:
    def __init__(
        self,
        opa: OpaClient,
        base: Iterable[RegoModule] = (),
        on_drift: Callable[[Drift], None] | None = None,
        guard: PushGuard | None = None,
        on_hold: Callable[[str | None], None] | None = None,
    ):
        self.opa = opa
        self._lock = threading.RLock()
        self._base = {m.id: m for m in base}
        self._policies: dict[str, RegoModule] = {}
        self._servers: tuple[dict[str, RegoModule], frozenset[str]] | None = None
        self._on_drift = on_drift
        self.guard = guard
        self._on_hold = on_hold
        # While a set is held back: what OPA holds instead of base + policies, and why.
        self._held: dict[str, RegoModule] | None = None
        self.held_back: str | None = None
        self._before: dict[str, RegoModule] | None = None  # what OPA held before the last change
        self._not_held: set[str] = set()  # ids of the modules asked for that OPA does not hold as asked
        self._decoded_cache: dict[str, object] = {}  # desired document text -> its value (same_json)
        # The last look at OPA's documents: (OPA's answer, packages, wanted texts, what was found).
        self._last_documents: tuple[bytes, frozenset[str], dict[str, str], dict[str, str]] | None = None
        self.synced = False
        # Moves before and after every write to OPA's module set (app/admission/plans.py keeps
        # plans per generation: one queried while the set changed is never kept). Writes of the
        # marker do not move it: no decision reads the marker.
        self.generation = 0
        # The last full look that found OPA exact: (time.monotonic(), generation, set fingerprint).
        self._verified: tuple[float, int, str] | None = None
        self._last_marker: tuple[bytes, object] | None = None  # OPA's last answer for the marker, decoded
        # The fingerprint of the desired set, with the dicts it was computed from (each is replaced
        # whole on every change, never changed in place).
        self._fingerprinted: tuple[tuple[object, ...], str] | None = None

    @property
    def desired(self) -> dict[str, RegoModule]:
        """What OPA must hold: base and policies, or the last set that fitted while they are held back."""
        with self._lock:
            if self._held is not None:
                return dict(self._held)
            return {**self._base, **self._policies}

    def _fingerprint(self) -> str:
        """The fingerprint of the desired set (pushguard.fingerprint), computed once per set."""
        parts = (self._held, self._base, self._policies)
        cached = self._fingerprinted
        if cached is not None and all(a is b for a, b in zip(cached[0], parts, strict=True)):
            return cached[1]
        value = fingerprint(self.desired)
        self._fingerprinted = (parts, value)
        return value

    def _marked(self) -> object:
        """The set fingerprint OPA's marker holds (None when there is none); raises OpaError. An
        answer byte for byte as the last is not decoded again (as the listing and the documents)."""
        answer = self.opa.read_data(MARKER_PATH)
        last = self._last_marker
        if last is not None and last[0] == answer.content:
            return last[1]
        value = answer.value()
        self._last_marker = (answer.content, value)
        return value

    def _confirm(self, set_fingerprint: str) -> None:
        """A full look just found OPA holding exactly the set of `set_fingerprint`: make the marker
        say so (written only when it does not already) and remember the look."""
        if self._marked() != set_fingerprint:
            self.opa.put_data(MARKER_ROOT, json.dumps({"set": set_fingerprint}))
        self._verified = (time.monotonic(), self.generation, set_fingerprint)

    def _vouched(self, within: float) -> bool:
        """Whether a full look found OPA exact less than `within` seconds ago, at this generation
        and for this set, and OPA still holds this set's marker (one small read; raises OpaError)."""
        verified, set_fingerprint = self._verified, self._fingerprint()
        if verified is None or within <= 0 or verified[1:] != (self.generation, set_fingerprint):
            return False
        return time.monotonic() - verified[0] < within and self._marked() == set_fingerprint

    def _put(self, module: RegoModule) -> None:
        """PUT one module; OPA's errors in a custom Rego file name the file, not the module id."""
        try:
            self.opa.put_policy(module.id, module.source)
        except OpaModuleRefused as exc:
            if not module.origin.endswith(".rego"):
                raise
            raise OpaModuleRefused(
                module.id, exc.errors.replace(f"{module.id}:", f"{module.origin}:")
            ) from None

    def _present(self, wanted: Mapping[str, RegoModule]) -> dict[str, str]:
        """What OPA holds now: module id -> text, and DATA_PREFIX + id -> text of each document
        under POLICY_DATA_ROOT (`wanted`'s own text when it is the same document, whatever form
        OPA handed it back in: same_json). Raises OpaError when OPA does not say."""
        modules, packages = self.opa.list_modules()
        documents = self.opa.read_data(POLICY_DATA_ROOT)
        present: dict[str, str] = dict(modules)
        present.update(self._documents(documents, frozenset(packages.values()), wanted))
        return present

    def _documents(
        self, answer: DataAnswer, packages: frozenset[str], wanted: Mapping[str, RegoModule]
    ) -> dict[str, str]:
        """DATA_PREFIX + id -> text of each document OPA holds (_present). The answer depends only
        on OPA's answer, the modules' packages and the wanted documents' texts: when all three are
        what they were at the last look (OPA's answer byte for byte), it is that look's answer,
        neither decoded nor compared again."""
        texts = {key: module.source for key, module in wanted.items() if module.is_data}
        last = self._last_documents
        if last is not None and last[0] == answer.content and last[1] == packages and last[2] == texts:
            return dict(last[3])
        found: dict[str, str] = {}
        for key, value in policy_documents(answer.value(), packages).items():
            text = texts.get(key)
            found[key] = text if text is not None and self._same(text, value) else canonical_json(value)
        self._last_documents = (answer.content, packages, texts, found)
        return dict(found)

    def _same(self, text: str, value: object) -> bool:
        """Whether OPA's document `value` is the wanted document `text`: at once when it encodes
        back to exactly `text` (orjson's encoding decodes to the very value it encoded), else by
        value (same_json)."""
        return jsonio.dumps(value, sort_keys=True) == text.encode() or same_json(self._decoded(text), value)

    def _decoded(self, text: str) -> object:
        """A desired document's value (kept while its text is desired: repair compares every few seconds)."""
        cached = self._decoded_cache.get(text)
        if cached is None:
            cached = self._decoded_cache[text] = json.loads(text)
        return cached

    def _hold(self, reason: str, old: dict[str, RegoModule], asked: dict[str, RegoModule]) -> None:
        """Keep OPA on `old` instead of the set asked for, and say why; when OPA died of `old` too
        (or it is over the budget), on the last set that fitted, or the one before `old`, or the
        base alone (no policy: every admission denied). Never a set without the base (the library and
        custom Rego): OPA without the library decides nothing, and such a set is no set that fitted
        (the set before the first push is empty)."""
        assert self.guard is not None
        keep = old
        for candidate in (self.guard.last_good, self._before, dict(self._base)):
            usable = self._has_base(keep) and not self.guard.killed(keep) and self.guard.refusal(keep) is None
            if usable:
                break
            if candidate is not None:
                keep = candidate
        changed = reason != self.held_back
        if changed:
            log.error(
                "policy set held back, OPA keeps the last set that fitted (%d modules, %d bytes): %s",
                len(keep),
                set_bytes(keep),
                reason,
            )
        self._held, self.held_back = keep, reason
        self._not_held = {i for i, m in asked.items() if keep.get(i) != m}
        try:
            self._converge(keep)
        except OpaError as exc:  # OPA down: repair() puts `keep` back when it answers
            log.warning("could not put the last set that fitted back in OPA yet: %s", exc)
        if changed and self._on_hold is not None:
            self._on_hold(reason)

    def _has_base(self, modules: dict[str, RegoModule]) -> bool:
        return all(modules.get(i) == m for i, m in self._base.items())

    def holds_base(self) -> bool:
        """False while a set without the base (the library, custom Rego) is what OPA must hold: OPA then
        decides nothing, and every admission is denied."""
        with self._lock:
            return self._held is None or (bool(self._base) and self._has_base(self._held))

    def not_held(self) -> set[str]:
        """The ids of the modules asked for that OPA does not hold as asked (while a set is held back)."""
        with self._lock:
            return set(self._not_held) if self._held is not None else set()

    def _release(self) -> None:
        if self._held is None and self.held_back is None:
            return
        self._held, self.held_back = None, None
        log.info("the policy set asked for is in OPA again; nothing held back")
        if self._on_hold is not None:
            self._on_hold(None)

    def _write_documents(self, documents: list[RegoModule]) -> Callable[[], None]:
        """Every policy document in one write: PUT of the whole tree under POLICY_DATA_ROOT (or
        its DELETE when there is none). OPA checks every write to data against every rule's path
        and copies the documents the write touches, so each write costs about as much as all of
        them: one PUT per document made a reload of 150 policies take 25 to 80 s once the library
        was in OPA, one write for all of them takes well under a second."""
        if not documents:
            return functools.partial(self.opa.delete_data, POLICY_DATA_ROOT)
        texts = {m.id.removeprefix(POLICY_DATA_ROOT + "/"): m.source for m in documents}
        return functools.partial(self.opa.put_data, POLICY_DATA_ROOT, _tree_text(texts))

    def _converge(self, wanted: dict[str, RegoModule], attempt: bool = True) -> None:
        """Make OPA hold exactly `wanted` (ids and text); raise OpaError when it refuses. `attempt`:
        tell the guard (a push OPA may die of; a revert to what it held is none)."""
        by_key = {_key(m): m for m in wanted.values()}
        texts = {m.source for m in by_key.values() if m.is_data}
        self._decoded_cache = {t: v for t, v in self._decoded_cache.items() if t in texts}
        steps = plan({k: m.source for k, m in by_key.items()}, self._present(by_key))
        operations: list[Operation] = []
        if any(k.startswith(DATA_PREFIX) for k in steps.put + steps.delete):
            documents = [m for m in by_key.values() if m.is_data]
            operations.append((POLICY_DATA_ROOT, self._write_documents(documents)))
        modules = [k for k in steps.put if not k.startswith(DATA_PREFIX)]
        operations += [(k, functools.partial(self._put, by_key[k])) for k in modules]
        foreign = [k for k in steps.delete if not k.startswith(DATA_PREFIX)]
        operations += [(k, functools.partial(self.opa.delete_policy, k)) for k in foreign]
        set_fingerprint = fingerprint(wanted)
        if not operations:
            self._confirm(set_fingerprint)
            return
        if self.guard is not None and attempt:
            self.guard.attempted(wanted)
        self._verified = None
        self.generation += 1
        try:
            # No marker while OPA is being changed: another process sharing it sees that at once.
            self.opa.delete_data(MARKER_ROOT)
            _until_settled(operations)
            self.opa.put_data(MARKER_ROOT, json.dumps({"set": set_fingerprint}))
        finally:
            self.generation += 1
            if self.guard is not None and attempt:  # OPA may die as the push ends: count from then
                self.guard.attempted(wanted)

    def _apply(self, new: dict[str, RegoModule], old: dict[str, RegoModule]) -> None:
        """Make OPA hold exactly `new`; on refusal bring it back to exactly `old` and raise OpaError.
        A set the guard refuses is not pushed: OPA keeps `old` (``_hold``)."""
        if self.guard is not None:
            reason = self.guard.refusal(new)
            if reason is not None:
                self._hold(reason, old, new)
                return
        try:
            self._converge(new)
        except OpaError:
            try:
                self._converge(old, attempt=False)
            except OpaError:
                log.exception("could not restore OPA's previous modules after a refused change")
            raise
        self._before = old
        self._release()

    def set_base(self, modules: Iterable[RegoModule]) -> None:
        with self._lock:
            new_base = {m.id: m for m in modules}
            self._apply({**new_base, **self._policies}, self.desired)
            self._base = new_base

    def replace_all(self, modules: Iterable[RegoModule]) -> None:
        with self._lock:
            new_policies = {m.id: m for m in modules}
            self._apply({**self._base, **new_policies}, self.desired)
            self._policies = new_policies
            self.synced = True

    def replace(self, base: Iterable[RegoModule], policies: Iterable[RegoModule]) -> None:
        """Base and policies in one all-or-nothing change (a reload of custom Rego and policy
        files together): OPA never holds new custom Rego with old policies, or the reverse."""
        with self._lock:
            new_base = {m.id: m for m in base}
            new_policies = {m.id: m for m in policies}
            self._apply({**new_base, **new_policies}, self.desired)
            self._base, self._policies = new_base, new_policies
            self.synced = True

    def upsert(self, module: RegoModule) -> None:
        with self._lock:
            new = dict(self._policies)
            new[module.id] = module
            self._apply({**self._base, **new}, self.desired)
            self._policies = new

    def remove(self, module_id: str) -> None:
        with self._lock:
            if module_id not in self._policies:
                return
            new = {i: m for i, m in self._policies.items() if i != module_id}
            self._apply({**self._base, **new}, self.desired)
            self._policies = new

    def resync(self) -> None:
        """Make OPA hold exactly the desired set again (whatever it holds now)."""
        with self._lock:
            self._converge(self.desired)

    def difference(self) -> Drift:
        """How OPA's modules differ from the desired set now (a full look); raises OpaError when OPA
        does not answer. When there is none, the marker is made to say so (module docstring)."""
        with self._lock:
            wanted = {_key(m): m for m in self.desired.values()}
            found = drift({k: m.source for k, m in wanted.items()}, self._present(wanted))
            if found.empty:
                self._confirm(self._fingerprint())
            else:
                self._verified = None
            return found

    def repair(self, within: float = 0.0) -> Drift | None:
        """Compare OPA's whole set with the desired one; on any difference log it, report it
        (``on_drift``: the metrics) and make OPA exact again. Returns the difference, or None.
        `within` > 0: a full look that found OPA exact less than that many seconds ago, with OPA
        still holding the set's marker, stands for this one (``_vouched``)."""
        with self._lock:
            found = None if self._vouched(within) else self.difference()
            guard = self.guard
            if found is None or found.empty:
                if guard is not None:
                    guard.settled(self.desired)
                    self._retry_held()
                return None
            log.warning("OPA's modules differ from Ostiary's (%s); making them exact again", found.describe())
            if self._on_drift is not None:
                self._on_drift(found)
            desired = self.desired
            # OPA restarted empty: it holds none of the modules and documents asked for (by key:
            # a document's is DATA_PREFIX + id)
            if guard is not None and desired and set(found.missing) == {_key(m) for m in desired.values()}:
                killer = guard.lost_everything()
                if killer is not None and killer == fingerprint(desired):
                    self._hold(guard.refusal(desired) or "OPA died of this policy set", desired, desired)
                    return found
            self._converge(self.desired)
            return found

    def _retry_held(self) -> None:
        """Push the set asked for again once the guard allows it (its retry time came)."""
        if self._held is None or self.guard is None:
            return
        asked = {**self._base, **self._policies}
        if self.guard.refusal(asked) is None:
            log.info("trying the policy set held back again")
            self._apply(asked, self.desired)

    def in_place(self, wait: float = -1, within: float = 0.0) -> bool | None:
        """True when OPA holds exactly the desired modules, ids and text (false after an OPA
        restart, a planted module or one replaced in place). With `wait` >= 0: None when a change
        is still being pushed after that many seconds (the readiness probe does not queue behind it).
        `within` > 0: a full look that found OPA exact less than that many seconds ago, at this
        generation and for this set, stands for one while OPA holds the set's marker (an OPA
        restarted empty has none: False at once); a change to OPA that leaves the marker (a module
        planted by a token holder) is found by the next full look, within `within` seconds."""
        if not self._lock.acquire(timeout=wait):
            return None
        try:
            return self._vouched(within) or self.difference().empty
        except OpaError:
            return False
        finally:
            self._lock.release()

    def compiles(self, module: RegoModule) -> None:
        """Compile `module` in OPA without touching the serving set; raise OpaError (typed
        OpaModuleRefused for a refusal) when OPA would not take it.

        The module is written under a scratch id and a scratch package (nothing in the library
        reads it, so it cannot decide an admission) and deleted right after. The sync lock is
        held meanwhile, so ``repair()`` never sees (or counts) it, and the random id keeps two
        Ostiary processes sharing an OPA from colliding."""
        if module.is_data:  # a JSON document: nothing to compile (its size is bounds.py's concern)
            return
        first_line = f"package {module.package}\n"
        if not module.package or first_line not in module.source:
            raise OpaError(f"module {module.id} does not declare package {module.package!r}")
        token = secrets.token_hex(8)
        scratch_id = f"{SCRATCH_PACKAGE}/{token}"
        source = module.source.replace(first_line, f"package {SCRATCH_PACKAGE}.m{token}\n", 1)
        with self._lock:
            try:
                self.opa.put_policy(scratch_id, source)
            except OpaModuleRefused as exc:
                raise OpaModuleRefused(module.id, exc.errors.replace(scratch_id, module.id)) from None
            finally:
                try:
                    self.opa.delete_policy(scratch_id)
                except OpaError:
                    log.warning("could not delete scratch module %s; the next repair removes it", scratch_id)

    def count(self) -> int:
        with self._lock:
            return len(self._policies)

    def cluster_trust_servers(self) -> frozenset[str]:
        """The trust servers the ClusterImagePolicies in force name (RegoModule.trust_servers):
        the operator's own, which namespace policies may name too. Computed once per policy set
        (the dict of policies is replaced on every change, never changed in place)."""
        policies = self._policies
        cached = self._servers
        if cached is not None and cached[0] is policies:
            return cached[1]
        servers = frozenset(server for module in policies.values() for server in module.trust_servers)
        self._servers = (policies, servers)
        return servers
