"""Everything ``ostiary serve --kube`` needs from the cluster, started and stopped as one piece.

``KubeRuntime`` wires one API connection into the three readers: the policy source (list + watch
of the policy resources, pushed to OPA), the object store (signer and pull secrets, service
accounts) and the owner verifier (workload controllers and their pod templates).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from app.kube.client import KubeApi, RestKubeApi
from app.kube.events import EventReporter
from app.kube.owners import OwnerVerifier
from app.kube.source import KubePolicySource
from app.kube.store import KubeObjectStore
from app.kube.timings import KubeTimings
from app.policies.bounds import DEFAULT_BOUNDS, Bounds
from app.policies.kinds import PolicyKind
from app.policies.model import PolicyResource, RegoModule
from app.policies.schema import parse_policy_document
from app.policies.sync import PolicySync

log = logging.getLogger(__name__)


class SilentReporter(EventReporter):
    """Reports nothing: for a process that only reads the cluster (``ostiary audit``)."""

    def __init__(self) -> None:
        pass

    def event(
        self, kind: PolicyKind, obj: dict, reason: str, message: str, event_type: str = "Warning"
    ) -> None:
        return None

    def status(self, kind: PolicyKind, obj: dict, ok: bool, reason: str, message: str) -> None:
        return None


class KubeRuntime:
    def __init__(
        self,
        *,
        kubeconfig: str | None,
        system_namespace: str,
        sync: PolicySync,
        translate: Callable[[PolicyResource], RegoModule],
        bounds: Bounds = DEFAULT_BOUNDS,
        on_change: Callable[[], None] | None = None,
        api: KubeApi | None = None,
        read_only: bool = False,
        timings: KubeTimings | None = None,
    ):
        self.system_namespace = system_namespace
        self.api: KubeApi = api if api is not None else RestKubeApi.from_kubeconfig(kubeconfig)
        timings = timings if timings is not None else KubeTimings()
        # Reads made while an admission waits get a short timeout: the admission's budget is ~8 s.
        request_api = (
            self.api.with_timeout(timings.read_timeout) if isinstance(self.api, RestKubeApi) else self.api
        )
        self.request_api = request_api  # also the trust records' (app/kube/records.py)
        self.store = KubeObjectStore(request_api, ttl=timings.secret_ttl)
        self.owners = OwnerVerifier(request_api, ttl=timings.owner_ttl)
        self.policies = KubePolicySource(
            self.api,
            sync=sync,
            translate=translate,
            parse=parse_policy_document,
            bounds=bounds,
            on_change=on_change,
            opa_repair=sync.repair,
            timings=timings,
            # read_only (`ostiary audit`): the policies' status and Events stay the serving replicas'
            reporter=SilentReporter() if read_only else None,
        )

    @property
    def ready(self) -> bool:
        """True once the first full policy sync has reached OPA."""
        return self.policies.ready

    def wait_ready(self, timeout: float) -> bool:
        return self.policies.wait_ready(timeout)

    def start(self) -> None:
        self.policies.start()

    def stop(self) -> None:
        self.policies.stop()
