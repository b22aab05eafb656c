"""The composition root: builds the runtime of ``ostiary serve`` for each mode, and starts and
stops it explicitly.

- **Directory mode** (``--policy-dir``): policies, secrets and service accounts from files
  (app.policies.directory), reloaded when they change.
- **Cluster mode** (``--kube``): the policy source, object store, owner verifier and trust records
  from the Kubernetes API (app.kube.runtime.KubeRuntime).
- Both: OPA (the one Ostiary starts with token authentication, or ``--opa-url``), the policy sync
  that keeps OPA exact (app.policies.sync), the trust service (app.notary.service), metrics, and a
  watchdog thread.

Constructing a Runtime has no side effects; ``start()`` starts OPA, loads the policies, starts the
cluster source and the watchdog; ``stop()`` undoes it. The parts meet only through the Protocols
in app/ports.py. The offline commands (apply, explain, test, check: app/offline/engine.py) run
this same runtime in directory mode, with `OfflineSources` in place of the network and the state
directory, so their verdicts are the webhook's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app import defaults
from app.admission.plans import PlanCache
from app.admission.review import Reviewer
from app.audit.config import AuditConfig
from app.audit.loop import AuditLoop
from app.kube.records import KubeRecordStore
from app.kube.runtime import KubeRuntime
from app.metrics import Metrics
from app.notary import clock as clocks
from app.notary.client import NotaryClient
from app.notary.pins import load_default_root_pins
from app.notary.servers import TrustServerAllowList
from app.notary.service import TrustService
from app.notary.state import FileRecordStore, MemoryRecordStore, RecordStore, TrustRecord
from app.opa.client import OpaClient, OpaError, OpaModuleRefused
from app.opa.process import LocalOpa
from app.policies.bounds import DEFAULT_BOUNDS, Bounds, bounded
from app.policies.directory import (
    DirectoryStore,
    collect_policy_set,
    files_under,
    load_custom_rego,
    translate_policy_set,
    with_refusals,
)
from app.policies.model import DEFAULT_SYSTEM_NAMESPACE, PolicyError, PolicySet, RegoModule
from app.policies.pushguard import PushGuard
from app.policies.sync import PolicySync, library_modules
from app.policies.translate import translate
from app.ports import ObjectStore
from app.signatures.cache import SignatureCache
from app.signatures.cosign import CosignVerifier
from app.signatures.keyless import load_trusted_root
from app.signatures.notation import NotationVerifier
from app.signatures.registry import RegistryReader
from app.signatures.service import SignatureService
from app.signatures.simple import SimpleVerifier

log = logging.getLogger("ostiary")

READY_INTERVAL = 0.5  # seconds between readiness probes (the state /readyz answers from)
READY_STALE = 5.0  # a probe older than this is itself the answer: something it waits on is stuck


@dataclass
class ServeConfig:
    policy_dir: str | None = None
    rego_dir: str | None = None
    opa_url: str | None = None
    opa_token_file: str | None = None  # the bearer token of an external OPA (the chart's sidecar)
    ca_file: str | None = None
    system_namespace: str = DEFAULT_SYSTEM_NAMESPACE
    budget: float = defaults.BUDGET_SECONDS
    trust_cache_ttl: float = defaults.TRUST_CACHE_TTL
    max_trust_records: int = defaults.MAX_TRUST_RECORDS  # serve --max-trust-records
    kube: bool = False
    kubeconfig: str | None = None
    decision_log: str | None = "-"  # app/decisionlog.py: "-" stdout, a file path, or "off"
    watch_interval: float = 2.0
    state_dir: str | None = (
        None  # durable trust-on-first-use records (app/notary/state.py); None: memory only
    )
    root_pins: str | None = None  # YAML file: trust server URL -> pinned root material (serve --root-pins)
    # registry host -> base URL for manifest reads of the signature verifiers (serve --registry-endpoint)
    registry_endpoints: dict[str, str] = field(default_factory=dict)
    # keyless cosign: the Sigstore trusted_root.json (serve --sigstore-trusted-root); None: public-good
    sigstore_trusted_root: str | None = None
    # Trust servers namespace policies may name besides the defaults and the cluster policies' (serve
    # --trust-server-allow; "*" any): app.notary.servers.TrustServerAllowList.
    trust_server_allow: tuple[str, ...] = ()
    # What policies may cost OPA (app/policies/bounds.py; serve --max-policy-entries,
    # --max-namespace-policy-bytes, --max-policy-bytes).
    bounds: Bounds = DEFAULT_BOUNDS
    # The background audit (app/audit, docs/audit.md; serve --audit, cluster mode only); None: off.
    audit: AuditConfig | None = None
    # Only read the cluster: no policy status or Events written (`ostiary audit`).
    read_only: bool = False


@dataclass(frozen=True)
class OfflineSources:
    """What an offline command puts in place of serve's network and disk; every other part of the
    runtime (policies, OPA, pins, allow-list, Secrets, verifiers) is serve's own."""

    notary_client: Any = None  # app.offline.replay.ReplayClient (captured trust data); None: live
    signature_reader: Any = None  # app.signatures.replay.ReplayReader (captured signatures); None: live
    at: datetime | None = None  # the verification time; None: the clock
    # The recorded roots to start from (in memory, never written); None: none given, so every
    # unpinned repository is a first use, which the offline commands say in their output.
    records: Sequence[TrustRecord] | None = None

    def clock(self) -> Callable[[], datetime]:
        at = self.at
        if at is None:
            return lambda: datetime.now(UTC)
        fixed = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
        return lambda: fixed


def read_token(path: str) -> str:
    """The bearer token in `path` (surrounding whitespace dropped; a Secret's trailing newline)."""
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the OPA token file {path}: {exc}") from None
    if not token or any(c.isspace() for c in token):
        raise ValueError(
            f"the OPA token file {path} must hold one token (no spaces), not {'nothing' if not token else 'several words'}"
        )
    return token


def _dir_signature(*dirs: str | None) -> tuple:
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


class Runtime:
    """Owns OPA (local or remote), the policy sync, the object store, the trust service and the
    reviewer. Build it, ``start()`` it, ``stop()`` it."""

    def __init__(self, config: ServeConfig, offline: OfflineSources | None = None):
        self.config = config
        self.offline = offline
        self.metrics = Metrics()
        self.local_opa: LocalOpa | None = None if config.opa_url else LocalOpa(authenticate=True)
        token = read_token(config.opa_token_file) if config.opa_url and config.opa_token_file else None
        self.opa = OpaClient(config.opa_url or "http://127.0.0.1:0", token=token)  # local: set by start()
        # Nothing over the push budget (derived from OPA's memory limit), nor a set OPA died of, is
        # pushed again and again (app/policies/pushguard.py).
        guard = PushGuard(config.bounds.max_push_bytes, on_death=self.metrics.opa_push_deaths.inc)
        self.sync = PolicySync(
            self.opa, on_drift=self.metrics.record_drift, guard=guard, on_hold=self._on_hold
        )
        self.load_error: str | None = None  # why the last load failed; None when it succeeded
        self.in_force: str | None = None  # what the last good load put in force (for /readyz)
        # Directory mode: the ImagePolicies refused while the rest is in force ("ImagePolicy ns/name
        # (file#doc)" -> why); their namespaces are denied (app/policies/directory.py with_refusals).
        self.refused: dict[str, str] = {}
        # Every policy goes through the bounds (app/policies/bounds.py): the webhook, the cluster
        # source and the directory loader translate with this.
        self.translate = bounded(translate, config.bounds)
        self._signature: tuple = ()  # of the files the last load read (a bad file waits for a change)
        self._retry = False  # the last load failed because OPA did not answer: try again next round
        self._stop = threading.Event()
        self.kube: KubeRuntime | None = None
        if config.kube:
            self.kube = KubeRuntime(
                kubeconfig=config.kubeconfig,
                system_namespace=config.system_namespace,
                sync=self.sync,
                translate=self.translate,
                bounds=config.bounds,
                read_only=config.read_only,
            )
        self.store: ObjectStore = self.kube.store if self.kube is not None else DirectoryStore(PolicySet())
        self.trust = self.trust_service(offline)
        self.metrics.watch_trust(self.trust.stats)
        self.signature_cache = SignatureCache(self.config.trust_cache_ttl)
        self.metrics.watch_signature_cache(self.signature_cache.stats)
        self.signatures = self.signature_service(offline, self.signature_cache)
        self.metrics.watch_signatures(self.signatures.stats)
        self.reviewer = Reviewer(
            self.opa,
            self.store,
            trust=self.trust,
            owners=self.kube.owners if self.kube is not None else None,
            system_namespace=config.system_namespace,
            budget=config.budget,
            plans=PlanCache(lambda: self.sync.generation),
            signatures=self.signatures,
            default_root_pins=self.trust.default_pins,
        )
        self.audit: AuditLoop | None = None
        if self.kube is not None and config.audit is not None:
            self.audit = AuditLoop(
                self.kube.api,
                self.reviewer,
                system_namespace=config.system_namespace,
                config=config.audit,
                metrics=self.metrics.audit,
                generation=lambda: self.sync.generation,
                ready=lambda: self.kube is not None and self.kube.ready and self.serving(),
            )
        self._watchdog = threading.Thread(target=self._watch, name="ostiary-watchdog", daemon=True)
        # /readyz answers from the last probe (no I/O, no lock), never waiting on OPA itself.
        # (ready, why, when, OPA restarts seen): a verdict from before OPA's last restart is void.
        self._readiness: tuple[bool, str, float, int] = (
            False,
            "starting: not probed yet",
            time.monotonic(),
            0,
        )
        self._opa_restarts = 0
        self.opa_problem: str | None = None  # what the last probe found wrong with OPA; None: it answers
        self._prober = threading.Thread(target=self._probe_loop, name="ostiary-readiness", daemon=True)

    def _on_hold(self, reason: str | None) -> None:
        """A policy set held back (reason) or released (None): metrics, and Events in cluster mode."""
        self.metrics.opa_push_held_back.set(0 if reason is None else 1)
        kube = getattr(self, "kube", None)
        if reason is not None and kube is not None:
            kube.policies.report_held_back(reason, self.sync.not_held())

    def start(self, watch: bool = True) -> Runtime:
        """Start OPA (unless external), load the policies (or start the cluster source), start the
        watchdog (unless `watch` is False: an offline run). A policy set that does not load leaves the
        runtime unready, never crashed."""
        if self.local_opa is not None:
            self.local_opa.start()
            self.opa.url = self.local_opa.url
            self.opa.set_token(self.local_opa.token)
        if self.kube is not None:
            self.load_base()
            self.kube.start()
        elif self.config.policy_dir:
            self.reload_directory()
        else:
            self.load_error = "no policy source: give --policy-dir or --kube"
        if watch:
            self._watchdog.start()
            if self.audit is not None:
                self.audit.start()
            self.probe()
            self._prober.start()
        return self

    def trust_service(self, offline: OfflineSources | None = None) -> TrustService:
        """The trust service serve decides with; an offline run's reads captures (or the network) at
        its time, from the records it was given, and writes nothing durable."""
        records: RecordStore | None
        if offline is not None:
            records = MemoryRecordStore(offline.records or (), "the records given to this run")
        else:
            records = FileRecordStore(self.config.state_dir).ensure() if self.config.state_dir else None
            if records is None and self.kube is not None:
                # Records shared by every replica, in the cluster (app/kube/records.py).
                records = KubeRecordStore(self.kube.request_api, self.config.system_namespace)
        default_pins = load_default_root_pins(self.config.root_pins) if self.config.root_pins else None
        return TrustService(
            ca_file=self.config.ca_file,
            cache_ttl=self.config.trust_cache_ttl,
            records=records,
            default_pins=default_pins,
            max_records=self.config.max_trust_records,
            allow=TrustServerAllowList(self.config.trust_server_allow, self.sync.cluster_trust_servers),
            hide_connection_errors=True,
            client=offline.notary_client if offline is not None else None,
            clock=offline.clock() if offline is not None else clocks.utcnow,
        )

    def signature_service(
        self, offline: OfflineSources | None = None, cache: SignatureCache | None = None
    ) -> SignatureService:
        """The signature verifiers serve decides with; offline: reading captures, at the run's time."""
        reader = offline.signature_reader if offline is not None else None
        if reader is None:
            reader = RegistryReader(
                NotaryClient(ca_file=self.config.ca_file), endpoints=self.config.registry_endpoints
            )
        root = (
            load_trusted_root(self.config.sigstore_trusted_root)
            if self.config.sigstore_trusted_root
            else None
        )
        # verified facts and tag resolutions, as fresh as the Notary trust cache (--trust-cache-ttl);
        # an offline run's own (other captures, another time: nothing shared with serve's)
        cache = cache or SignatureCache(self.config.trust_cache_ttl)
        at = offline.at if offline is not None else None
        moment = (at if at.tzinfo is not None else at.replace(tzinfo=UTC)).timestamp() if at else None
        clock = {"clock": lambda: moment} if moment is not None else {}
        return SignatureService(
            [
                SimpleVerifier(reader, cache=cache, **clock),
                CosignVerifier(reader, trusted_root=root, cache=cache),
                NotationVerifier(reader, **clock),
            ]
        )

    def _custom_modules(self) -> list[RegoModule]:
        return load_custom_rego(self.config.rego_dir) if self.config.rego_dir else []

    def _failed(self, stage: str, doing: str, exc: BaseException, signature: tuple) -> None:
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
        signature = _dir_signature(self.config.rego_dir)
        doing = "loading custom Rego"
        try:
            custom = self._custom_modules()
            doing = "pushing it to OPA"
            self.sync.set_base(library_modules() + custom)
        except Exception as exc:  # noqa: BLE001 - any failure is reported by /readyz, never a crash
            self._failed("custom Rego not loaded", doing, exc, signature)
            return
        self._loaded(signature, f"the library and {len(custom)} custom modules")

    def reload_directory(self) -> None:
        """Load custom Rego and the policy directory; on failure OPA keeps the last good set
        (PolicySync restores it) and /readyz says so. An ImagePolicy that is invalid, over a bound
        or refused by OPA does not stop the load: it is replaced by a refusal that denies its own
        namespace (app/policies/directory.py), and /readyz names it."""
        signature = _dir_signature(self.config.policy_dir, self.config.rego_dir)
        stage, doing = "policies not loaded", "reading the policy files"
        try:
            policy_set, errors = collect_policy_set(
                self.config.policy_dir or "", self.config.system_namespace
            )
            doing = "translating the policies"
            modules, translate_errors = translate_policy_set(policy_set.policies, self.config.bounds)
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
        self.store = DirectoryStore(policy_set)
        self.reviewer.store = self.store
        self.metrics.policies.set(len(policy_set.policies) - len(refused))
        self._loaded(
            signature,
            f"{len(policy_set.policies) - len(refused)} policies and {len(custom)} custom modules"
            + (f" ({len(refused)} ImagePolicies refused)" if refused else ""),
        )
        log.info("loaded %d policies from %s", len(policy_set.policies), self.config.policy_dir)

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
                self.sync.replace(base, modules)
                return modules, refused
            except OpaModuleRefused as exc:
                parts = exc.module_id.split("/")
                if exc.module_id not in ids or parts[:3] != ["ostiary", "policies", "namespaced"]:
                    raise
                origin = next(m.origin for m in modules if m.id == exc.module_id)
                error = PolicyError(origin, "", f"OPA refused its module: {exc.errors}")
                error.tenant = (parts[3], "/".join(parts[4:]))
                errors.append(error)
                untouched = [m for m in modules if m.id != exc.module_id]
                modules, refused = with_refusals(untouched, [e for e in errors if e.tenant is not None])
        raise RuntimeError("OPA kept refusing namespace policies")

    def _loaded(self, signature: tuple, what: str) -> None:
        self.load_error = None
        self._retry = False
        self._signature = signature
        self.in_force = f"{what}, loaded {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"

    def serving(self) -> bool:
        """True once a complete set (library, custom Rego, policies) has been in force."""
        return self.sync.synced and self.in_force is not None

    def _watch(self) -> None:
        """Restart a dead local OPA; in directory mode push everything again when OPA lost its
        modules, and reload the files when they change."""
        while not self._stop.wait(self.config.watch_interval):
            try:
                self._reread_token()
                if self.local_opa is not None and not self.local_opa.alive():
                    log.error("local OPA died; restarting it: %s", self.local_opa.log_tail(500))
                    self.local_opa.start()
                    self._opa_restarts += 1
                    self.opa.url = self.local_opa.url
                # OPA must hold exactly Ostiary's modules: any difference (OPA restarted, a module
                # planted, deleted or replaced by someone else) is repaired, logged and counted.
                # In a cluster the policy source does this itself (and lists the API again).
                if self.kube is None and self.sync.synced:
                    try:
                        self.sync.repair()
                    except OpaError as exc:
                        log.warning("could not compare OPA's modules with Ostiary's: %s", exc)
                if self.config.kube:
                    if self._retry or _dir_signature(self.config.rego_dir) != self._signature:
                        self.load_base()
                elif self.config.policy_dir and (
                    self._retry
                    or _dir_signature(self.config.policy_dir, self.config.rego_dir) != self._signature
                ):
                    self.reload_directory()
            except Exception:  # keep watching; the next round tries again
                log.exception("watchdog round failed")

    def _reread_token(self) -> None:
        """--opa-token-file is a mounted Secret: a rotated token is used from the next request."""
        if not self.config.opa_token_file:
            return
        try:
            token = read_token(self.config.opa_token_file)
        except ValueError as exc:
            log.error("keeping the current OPA token: %s", exc)
            return
        if token != self.opa.token:
            log.info("the OPA token file changed; using the new token")
            self.opa.set_token(token)

    def ready(self) -> tuple[bool, str]:
        """(ready, why) as the last probe found it (every READY_INTERVAL, app thread
        `ostiary-readiness`): answered at once, whatever OPA or the request threads are doing. A
        probe that has not come back for READY_STALE seconds is itself the reason to be unready."""
        ok, why, at, restarts = self._readiness
        if self.local_opa is not None and not self.local_opa.alive():
            return False, "local OPA is not running (being restarted)"
        if restarts != self._opa_restarts:
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

    def probe(self) -> None:
        """Probe OPA and the policy set once and keep the answer for ready(). When OPA does not
        answer, the requests waiting on it are given up at once (fail closed), so the request
        threads are free to answer, and admissions are denied without asking it until it answers."""
        restarts = self._opa_restarts
        try:
            problem = (
                self.opa.problem()
                if self.local_opa is None or self.local_opa.alive()
                else "local OPA is not running (being restarted)"
            )
            if problem is not None:
                given_up = self.opa.abandon_waits(problem)
                if given_up:
                    log.error(
                        "OPA is not answering (%s); gave up %d requests waiting on it", problem, given_up
                    )
            self.opa_problem = problem
            ok, why = self._check_ready(problem)
        except Exception as exc:  # noqa: BLE001 - a probe must never die; its failure is the answer
            log.exception("readiness probe failed")
            ok, why = False, f"readiness probe failed: {exc.__class__.__name__}: {exc}"
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
        if not self.serving():
            return (
                False,
                f"nothing in force: {self.load_error}" if self.load_error else "policies not synced yet",
            )
        if self.kube is not None and not self.kube.ready:
            return False, "cluster policy source has not finished its first sync"
        if problem:
            return False, problem
        if self.load_error:
            return False, f"{self.load_error}; still deciding with the last good set ({self.in_force})"
        in_place = self.sync.in_place(wait=READY_INTERVAL)
        if in_place is None:
            return None, ""
        if not in_place:
            return False, "OPA does not hold exactly Ostiary's modules (repair pending)"
        notes = []
        held_back = self.sync.held_back
        if held_back:
            notes.append(f"with the last policy set that fitted OPA; the newer set is held back: {held_back}")
        refused = self.refused if self.kube is None else self.kube.policies.refused()
        if refused:
            notes.append(
                "refused, so their namespaces are denied: "
                + "; ".join(f"{what}: {why}" for what, why in refused.items())
            )
        return True, "; ".join(["ready", *notes])

    def stop(self) -> None:
        self._stop.set()
        if self.audit is not None:
            self.audit.stop()
        if self.kube is not None:
            self.kube.stop()
        if self.local_opa is not None:
            self.local_opa.stop()
        self.trust.close()
        self.signatures.close()

    close = stop  # atexit and older callers
