"""Measure what a hostile trust server's huge repositories cost the trust service (docs/security.md).

One HTTPS Notary server (the trust tests' server, tests/trust/https_server.py) serves --repos
repositories, each within every count limit: --targets targets in targets.json and in each of
--roles delegations. --admissions admissions (threads) each ask for one of them at once, under the
service's default budgets (app/notary/budget.py), while one normal repository of the same server
is asked for every second. Prints the process's peak RSS, what the cache and the walks held, each
huge repository's outcome, and the normal repository's answer times.

    .venv/bin/python scripts/attack_trust_memory.py --repos 8 --targets 20000 --roles 3
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives import serialization  # noqa: E402

from app.images import parse_image  # noqa: E402
from app.notary.service import TrustRequest, TrustService  # noqa: E402
from scripts import harness  # noqa: E402
from tests.support.pki import CA, private_key_pem, write  # noqa: E402
from tests.trust.forge import GUN, NOW, ForgedRepo, ecdsa_key  # noqa: E402
from tests.trust.https_server import NotaryTestServer, ServerKnobs  # noqa: E402


def rss_mib() -> float:
    return harness.rss_mib(os.getpid())


def huge(gun: str, targets: int, roles: int) -> ForgedRepo:
    repo = ForgedRepo(gun=gun, targets={f"release-{i:06d}-{'x' * 24}": f"{i:064x}" for i in range(targets)})
    for r in range(roles):
        role = repo.add_delegation(f"targets/r{r}", [ecdsa_key()])
        role.targets = {f"build-{i:06d}-{'y' * 24}": f"{i:064x}" for i in range(targets)}
    return repo


def hostile_server(repos: int, targets: int, roles: int) -> tuple[NotaryTestServer, Path]:
    """The HTTPS Notary test server holding `repos` huge repositories and one normal one (GUN), and
    its CA file."""
    directory = Path(tempfile.mkdtemp(prefix="ostiary-attack-"))
    ca = CA.create("attack CA")
    key, cert = ca.issue_server()
    ca_file = write(directory / "ca.crt", ca.cert.public_bytes(serialization.Encoding.PEM), 0o644)
    cert_file = write(directory / "server.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    key_file = write(directory / "server.key", private_key_pem(key))
    server = NotaryTestServer(str(cert_file), str(key_file), ServerKnobs()).start()
    guns = [f"docker.io/attacker/huge{i}" for i in range(repos)]
    sizes = []
    for gun in [*guns, GUN]:
        files = (huge(gun, targets, roles) if gun != GUN else ForgedRepo()).build()
        for role, data in files.items():
            server.knobs.overrides[(gun, role)] = data
        sizes.append(sum(len(d) for d in files.values()))
    print(
        f"{repos} repositories of {sizes[0] / 2**20:.1f} MiB trust data each; RSS before: {rss_mib():.0f} MiB"
    )
    return server, ca_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repos", type=int, default=8)
    parser.add_argument("--targets", type=int, default=20000)
    parser.add_argument("--roles", type=int, default=3)
    parser.add_argument("--admissions", type=int, default=8)
    args = parser.parse_args()

    server, ca_file = hostile_server(args.repos, args.targets, args.roles)
    guns = [f"docker.io/attacker/huge{i}" for i in range(args.repos)]

    service = TrustService(ca_file=str(ca_file), clock=lambda: NOW)
    peak = {"rss": rss_mib(), "cache": 0, "flight": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            stats = service.stats()
            peak["rss"] = max(peak["rss"], rss_mib())
            peak["cache"] = max(peak["cache"], stats["cached_bytes"])
            peak["flight"] = max(peak["flight"], stats["in_flight_bytes"])
            time.sleep(0.05)

    outcomes: dict[str, str] = {}

    def admit(index: int) -> None:
        gun = guns[index % len(guns)]
        [facts] = service.gather(
            [TrustRequest(parse_image(f"{gun}:latest"), server.url)], time.monotonic() + 60
        )
        outcomes[f"{gun} (admission {index})"] = "verified" if facts["verified"] else facts["error"]

    normal: list[float] = []

    def normal_admissions() -> None:
        while not done.is_set():
            started = time.monotonic()
            [facts] = service.gather(
                [TrustRequest(parse_image(f"{GUN}:latest"), server.url)], time.monotonic() + 6
            )
            normal.append(time.monotonic() - started if facts["verified"] else float("inf"))
            service.cache.discard((server.url, GUN))  # a fresh walk each time, not a cache hit
            time.sleep(1.0)

    threads = [threading.Thread(target=sample), threading.Thread(target=normal_admissions)]
    threads += [threading.Thread(target=admit, args=(i,)) for i in range(args.admissions)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads[2:]:
        thread.join()
    done.set()
    for thread in threads[:2]:
        thread.join()
    print(f"attack took {time.monotonic() - started:.1f}s")
    for name, outcome in sorted(outcomes.items()):
        print(f"  {name}: {outcome[:160]}")
    print(
        f"peak RSS {peak['rss']:.0f} MiB (ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB); "
        f"cache held at most {peak['cache'] / 2**20:.1f} MiB, walks in flight at most {peak['flight'] / 2**20:.1f} MiB (weighted)"
    )
    shown = ", ".join("denied" if t == float("inf") else f"{t * 1000:.0f} ms" for t in normal)
    print(f"normal repository during the attack: {shown}")
    server.stop()


if __name__ == "__main__":
    main()
