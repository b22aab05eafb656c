"""Supervision of a started Runtime (app/runtime.py): what keeps it serving, apart from what it is.

- **Loading** the policies (directory mode) or the library and custom Rego (cluster mode), all or
  nothing, and again when the files change. A directory reload builds a new Reviewer and swaps it
  into the runtime's holder in one assignment (Runtime.swap_store): a request takes the holder's
  Reviewer once and decides with that one to its end, so it never reads the old Secrets in one step
  and the new ones in the next.
- **The watchdog** thread: restarts a dead local OPA, repairs OPA's module set, re-reads a rotated
  OPA token, reloads changed files.
- **Readiness**: a probe thread asks OPA and the policy set every READY_INTERVAL and keeps the
  answer, so /readyz answers from memory, whatever OPA or the request threads are doing.

What the probe asks OPA costs it little: OPA's /health, then the marker of the set OPA holds (a
few bytes, app/policies/sync.py "The marker"), which an OPA restarted empty has lost whenever it
restarted; the full comparison of OPA's modules and documents (tens of ms of OPA's CPU with a
large set) runs at most every FULL_CHECK_INTERVAL, and at the next probe after anything changed:
a push (the sync's generation), an OPA restart, a probe that found OPA not answering. In directory
mode the watchdog's repair shares those looks (REPAIR_BOUND) and is woken by a probe that finds
OPA no longer holding the set, so it does not wait for its next round.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from app.errors import ConfigError
from app.opa.client import OpaError, OpaModuleRefused
from app.policies.directory import (
    DirectoryStore,
    collect_policy_set,
    files_under,
    load_custom_rego,
    translate_policy_set,
    with_refusals,
)
from app.policies.model import PolicyError, RegoModule, namespace_policy_of
from app.policies.sync import library_modules

if TYPE_CHECKING:
    from app.runtime import Runtime

log = logging.getLogger("ostiary")

READY_INTERVAL = 0.5  # seconds between readiness probes (the state /readyz answers from)
READY_STALE = 5.0  # a probe older than this is itself the answer: something it waits on is stuck
# The probe compares OPA's whole set with Ostiary's at least this often (between two, the marker):
# a change that leaves the marker (a module planted by a token holder) turns /readyz 503 within it.
FULL_CHECK_INTERVAL = 5.0
# The directory-mode watchdog's own bound on a full comparison (the probe's normally come first).
REPAIR_BOUND = 2 * FULL_CHECK_INTERVAL
Signature = tuple[tuple[str, int, int], ...]


def read_token(path: str) -> str:
    """The bearer token in `path` (surrounding whitespace dropped; a Secret's trailing newline).
    ConfigError (a ValueError) when the file cannot be used."""
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the OPA token file {path}: {exc}") from None
    if not token or any(c.isspace() for c in token):
        raise ConfigError(
            f"the OPA token file {path} must hold one token (no spaces), not {'nothing' if not token else 'several words'}"
        )
    return token


def dir_signature(*dirs: str | None) -> Signature:
    """What the loaders would read (the same walk: files_under skips a mounted ConfigMap's hidden
    `..<timestamp>` copies, whose update shows through the links), by path, mtime and size."""
    sig = []
    for d in dirs:
        if not d or not Path(d).is_dir():
            continue
        for p in files_under(Path(d)):
            st = p.stat()
            sig.append((str(p), st.st_mtime_ns, st.st_size))
    return tuple(sig)


class Supervisor:
    """Loads and reloads what a Runtime decides with, watches OPA, and keeps the readiness verdict.
    Owned by the Runtime (Runtime.supervisor); its threads start with Runtime.start(watch=True)."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self.load_error: str | None = None  # why the last load failed; None when it succeeded
        self.in_force: str | None = None  # what the last good load put in force (for /readyz)
        # Directory mode: the ImagePolicies refused while the rest is in force ("ImagePolicy ns/name
        # (file#doc)" -> why); their namespaces are denied (app/policies/directory.py with_refusals).
        self.refused: dict[str, str] = {}
        self._signature: Signature = ()  # of the files the last load read (a bad file waits for a change)
        self._retry = False  # the last load failed because OPA did not answer: try again next round
        self._stop = threading.Event()
        self._wake = threading.Event()  # set: the watchdog runs its round now (and on stop)
        self.opa_restarts = 0
        # Whether the last probe found OPA answering, and the OPA restart count it saw: OPA not
        # answering, or restarted since, and the next probe compares in full (the sync itself does
        # after a push, or when the last full look found a difference).
        self._probed: tuple[bool, int] = (False, 0)
        self.opa_problem: str | None = None  # what the last probe found wrong with OPA; None: it answers
        # /readyz answers from the last probe (no I/O, no lock), never waiting on OPA itself.
        # (ready, why, when, OPA restarts seen): a verdict from before OPA's last restart is void.
        self._readiness: tuple[bool, str, float, int] = (
            False,
            "starting: not probed yet",
            time.monotonic(),
            0,
        )
        self._watchdog = threading.Thread(target=self._watch, name="ostiary-watchdog", daemon=True)
        self._prober = threading.Thread(target=self._probe_loop, name="ostiary-readiness", daemon=True)

    # -- loading ----------------------------------------------------------------------------

    def load(self) -> None:
        """The first load: the library and custom Rego in cluster mode (the cluster source brings the
        policies), else the policy directory."""
        config = self.rt.config
        if self.rt.kube is not None:
            self.load_base()
        elif config.policy_dir:
            self.reload_directory()
        else:
            self.load_error = "no policy source: give --policy-dir or --kube"

    def _custom_modules(self) -> list[RegoModule]:
        rego_dir = self.rt.config.rego_dir
        return load_custom_rego(rego_dir) if rego_dir else []

    def _failed(self, stage: str, doing: str, exc: BaseException, signature: Signature) -> None:
        """Record a failed load. A bad file (or one the translator chokes on) waits for the next
        change of the files; OPA not answering (killed mid-push) is retried next round."""
        if isinstance(exc, (PolicyError, OpaError)):
            self.load_error = f"{stage}: {exc}"
        else:  # a bug, not the operator's file: say which step, keep the traceback in the log
            log.exception("%s: %s failed", stage, doing)
            self.load_error = (
                f"{stage}: {doing} failed ({exc.__class__.__name__}: {exc}); an Ostiary bug, please report it"
            )
        self._retry = isinstance(exc, OpaError) and not isinstance(exc, OpaModuleRefused)
        if not self._retry:
            self._signature = signature
        log.error("%s", self.load_error)

    def load_base(self) -> None:
        """Library and custom Rego (the cluster source brings the policies); all or nothing."""
        signature = dir_signature(self.rt.config.rego_dir)
        doing = "loading custom Rego"
        try:
            custom = self._custom_modules()
            doing = "pushing it to OPA"
            self.rt.sync.set_base(library_modules() + custom)
        except Exception as exc:  # noqa: BLE001 - any failure is reported by /readyz, never a crash
            self._failed("custom Rego not loaded", doing, exc, signature)
            return
        self._loaded(signature, f"the library and {len(custom)} custom modules")

    def reload_directory(self) -> None:
        """Load custom Rego and the policy directory; on failure OPA keeps the last good set
        (PolicySync restores it) and /readyz says so. An ImagePolicy that is invalid, over a bound
        or refused by OPA does not stop the load: it is replaced by a refusal that denies its own
        namespace (app/policies/directory.py), and /readyz names it."""
        config = self.rt.config
        signature = dir_signature(config.policy_dir, config.rego_dir)
        stage, doing = "policies not loaded", "reading the policy files"
        try:
            policy_set, errors = collect_policy_set(config.policy_dir or "", config.system_namespace)
            doing = "translating the policies"
            modules, translate_errors = translate_policy_set(policy_set.policies, config.bounds)
            modules, refused = with_refusals(modules, errors + translate_errors)
            stage, doing = "custom Rego not loaded", "reading custom Rego"
            custom = self._custom_modules()
            stage, doing = "policies and custom Rego not loaded", "pushing them to OPA"
            modules, refused = self._push_directory(
                library_modules() + custom, modules, errors + translate_errors, refused
            )
        except Exception as exc:  # noqa: BLE001 - any failure is reported by /readyz, never a crash
            self._failed(stage, doing, exc, signature)
            return
        self.refused = refused
        for what, why in refused.items():
            log.error("%s refused, its namespace is denied: %s", what, why)
        self.rt.swap_store(DirectoryStore(policy_set))
        in_force = len(policy_set.policies) - len(refused)
        self.rt.metrics.policies.set(in_force)
        self._loaded(
            signature,
            f"{in_force} policies and {len(custom)} custom modules"
            + (f" ({len(refused)} ImagePolicies refused)" if refused else ""),
        )
        log.info("loaded %d policies from %s", len(policy_set.policies), config.policy_dir)

    def _push_directory(
        self,
        base: list[RegoModule],
        modules: list[RegoModule],
        errors: list[PolicyError],
        refused: dict[str, str],
    ) -> tuple[list[RegoModule], dict[str, str]]:
        """Push base and policies; a namespace policy OPA refuses to compile is refused like an
        invalid one (a refusal in its place) and the rest pushed again. Returns what is in force."""
        ids = {m.id for m in modules}
        errors = list(errors)
        for _ in range(len(modules) + 1):
            try:
                self.rt.sync.replace(base, modules)
                return modules, refused
            except OpaModuleRefused as exc:
                tenant = namespace_policy_of(exc.module_id)
                if exc.module_id not in ids or tenant is None:
                    raise
                origin = next(m.origin for m in modules if m.id == exc.module_id)
                error = PolicyError(origin, "", f"OPA refused its module: {exc.errors}")
                error.tenant = tenant
                errors.append(error)
                untouched = [m for m in modules if m.id != exc.module_id]
                modules, refused = with_refusals(untouched, [e for e in errors if e.tenant is not None])
        raise RuntimeError("OPA kept refusing namespace policies")  # a bug: each round refuses one more

    def _loaded(self, signature: Signature, what: str) -> None:
        self.load_error = None
        self._retry = False
        self._signature = signature
        self.in_force = f"{what}, loaded {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"

    def serving(self) -> bool:
        """True once a complete set (library, custom Rego, policies) has been in force."""
        return self.rt.sync.synced and self.in_force is not None

    # -- the watchdog -----------------------------------------------------------------------

    def start(self) -> None:
        """The watchdog and readiness threads (after the first load)."""
        self._watchdog.start()
        self.probe()
        self._prober.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def _watch(self) -> None:
        """Restart a dead local OPA; in directory mode push everything again when OPA lost its
        modules, and reload the files when they change. Every watch_interval, or at once when a
        probe wakes it."""
        while True:
            self._wake.wait(self.rt.config.watch_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.watch_once()
            except Exception:  # noqa: BLE001 - keep watching; the next round tries again
                log.exception("watchdog round failed")

    def watch_once(self) -> None:
        rt, config = self.rt, self.rt.config
        self._reread_token()
        if rt.local_opa is not None and not rt.local_opa.alive():
            log.error("local OPA died; restarting it: %s", rt.local_opa.log_tail(500))
            rt.local_opa.start()
            self.opa_restarts += 1
            rt.opa.url = rt.local_opa.url
        # OPA must hold exactly Ostiary's modules: any difference (OPA restarted, a module planted,
        # deleted or replaced by someone else) is repaired, logged and counted. In a cluster the
        # policy source does this itself (and lists the API again). A full look of the probe's
        # within REPAIR_BOUND stands while OPA holds the set's marker (a restart: repaired now).
        if rt.kube is None and rt.sync.synced:
            try:
                rt.sync.repair(within=REPAIR_BOUND)
            except OpaError as exc:
                log.warning("could not compare OPA's modules with Ostiary's: %s", exc)
        if rt.kube is not None:
            if self._retry or dir_signature(config.rego_dir) != self._signature:
                self.load_base()
        elif config.policy_dir and (
            self._retry or dir_signature(config.policy_dir, config.rego_dir) != self._signature
        ):
            self.reload_directory()

    def _reread_token(self) -> None:
        """--opa-token-file is a mounted Secret: a rotated token is used from the next request."""
        path = self.rt.config.opa_token_file
        if not path:
            return
        try:
            token = read_token(path)
        except ConfigError as exc:
            log.error("keeping the current OPA token: %s", exc)
            return
        if token != self.rt.opa.token:
            log.info("the OPA token file changed; using the new token")
            self.rt.opa.set_token(token)

    # -- readiness --------------------------------------------------------------------------

    def ready(self) -> tuple[bool, str]:
        """(ready, why) as the last probe found it (every READY_INTERVAL, app thread
        `ostiary-readiness`): answered at once, whatever OPA or the request threads are doing. A
        probe that has not come back for READY_STALE seconds is itself the reason to be unready."""
        ok, why, at, restarts = self._readiness
        local = self.rt.local_opa
        if local is not None and not local.alive():
            return False, "local OPA is not running (being restarted)"
        if restarts != self.opa_restarts:
            return False, "OPA was restarted; Ostiary's modules are being pushed to it again"
        age = time.monotonic() - at
        if age > READY_STALE:
            return (
                False,
                f"the readiness probe has not come back for {age:.0f}s (OPA or a policy push is stuck); last: {why}",
            )
        return ok, why

    def _probe_loop(self) -> None:
        while not self._stop.wait(READY_INTERVAL):
            self.probe()

    def _opa_problem(self) -> str | None:
        """What is wrong with OPA now (None: it answers); the requests waiting on it are given up."""
        rt = self.rt
        if rt.local_opa is not None and not rt.local_opa.alive():
            problem: str | None = "local OPA is not running (being restarted)"
        else:
            problem = rt.opa.problem()
        if problem is not None:
            given_up = rt.opa.abandon_waits(problem)
            if given_up:
                log.error("OPA is not answering (%s); gave up %d requests waiting on it", problem, given_up)
        return problem

    def probe(self) -> None:
        """Probe OPA and the policy set once and keep the answer for ready(). When OPA does not
        answer, the requests waiting on it are given up at once (fail closed), so the request
        threads are free to answer, and admissions are denied without asking it until it answers."""
        restarts = self.opa_restarts
        verdict: tuple[bool | None, str]
        problem: str | None = "not probed"
        try:
            problem = self._opa_problem()
            self.opa_problem = problem
            verdict = self._check_ready(problem)
        except Exception as exc:  # noqa: BLE001 - a probe must never die; its failure is the answer
            log.exception("readiness probe failed")
            verdict = False, f"readiness probe failed: {exc.__class__.__name__}: {exc}"
        ok, why = verdict
        if ok is not None:
            self._probed = (problem is None, restarts)
        if ok is None:  # a push is under way and OPA answers: keep the last verdict, fresh, if still valid
            last = self._readiness
            ok, why = (
                (last[0], last[1])
                if last[3] == restarts
                else (False, "OPA was restarted; Ostiary's modules are being pushed to it again")
            )
        self._readiness = (ok, why, time.monotonic(), restarts)

    def _check_ready(self, problem: str | None) -> tuple[bool | None, str]:
        """200 only when OPA holds exactly the whole set asked for and the last load succeeded."""
        rt = self.rt
        if not self.serving():
            return (
                False,
                f"nothing in force: {self.load_error}" if self.load_error else "policies not synced yet",
            )
        if rt.kube is not None and not rt.kube.ready:
            return False, "cluster policy source has not finished its first sync"
        if problem:
            return False, problem
        if self.load_error:
            return False, f"{self.load_error}; still deciding with the last good set ({self.in_force})"
        return self._in_place()

    def _in_place(self) -> tuple[bool | None, str]:
        """Whether OPA holds exactly the set: its marker, or a full comparison when one is due
        (module docstring). Not in place after a probe that found it so: the watchdog is woken."""
        answered, restarts = self._probed
        clean = answered and restarts == self.opa_restarts
        in_place = self.rt.sync.in_place(wait=READY_INTERVAL, within=FULL_CHECK_INTERVAL if clean else 0.0)
        if in_place is None:
            return None, ""
        if not in_place:
            if self._readiness[0]:
                self._wake.set()
            return False, "OPA does not hold exactly Ostiary's modules (repair pending)"
        if not self.rt.sync.holds_base():
            return False, (
                "OPA holds no Ostiary library, so every admission is denied: the policy set is held back "
                f"({self.rt.sync.held_back})"
            )
        return True, "; ".join(["ready", *self._notes()])

    def _notes(self) -> list[str]:
        """What a ready answer adds: a held-back newer set, refused policies."""
        rt, notes = self.rt, []
        held_back = rt.sync.held_back
        if held_back:
            notes.append(f"with the last policy set that fitted OPA; the newer set is held back: {held_back}")
        refused = self.refused if rt.kube is None else rt.kube.policies.refused()
        if refused:
            notes.append(
                "refused, so their namespaces are denied: "
                + "; ".join(f"{what}: {why}" for what, why in refused.items())
            )
        return notes
