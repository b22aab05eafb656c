"""KubeTimings: how often and how long the cluster source asks the API server, in one frozen value.

Why this module exists: the cluster pieces (app/kube/runtime.py wiring app/kube/source.py, store.py
and owners.py) used to take each interval and TTL as a constructor argument of their own. They are
one value now, passed from the runtime down, and each default lives here only.

    KubeRuntime(kubeconfig=None, system_namespace="ostiary-system", sync=sync, translate=translate,
                timings=KubeTimings(opa_check_interval=1.0))
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from app.errors import ConfigError


@dataclass(frozen=True)
class KubeTimings:
    """Seconds, all of them."""

    # Reads an admission waits for (secrets, service accounts, owners) time out after this: the
    # admission's whole budget is ~8 s.
    read_timeout: float = 3.0
    secret_ttl: float = 10.0  # a secret or service account read is reused this long
    owner_ttl: float = 2.0  # a workload owner read is reused this long
    watch_timeout: int = 300  # one watch request of the policy resources, before it is renewed
    opa_check_interval: float = 5.0  # OPA is checked for lost or changed policy documents this often
    discovery_interval: float = 10.0  # the API server is asked this often whether the policy CRDs appeared
    retry_interval: float = 2.0  # a failed list or watch is retried after this, times the failures (<= 30 s)

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ConfigError(
                    f"cluster timing {field.name} must be a number of seconds >= 0, not {value!r}"
                )
            if field.type == "int" and not isinstance(value, int):
                raise ConfigError(
                    f"cluster timing {field.name} must be a whole number of seconds, not {value!r}"
                )
        for name in ("read_timeout", "watch_timeout", "opa_check_interval", "discovery_interval"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"cluster timing {name} must be more than 0 seconds")
