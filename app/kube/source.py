"""The cluster policy source: ImagePolicy and ClusterImagePolicy resources, listed and watched, in OPA.

What it keeps true: OPA holds exactly one module per policy resource that parses, translates and
compiles — no more, no fewer — derived from the resources as they are now, never from their history.

- Kinds: ``ostiary.dev/v1`` (its CRDs must be installed), and the Portieris groups
  ``portieris.cloud.ibm.com/v1`` and ``securityenforcement.admission.cloud.ibm.com/v1beta1``
  when the API serves them (checked by discovery at start and every ``discovery_interval``, so a
  cluster migrating from Portieris keeps its policies).
- Start: every kind is listed, the whole set is pushed at once (``PolicySync.replace_all``), then
  each kind is watched from the resourceVersion of its list. ``ready`` turns true after that first
  full sync and stays true.
- A watch event re-derives the desired set and pushes only the difference (``upsert``/``remove``).
- A watch error (410 Gone, a dropped connection, a 5xx) relists that kind and pushes everything again.
- OPA's whole module set (ids and text) is compared with the desired one every ``opa_check_interval``;
  any difference (OPA restarted, a module planted, deleted or replaced) is repaired, logged and counted.
- A resource over a bound of app/policies/bounds.py (its entries; its scope's or all policies'
  translated size, the smaller policies kept first) is refused before it reaches OPA, like one that
  fails to parse.
- A resource that fails to parse, translate or compile is not in force at all (never half-applied): it
  is reported as a Warning Event on the resource, in the log, and — for ``ostiary.dev`` resources —
  in ``status.conditions`` (type ``Ready``). Other resources are unaffected.
- A namespace whose ImagePolicy is refused (any of the reasons above) fails closed, for that namespace
  only: one refusal module (translate.refused_module, named after its first refused policy, saying
  why each is refused) takes the place of the refused policies, so every image in the namespace is
  denied naming them — never decided by the ClusterImagePolicies as if the namespace had no policy
  of its own. Other namespaces keep their policies. ``refused()`` lists them for /readyz.
- The same kind, namespace and name in two groups (a Portieris policy and its Ostiary copy) would be
  the same module: the ``ostiary.dev`` one wins, the other is reported as a conflict.

Deciding which policy applies is the Rego library's job; this module only moves documents.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.kube.client import KubeApi, KubeError, WatchExpired, object_path
from app.kube.desired import CONFLICT, ModuleOrError, derive
from app.kube.events import EventReporter
from app.kube.timings import KubeTimings
from app.opa.client import OpaModuleRefused
from app.policies.bounds import DEFAULT_BOUNDS, Bounds, over_bounds
from app.policies.kinds import POLICY_KINDS, Key, PolicyKind, as_document, describe, object_key, origin_of
from app.policies.model import PolicyResource, RegoModule, policy_document_id
from app.policies.sync import PolicySync
from app.policies.translate import refused_module

log = logging.getLogger(__name__)


def collection_path(kind: PolicyKind) -> str:
    """Where a kind is listed and watched (for a namespaced kind: every namespace)."""
    return object_path(kind.api_version, kind.plural, None)


@dataclass
class Outcome:
    """What happened to one resource in the last reconcile: the module it became, or why not."""

    module_id: str | None = None
    error: str | None = None
    held_back: str | None = None  # why its module is not in OPA although valid (PolicySync.held_back)


class KubePolicySource:
    """Keeps OPA's policy modules equal to the policy resources in the cluster (module docstring)."""

    def __init__(
        self,
        api: KubeApi,
        *,
        sync: PolicySync,
        translate: Callable[[PolicyResource], RegoModule],
        parse: Callable[[dict, str], PolicyResource],
        bounds: Bounds = DEFAULT_BOUNDS,
        on_change: Callable[[], None] | None = None,
        opa_repair: Callable[[], object] | None = None,
        reporter: EventReporter | None = None,
        kinds: tuple[PolicyKind, ...] = POLICY_KINDS,
        timings: KubeTimings | None = None,
    ):
        self._api = api
        self._sync = sync
        self._translate = translate
        self._parse = parse
        self._bounds = bounds
        self._on_change = on_change
        self._opa_repair = opa_repair
        self._reporter = reporter if reporter is not None else EventReporter(api)
        self._kinds = kinds
        self._timings = timings if timings is not None else KubeTimings()

        self._lock = threading.RLock()
        self._objects: dict[Key, tuple[PolicyKind, dict]] = {}
        self._translated: dict[
            Key, tuple[tuple, ModuleOrError]
        ] = {}  # key -> ((uid, resourceVersion), module | error)
        self._applied: dict[str, RegoModule] = {}  # module id -> RegoModule in OPA
        self._outcomes: dict[Key, Outcome] = {}
        self._refusals: dict[str, str] = {}  # refusal module id -> why (its namespace's refused policies)
        self._refused_now: dict[str, str] = {}  # "ImagePolicy ns/name" -> why, as last pushed (for /readyz)
        self._reported: dict[Key, tuple] = {}
        # The last derivation recorded, and the module ids held back then: a set released (or
        # held) by a repair round is recorded again (statuses back to Applied).
        self._recorded: tuple[dict[str, tuple[Key, RegoModule]], dict[Key, str]] | None = None
        self._held_recorded: set[str] = set()
        self._served: set[PolicyKind] = set()
        self._watchers: dict[PolicyKind, threading.Thread] = {}
        self._resync_needed = False
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def start(self) -> None:
        if self._supervisor is None:
            self._supervisor = threading.Thread(
                target=self._supervise, name="ostiary-kube-policies", daemon=True
            )
            self._supervisor.start()

    def stop(self) -> None:
        self._stop.set()

    def outcomes(self) -> dict[Key, Outcome]:
        with self._lock:
            return dict(self._outcomes)

    def refused(self) -> dict[str, str]:
        """The namespace policies refused in the set last pushed ("ImagePolicy.group ns/name" -> why):
        their namespaces are denied. Read without the lock (replaced whole, never changed in place)."""
        return self._refused_now

    def report_held_back(self, reason: str, module_ids: set[str]) -> None:
        """A Warning Event on each resource whose module OPA is not given because the policy set
        is held back (PolicySync.held_back: over the push budget, or OPA died of it). Called from
        within a push: reads a snapshot, takes no lock."""
        for key, (kind, obj) in list(self._objects.items()):
            _, kind_name, namespace, name = key
            if policy_document_id(namespace, name) in module_ids:
                self._reporter.event(
                    kind,
                    obj,
                    "PolicySetHeldBack",
                    f"not in force: OPA keeps the last policy set that fitted: {reason}",
                )

    # ----------------------------------------------------------------- listing and watching

    def _list(self, kind: PolicyKind) -> tuple[list[dict], str] | None:
        """Items and resourceVersion of a kind, or None when the API does not serve it."""
        if not kind.required and not self._api.group_version_served(kind.group, kind.version):
            return None
        try:
            listing = self._api.list(collection_path(kind))
        except KubeError as exc:
            if exc.status == 404:
                if kind.required:
                    raise KubeError(
                        404,
                        f"{kind.plural}.{kind.group} is not served: install the "
                        "Ostiary CRDs (helm/ostiary/crds/)",
                    ) from None
                return None
            raise
        items = [item for item in listing.get("items") or [] if isinstance(item, dict)]
        return items, str((listing.get("metadata") or {}).get("resourceVersion") or "")

    def full_sync(self) -> dict[PolicyKind, str]:
        """List every kind, push the whole set; returns the resourceVersion to watch each served kind from."""
        listed: dict[PolicyKind, tuple[list[dict], str]] = {}
        for kind in self._kinds:
            result = self._list(kind)
            if result is not None:
                listed[kind] = result
        with self._lock:
            self._objects = {}
            for kind, (items, _) in listed.items():
                for obj in items:
                    self._objects[object_key(kind, obj)] = (kind, obj)
            self._served = set(listed)
            self._apply_all()
        return {kind: rv for kind, (_, rv) in listed.items()}

    def _relist(self, kind: PolicyKind) -> str | None:
        result = self._list(kind)
        with self._lock:
            for key in [k for k, (kd, _) in self._objects.items() if kd == kind]:
                del self._objects[key]
            if result is None:
                self._served.discard(kind)
            else:
                self._served.add(kind)
                for obj in result[0]:
                    self._objects[object_key(kind, obj)] = (kind, obj)
            self._apply_all()
        return None if result is None else result[1]

    def handle_event(self, kind: PolicyKind, event_type: str, obj: dict) -> None:
        """One watch event (ADDED, MODIFIED, DELETED); BOOKMARKs are handled by the watcher."""
        key = object_key(kind, obj)
        with self._lock:
            if event_type == "DELETED":
                self._objects.pop(key, None)
                self._translated.pop(key, None)
                self._reported.pop(key, None)
            elif event_type in ("ADDED", "MODIFIED"):
                self._objects[key] = (kind, obj)
            else:
                return
            self._apply_changes()

    def _watch_loop(self, kind: PolicyKind, resource_version: str | None) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    resource_version = self._relist(kind)
                    if resource_version is None:
                        log.info("%s.%s is no longer served; stopped watching it", kind.plural, kind.group)
                        return
                for event_type, obj in self._api.watch(
                    collection_path(kind), resource_version, self._timings.watch_timeout
                ):
                    if self._stop.is_set():
                        return
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        resource_version = str(rv)
                    if event_type != "BOOKMARK":
                        self.handle_event(kind, event_type, obj)
                failures = 0
            except WatchExpired:
                log.info("watch of %s.%s expired; listing again", kind.plural, kind.group)
                resource_version = None
            except Exception as exc:  # noqa: BLE001 - a watch must survive anything: relist and resync
                failures += 1
                log.warning(
                    "watch of %s.%s failed (%s); listing again and resyncing", kind.plural, kind.group, exc
                )
                resource_version = None
                self._stop.wait(min(self._timings.retry_interval * failures, 30.0))
        return

    def _start_watcher(self, kind: PolicyKind, resource_version: str) -> None:
        thread = self._watchers.get(kind)
        if thread is not None and thread.is_alive():
            return
        thread = threading.Thread(
            target=self._watch_loop,
            args=(kind, resource_version),
            name=f"ostiary-watch-{kind.plural}.{kind.group}",
            daemon=True,
        )
        self._watchers[kind] = thread
        thread.start()

    def _supervise(self) -> None:
        failures = 0
        while not self._stop.is_set() and not self._ready.is_set():
            try:
                versions = self.full_sync()
            except Exception as exc:  # noqa: BLE001 - stay unready and retry, whatever went wrong
                failures += 1
                log.error("policy sync from the Kubernetes API failed (not ready): %s", exc)
                self._stop.wait(min(self._timings.retry_interval * failures, 30.0))
                continue
            self._ready.set()
            log.info(
                "policies synced from the Kubernetes API: %d modules from %d resources",
                len(self._applied),
                len(self._objects),
            )
            for kind, rv in versions.items():
                self._start_watcher(kind, rv)
        next_opa_check = time.monotonic() + self._timings.opa_check_interval
        next_discovery = time.monotonic() + self._timings.discovery_interval
        while not self._stop.wait(min(1.0, self._timings.opa_check_interval)):
            now = time.monotonic()
            try:
                if self._resync_needed:
                    with self._lock:
                        self._apply_all()
                if now >= next_opa_check:
                    next_opa_check = now + self._timings.opa_check_interval
                    self.check_opa()
                if now >= next_discovery:
                    next_discovery = now + self._timings.discovery_interval
                    self.discover()
            except Exception as exc:  # noqa: BLE001 - the upkeep thread must not die
                log.warning("policy source upkeep failed, will retry: %s", exc)

    def discover(self) -> None:
        """Start watching optional kinds (the Portieris groups) whose CRDs appeared since the last look."""
        for kind in self._kinds:
            if kind.required or self._stop.is_set():
                continue
            thread = self._watchers.get(kind)
            if thread is not None and thread.is_alive():
                continue
            if not self._api.group_version_served(kind.group, kind.version):
                continue
            log.info("%s.%s is now served; listing and watching it", kind.plural, kind.group)
            rv = self._relist(kind)
            if rv is not None:
                self._start_watcher(kind, rv)

    def check_opa(self) -> bool:
        """Compare OPA's whole module set with the desired one and repair any difference
        (``PolicySync.repair``: it logs and counts it); True when OPA was exact."""
        if self._opa_repair is None:
            return True
        with self._lock:
            found = self._opa_repair()
            if found is None:
                if self._recorded is not None and self._sync.not_held() != self._held_recorded:
                    self._record(*self._recorded)
                return True
            self._apply_all()
        return False

    # ----------------------------------------------------------------- deriving and applying

    def _module_for(self, key: Key, kind: PolicyKind, obj: dict) -> ModuleOrError:
        """The RegoModule of a resource, or a str saying why it has none (cached per resourceVersion)."""
        meta = obj.get("metadata") or {}
        version = (meta.get("uid"), meta.get("resourceVersion"), meta.get("generation"))
        cached = self._translated.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        result: ModuleOrError
        try:
            result = self._translate(self._parse(as_document(kind, obj), origin_of(key)))
        except Exception as exc:  # noqa: BLE001 - PolicyError, or a translator bug: reported on the resource
            result = f"invalid policy: {exc}"
        self._translated[key] = (version, result)
        return result

    def _desired(self) -> tuple[dict[str, tuple[Key, RegoModule]], dict[Key, str]]:
        desired, errors = derive(self._objects, self._kinds, self._module_for)
        over = over_bounds([(mid, module) for mid, (_, module) in desired.items()], self._bounds)
        for mid, reason in over.items():
            key, _ = desired.pop(mid)
            errors[key] = f"invalid policy: {reason}"
        self._add_refusals(desired, errors)
        return desired, errors

    def _add_refusals(self, desired: dict[str, tuple[Key, RegoModule]], errors: dict[Key, str]) -> None:
        """Fail closed for each namespace with a refused ImagePolicy: one refusal module in
        `desired` (replacing a refused policy's module id, so the namespace is never left to the
        ClusterImagePolicies), and the reason on each refused resource says so. A resource that is
        only a lower-precedence copy of one in force (the Portieris twin of an ostiary.dev policy)
        refuses nothing."""
        precedence = {(kind.api_version, kind.kind): i for i, kind in enumerate(self._kinds)}
        by_namespace: dict[str, list[Key]] = {}
        for key, error in errors.items():
            _, kind_name, namespace, name = key
            if kind_name != "ImagePolicy" or not namespace or error.startswith(CONFLICT):
                continue
            holder = desired.get(policy_document_id(namespace, name))
            if holder is not None and precedence.get(holder[0][:2], 99) < precedence.get(key[:2], 99):
                continue  # shadowed by a higher-precedence copy in force
            by_namespace.setdefault(namespace, []).append(key)
        refusals: dict[str, str] = {}
        refused_now: dict[str, str] = {}
        for namespace, keys in sorted(by_namespace.items()):
            keys.sort(key=lambda k: (k[3], precedence.get(k[:2], 99)))
            reasons = {describe(k): errors[k] for k in keys}
            reason = (
                errors[keys[0]]
                if len(keys) == 1
                else "; ".join(f"{what}: {why}" for what, why in reasons.items())
            )
            module = refused_module(namespace, keys[0][3], origin_of(keys[0]), reason)
            displaced = desired.get(module.id)
            if displaced is not None and displaced[0] != keys[0]:  # a lower-precedence twin of it
                errors.setdefault(displaced[0], f"not applied: {describe(keys[0])} in its place is refused")
            desired[module.id] = (keys[0], module)
            refusals[module.id] = reason
            refused_now.update(reasons)
            for key in keys:
                errors[key] += f" (every image in namespace {namespace} is denied until it is fixed)"
        self._refusals = refusals
        self._refused_now = refused_now

    def _opa_refused(self, module_id: str, desired: dict[str, tuple[Key, RegoModule]], errors: str) -> None:
        """Remember that OPA refused a resource's module (for this resourceVersion, like a failed
        translation), so the next derivation refuses the resource; raise when the refused module
        is no resource's own (a refusal module: a library or translator bug, not a tenant's)."""
        if module_id not in desired or module_id in self._refusals:
            self._resync_needed = True
            raise OpaModuleRefused(module_id, errors)
        key, _ = desired[module_id]
        version = self._translated[key][0] if key in self._translated else ()
        self._translated[key] = (version, f"OPA refused the translated module {module_id}: {errors}")

    def _apply_all(self) -> None:
        """Push the whole desired set at once; a module OPA refuses is refused like an invalid
        resource (its namespace denied) and the rest pushed again."""
        for _ in range(len(self._objects) + 2):
            desired, errors = self._desired()
            try:
                self._sync.replace_all([module for _, module in desired.values()])
                break
            except OpaModuleRefused as exc:
                self._opa_refused(exc.module_id, desired, exc.errors)
            except Exception:
                self._resync_needed = True
                raise
        else:
            self._resync_needed = True
            raise RuntimeError("OPA kept refusing policy modules; will push everything again")
        self._resync_needed = False
        self._applied = {mid: module for mid, (_, module) in desired.items()}
        self._record(desired, errors)
        self._changed()

    def _apply_changes(self) -> None:
        """Push only what differs from what OPA holds (one watch event's worth)."""
        if self._resync_needed:
            self._apply_all()
            return
        desired, errors = self._desired()
        changed = False
        try:
            for mid in [mid for mid in self._applied if mid not in desired]:
                self._sync.remove(mid)
                del self._applied[mid]
                changed = True
            for mid, (_key, module) in list(desired.items()):
                if self._applied.get(mid) == module:
                    continue
                try:
                    self._sync.upsert(module)
                except OpaModuleRefused as exc:
                    if exc.module_id != mid:
                        raise
                    # refused like an invalid resource: its namespace denied, the whole set pushed
                    self._opa_refused(mid, desired, exc.errors)
                    self._apply_all()
                    return
                self._applied[mid] = module
                changed = True
        except Exception as exc:  # noqa: BLE001 - OPA unreachable: the upkeep thread pushes everything
            self._resync_needed = True
            log.warning("pushing a policy change to OPA failed (%s); will push everything again", exc)
            return
        self._record(desired, errors)
        if changed:
            self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception as exc:  # noqa: BLE001 - a callback must not stop policy updates
                log.warning("on_change callback failed: %s", exc)

    def _record(self, desired: dict[str, tuple[Key, RegoModule]], errors: dict[Key, str]) -> None:
        """Remember each resource's outcome and report the ones that changed (Events, status, log)."""
        self._recorded = (desired, errors)
        held = self._sync.not_held()
        self._held_recorded = held
        why_held = self._sync.held_back or "the policy set is held back"
        applied_by_key = {key: mid for mid, (key, _) in desired.items() if mid not in self._refusals}
        outcomes: dict[Key, Outcome] = {}
        for key, (kind, obj) in self._objects.items():
            module_id = applied_by_key.get(key)
            outcome = Outcome(module_id, errors.get(key), why_held if module_id in held else None)
            outcomes[key] = outcome
            meta = obj.get("metadata") or {}
            held_now = outcome.held_back is not None  # not its text: a retry countdown in it changes
            stamp = (meta.get("uid"), meta.get("generation"), outcome.module_id, outcome.error, held_now)
            if self._reported.get(key) == stamp:
                continue
            self._reported[key] = stamp
            self._report(key, kind, obj, outcome)
        self._outcomes = outcomes
        for key in [k for k in self._reported if k not in self._objects]:  # deleted while not watching
            del self._reported[key]
        for key in [k for k in self._translated if k not in self._objects]:
            del self._translated[key]

    def _report(self, key: Key, kind: PolicyKind, obj: dict, outcome: Outcome) -> None:
        """One resource's outcome in the log and on the resource (Event, status condition Ready)."""
        if outcome.error:
            log.error("policy %s not applied: %s", describe(key), outcome.error)
            self._reporter.event(kind, obj, "PolicyRejected", outcome.error)
            self._reporter.status(kind, obj, False, "PolicyRejected", outcome.error)
        elif outcome.held_back:  # its Event comes from report_held_back, once per hold
            log.warning("policy %s held back: %s", describe(key), outcome.held_back)
            self._reporter.status(
                kind,
                obj,
                False,
                "PolicySetHeldBack",
                f"valid but not in force: OPA keeps the last policy set that fitted: {outcome.held_back}",
            )
        else:
            log.info("policy %s applied as %s", describe(key), outcome.module_id)
            self._reporter.status(kind, obj, True, "Applied", f"in force as OPA module {outcome.module_id}")
