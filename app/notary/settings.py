"""TrustSettings: the tunables of one TrustService, in one frozen value.

Why this module exists: TrustService (service.py) used to take every bound, TTL and pool size as its
own constructor argument, beside the things it works with (the fetcher, the records, the clocks).
The tunables are now one value, built once by the runtime (app/runtime.py) from the operator's
options and app/defaults.py, and the service reads them from there; what it works with is passed
beside it. A default here is the only one: nothing else repeats it.

    settings = TrustSettings(cache_ttl=30.0, hide_connection_errors=True)
    service = TrustService(settings, ca_file="/etc/ostiary/notary-ca.pem", records=store)
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from app import defaults
from app.errors import ConfigError
from app.notary import budget

# How long after its last fetch or refresh a cached repository may still answer for images a live
# owner's template proved (TrustRequest.owner_proved), past the TTL: a ReplicaSet scaling up within
# it does not wait for Notary, and a revocation reaches such children at the latest after it.
OWNER_MAX_AGE = 900.0


@dataclass(frozen=True)
class TrustSettings:
    """Every tunable of a TrustService. Seconds are floats, sizes are bytes."""

    # Verified repositories reused for this long (serve --trust-cache-ttl); 0 refetches every time.
    cache_ttl: float = defaults.TRUST_CACHE_TTL
    cache_entries: int = 512  # verified repositories kept in memory; 0 keeps none
    cache_bytes: int = budget.CACHE_BYTES  # their kept bytes, all servers together
    cache_bytes_per_server: int = budget.CACHE_BYTES_PER_SERVER  # ... of one trust server
    # A network failure of a server is remembered (and answered at once) for this long.
    failure_ttl: float = 5.0
    # A timeout counts as the server's failure only when the request gave the server this long.
    server_patience: float = 2.0
    max_workers: int = 32  # threads walking repositories (a second pool of as many fetches delegations)
    max_response_bytes: int = 8 << 20  # one HTTP response from a trust server
    max_repository_bytes: int = budget.MAX_REPOSITORY_BYTES  # all trust data of one repository
    in_flight_bytes: int = budget.IN_FLIGHT_BYTES  # weighted bytes held by the walks in progress
    in_flight_bytes_per_server: int = budget.IN_FLIGHT_BYTES_PER_SERVER  # ... by those of one server
    max_records: int = (
        defaults.MAX_TRUST_RECORDS
    )  # trust-on-first-use records kept (serve --max-trust-records)
    owner_max_age: float = OWNER_MAX_AGE
    # The runtime (serve, and apply/explain/test, which word as serve does): a connection failure reads
    # "could not be reached" in the facts (service.shown_error); `ostiary trust inspect` keeps the details.
    hide_connection_errors: bool = False

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "bool":
                if not isinstance(value, bool):
                    raise ConfigError(f"trust setting {field.name} must be true or false, not {value!r}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ConfigError(f"trust setting {field.name} must be a number, not {value!r}")
            if field.type == "int" and not isinstance(value, int):
                raise ConfigError(f"trust setting {field.name} must be a whole number, not {value!r}")
            if value < 0:
                raise ConfigError(f"trust setting {field.name} must not be negative, not {value!r}")
        if self.max_workers < 1:
            raise ConfigError(f"trust setting max_workers must be at least 1, not {self.max_workers}")
