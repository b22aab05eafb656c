"""The composition root: builds the runtime of ``ostiary serve`` for each mode, and starts and
stops it explicitly.

- **Directory mode** (``--policy-dir``): policies, secrets and service accounts from files
  (app.policies.directory), reloaded when they change.
- **Cluster mode** (``--kube``): the policy source, object store, owner verifier and trust records
  from the Kubernetes API (app.kube.runtime.KubeRuntime).
- Both: OPA (the one Ostiary starts with token authentication, or ``--opa-url``), the policy sync
  that keeps OPA exact (app.policies.sync), the trust and signature services, metrics, the
  decision log wrapped around the reviewer's OPA client, and the Reviewer in a Holder.

Everything is built here; app/server.py only binds a started runtime to its routes, and the
supervision (loading and reloading, the watchdog, readiness) is app/supervise.py. Constructing a
Runtime opens the decision log and nothing else; ``start()`` starts OPA, loads the policies,
starts the cluster source and the supervisor's threads; ``stop()`` undoes it. The parts meet only
through the Protocols in app/ports.py. The offline commands (apply, explain, test, check:
app/offline/engine.py) run this same runtime in directory mode, with `OfflineSources` in place of
the network and the state directory, so their verdicts are the webhook's.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from app import defaults
from app.admission.plans import PlanCache
from app.admission.review import Reviewer
from app.audit.config import AuditConfig
from app.audit.loop import AuditLoop
from app.audit.scan import paged
from app.decisionlog import DecisionLog
from app.kube.records import KubeRecordStore
from app.kube.runtime import KubeRuntime
from app.metrics import Metrics
from app.notary import clock as clocks
from app.notary.client import NotaryClient
from app.notary.pins import load_default_root_pins
from app.notary.requests import RoleFetcher
from app.notary.servers import TrustServerAllowList
from app.notary.service import TrustService
from app.notary.settings import TrustSettings
from app.notary.state import FileRecordStore, MemoryRecordStore, RecordStore, TrustRecord
from app.opa.client import OpaClient
from app.opa.process import LocalOpa
from app.policies.bounds import DEFAULT_BOUNDS, Bounds, bounded
from app.policies.directory import DirectoryStore
from app.policies.model import DEFAULT_SYSTEM_NAMESPACE, PolicySet
from app.policies.pushguard import PushGuard
from app.policies.sync import PolicySync
from app.policies.translate import translate
from app.ports import ObjectStore
from app.signatures.cache import SignatureCache
from app.signatures.cosign import CosignVerifier
from app.signatures.keyless import load_trusted_root
from app.signatures.notation import NotationVerifier
from app.signatures.registry import RegistryReader, SignatureReads
from app.signatures.service import SignatureService
from app.signatures.simple import SimpleVerifier
from app.supervise import Supervisor, read_token

T = TypeVar("T")
log = logging.getLogger("ostiary")


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

    notary_client: RoleFetcher | None = (
        None  # app.offline.replay.ReplayClient (captured trust data); None: live
    )
    signature_reader: SignatureReads | None = (
        None  # app.signatures.replay.ReplayReader (captured signatures); None: live
    )
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


class Holder(Generic[T]):
    """One reference that readers take once per use, and a writer replaces in one assignment.

    A reload builds its new value apart and swaps it in; a reader that took the old value keeps
    deciding with it to its end. Nothing is assigned into a value readers may be using."""

    def __init__(self, value: T):
        self._value = value

    def get(self) -> T:
        return self._value

    def swap(self, value: T) -> T:
        """Put `value` in place (one reference assignment) and return the one it replaces."""
        old, self._value = self._value, value
        return old


class Runtime:
    """Owns OPA (local or remote), the policy sync, the object store, the trust service, the
    decision log and the reviewer; its Supervisor (app/supervise.py) loads, watches and probes.
    Build it, ``start()`` it, ``stop()`` it."""

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
        self.kube: KubeRuntime | None = None
        self.sync = PolicySync(
            self.opa, on_drift=self.metrics.record_drift, guard=guard, on_hold=self._on_hold
        )
        # Every policy goes through the bounds (app/policies/bounds.py): the webhook, the cluster
        # source and the directory loader translate with this.
        self.translate = bounded(translate, config.bounds)
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
        # The decision log (app/decisionlog.py) sees every query the reviewer makes: its recorder
        # wraps the OPA client here, once, for /admit and the offline commands alike.
        self.decisions = DecisionLog.open(config.decision_log)
        # What a request decides with: taken once per request (Runtime.reviewer); a directory
        # reload swaps in a new Reviewer (swap_store), it never assigns into this one.
        self.reviewers: Holder[Reviewer] = Holder(
            Reviewer(
                self.decisions.wrap(self.opa),
                self.store,
                trust=self.trust,
                owners=self.kube.owners if self.kube is not None else None,
                system_namespace=config.system_namespace,
                budget=config.budget,
                plans=PlanCache(lambda: self.sync.generation),
                signatures=self.signatures,
                default_root_pins=self.trust.default_pins,
            )
        )
        self.audit: AuditLoop | None = None
        if self.kube is not None and config.audit is not None:
            # Cluster mode: the store reads the API itself and is never swapped, so the audit may
            # keep this Reviewer.
            self.audit = AuditLoop(
                paged(self.kube.api),
                self.reviewer,
                system_namespace=config.system_namespace,
                config=config.audit,
                metrics=self.metrics.audit,
                generation=lambda: self.sync.generation,
                ready=lambda: self.kube is not None and self.kube.ready and self.serving(),
            )
        self.supervisor = Supervisor(self)

    @property
    def reviewer(self) -> Reviewer:
        """The Reviewer in force now; take it once per request and decide with that one."""
        return self.reviewers.get()

    def swap_store(self, store: ObjectStore) -> None:
        """Decide with `store` from the next request on: a new Reviewer (a copy of the current one
        with the store replaced, built before anyone sees it) swapped into the holder."""
        fresh = copy.copy(self.reviewers.get())
        fresh.store = store
        self.store = store
        self.reviewers.swap(fresh)

    def _on_hold(self, reason: str | None) -> None:
        """A policy set held back (reason) or released (None): metrics, and Events in cluster mode."""
        self.metrics.opa_push_held_back.set(0 if reason is None else 1)
        if reason is not None and self.kube is not None:
            self.kube.policies.report_held_back(reason, self.sync.not_held())

    def start(self, watch: bool = True) -> Runtime:
        """Start OPA (unless external), load the policies (or start the cluster source), start the
        watchdog and readiness probe (unless `watch` is False: an offline run). A policy set that
        does not load leaves the runtime unready, never crashed."""
        if self.local_opa is not None:
            self.local_opa.start()
            self.opa.url = self.local_opa.url
            self.opa.set_token(self.local_opa.token)
        self.supervisor.load()
        if self.kube is not None:
            self.kube.start()
        if watch:
            if self.audit is not None:
                self.audit.start()
            self.supervisor.start()
        return self

    # What the supervisor knows, for /readyz, /admit and the offline commands.
    def serving(self) -> bool:
        """True once a complete set (library, custom Rego, policies) has been in force."""
        return self.supervisor.serving()

    def ready(self) -> tuple[bool, str]:
        return self.supervisor.ready()

    def probe(self) -> None:
        self.supervisor.probe()

    def reload_directory(self) -> None:
        self.supervisor.reload_directory()

    @property
    def load_error(self) -> str | None:
        return self.supervisor.load_error

    @property
    def refused(self) -> dict[str, str]:
        return self.supervisor.refused

    @property
    def opa_problem(self) -> str | None:
        return self.supervisor.opa_problem

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
            TrustSettings(
                cache_ttl=self.config.trust_cache_ttl,
                max_records=self.config.max_trust_records,
                hide_connection_errors=True,
            ),
            ca_file=self.config.ca_file,
            records=records,
            default_pins=default_pins,
            allow=TrustServerAllowList(self.config.trust_server_allow, self.sync.cluster_trust_servers),
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
                NotaryClient(ca_file=self.config.ca_file),
                endpoints=self.config.registry_endpoints,
                # serve and the offline commands alike (registry.shown_error): their verdicts and
                # messages are the webhook's; `ostiary trust inspect` shows the details
                hide_connection_errors=True,
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
                NotationVerifier(reader, cache=cache, **clock),
            ],
            hide_connection_errors=True,
        )

    def stop(self) -> None:
        self.supervisor.stop()
        if self.audit is not None:
            self.audit.stop()
        if self.kube is not None:
            self.kube.stop()
        if self.local_opa is not None:
            self.local_opa.stop()
        self.trust.close()
        self.signatures.close()

    close = stop  # atexit and older callers
