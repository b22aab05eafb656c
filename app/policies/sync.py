"""Keep OPA's set of modules equal to what Ostiary wants it to hold.

OPA keeps policies in memory only, so the desired set lives here and can be pushed again at any
time (resync). Changes are all or nothing: when OPA refuses a module (a compile error), every
module changed by that call is put back as it was, so OPA never runs a half-applied set.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path

from app.opa.client import OpaClient, OpaError
from app.paths import rego_library_dir
from app.policies.model import RegoModule

log = logging.getLogger(__name__)


TEST_ONLY = {"testdata.rego"}  # fixtures of the Rego tests, never pushed to a serving OPA


def library_modules(directory: Path | None = None) -> list[RegoModule]:
    """The static Rego library (rego/ostiary/*.rego without tests), as modules."""
    directory = directory or rego_library_dir()
    modules = []
    for path in sorted(directory.glob("*.rego")):
        if path.name.endswith("_test.rego") or path.name in TEST_ONLY:
            continue
        modules.append(
            RegoModule(id=f"ostiary/lib/{path.stem}", package="", source=path.read_text(), origin=str(path))
        )
    if not modules:
        raise RuntimeError(f"no Rego library modules in {directory}")
    return modules


def _until_settled(operations: list, done: list[str]) -> None:
    """Run (module id, operation) pairs; OPA compiles each change against what it already holds,
    so a module calling a function of one not pushed yet (or deleted before its caller) is
    refused. Retry the refused ones while any progress is made; what is still refused then is a
    real error and is raised."""
    pending = operations
    while pending:
        refused, last_error = [], None
        for module_id, operation in pending:
            try:
                operation()
                done.append(module_id)
            except OpaError as exc:
                refused.append((module_id, operation))
                last_error = exc
        if last_error is not None and len(refused) == len(pending):
            raise last_error
        pending = refused


class PolicySync:
    def __init__(self, opa: OpaClient, base: Iterable[RegoModule] = ()):
        self.opa = opa
        self._lock = threading.RLock()
        self._base = {m.id: m for m in base}
        self._policies: dict[str, RegoModule] = {}
        self.synced = False

    @property
    def desired(self) -> dict[str, RegoModule]:
        with self._lock:
            return {**self._base, **self._policies}

    def _apply(self, new: dict[str, RegoModule], old: dict[str, RegoModule], force: bool = False) -> None:
        """Make OPA go from `old` to `new`; on refusal restore `old` and raise OpaError."""
        changed = [m for i, m in new.items() if force or i not in old or old[i].source != m.source]
        removed = [i for i in old if i not in new]
        done: list[str] = []
        try:
            _until_settled([(m.id, lambda m=m: self.opa.put_policy(m.id, m.source)) for m in changed], done)
            _until_settled([(i, lambda i=i: self.opa.delete_policy(i)) for i in removed], [])
        except OpaError:
            for module_id in done:
                try:
                    if module_id in old:
                        self.opa.put_policy(module_id, old[module_id].source)
                    else:
                        self.opa.delete_policy(module_id)
                except OpaError:
                    log.exception("could not restore module %s after a refused change", module_id)
            raise

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
        """Push every desired module again and drop modules OPA holds that we do not want."""
        with self._lock:
            desired = self.desired
            present = self.opa.list_policy_ids()
            stale = {i: RegoModule(i, "", "") for i in present if i not in desired}
            self._apply(desired, {**stale, **desired}, force=True)

    def in_place(self) -> bool:
        """True when OPA still holds every module we want (false after an OPA restart)."""
        with self._lock:
            wanted = set(self.desired)
        try:
            return wanted <= self.opa.list_policy_ids()
        except OpaError:
            return False

    def count(self) -> int:
        with self._lock:
            return len(self._policies)
