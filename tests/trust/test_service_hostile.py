"""Issue 14 and issue 8 point 3 through TrustService against the TLS test server: a hostile repository
is refused with the real reason and does not hold up other repositories; one request's small deadline
never becomes a remembered failure that denies others.

Timing bounds are the property ("not frozen", "not waited for") and generous.
"""

from __future__ import annotations

import base64
import threading
import time

from app.images import parse_image
from app.notary.keys import MAX_PEM_CHARS
from app.notary.metadata import MAX_KEYIDS_PER_ROLE
from app.notary.service import TrustRequest, TrustService
from app.notary.settings import TrustSettings
from tests.trust.forge import GUN, NOW, ForgedKey, ForgedRepo, ecdsa_key
from tests.trust.https_server import NotaryTestServer, SilentServer, wait_until

EVIL_GUN = "docker.io/evil/app"
NORMAL = 5.0  # seconds an admission of a healthy repository may take here, under load


def _serve_forged(server: NotaryTestServer, gun: str, repo: ForgedRepo) -> None:
    for role, data in repo.build().items():
        server.knobs.overrides[(gun, role)] = data


def _hostile_root_keys() -> list[ForgedKey]:
    pem = ("-----BEGIN CERTIFICATE-----\n" * ((MAX_PEM_CHARS - 100) // 28)).encode()
    hostile = []
    for index in range(MAX_KEYIDS_PER_ROLE):
        public = base64.b64encode(pem + f"{index}\n".encode()).decode()
        hostile.append(ForgedKey("ecdsa-x509", ecdsa_key().private, public))
    return hostile


def test_hostile_root_does_not_slow_other_repositories(notary_server: NotaryTestServer, pki) -> None:
    evil = ForgedRepo(gun=EVIL_GUN)
    evil.role_keys["root"] = _hostile_root_keys()
    _serve_forged(notary_server, EVIL_GUN, evil)
    _serve_forged(notary_server, GUN, ForgedRepo())
    service = TrustService(ca_file=pki.ca_file, clock=lambda: NOW)
    hostile: list[dict] = []

    def attack() -> None:
        hostile.extend(
            service.gather(
                [TrustRequest(parse_image(f"{EVIL_GUN}:latest"), notary_server.url)], time.monotonic() + 30
            )
        )

    attacker = threading.Thread(target=attack)
    attacker.start()
    durations = []
    for _ in range(3):
        started = time.monotonic()
        [good] = service.gather(
            [TrustRequest(parse_image(f"{GUN}:latest"), notary_server.url)], time.monotonic() + 30
        )
        durations.append(time.monotonic() - started)
        assert good["verified"] is True, good["error"]
    attacker.join(30)
    assert not attacker.is_alive()
    assert max(durations) < NORMAL, durations
    [facts] = hostile
    assert facts["verified"] is False
    assert facts["error_role"] == "root" and "cannot be read" in facts["error"]


def test_timeout_of_a_small_budget_is_not_remembered_against_others(silent_server: SilentServer, pki) -> None:
    service = TrustService(TrustSettings(server_patience=0.8), ca_file=pki.ca_file, clock=lambda: NOW)
    request = TrustRequest(parse_image(f"{GUN}:latest"), silent_server.url)
    [short] = service.gather([request], time.monotonic() + 0.3)
    assert short["verified"] is False and "did not answer within 0.3s" in short["error"]
    time.sleep(0.5)  # the abandoned walk ends at its own deadline
    # the next caller with a real budget asks the server itself, rather than inheriting the failure
    [patient] = service.gather([request], time.monotonic() + 1.0)
    assert "not retried" not in patient["error"] and "did not answer within 1.0s" in patient["error"]
    # that one gave the server its patience: once its walk ends, the failure is remembered briefly
    assert wait_until(lambda: len(service._failures) == 1, timeout=20)
    started = time.monotonic()
    [third] = service.gather([request], time.monotonic() + 10.0)
    assert time.monotonic() - started < 5.0  # at once, not after waiting out its 10 s deadline
    assert "not retried until then" in third["error"]


def test_no_new_pool_per_admission(notary_server: NotaryTestServer, pki) -> None:
    _serve_forged(notary_server, GUN, ForgedRepo())
    service = TrustService(TrustSettings(cache_ttl=0), ca_file=pki.ca_file, clock=lambda: NOW)
    request = TrustRequest(parse_image(f"{GUN}:latest"), notary_server.url)
    service.gather([request], time.monotonic() + 10)
    before = threading.active_count()
    for _ in range(5):
        [facts] = service.gather([request], time.monotonic() + 10)
        assert facts["verified"] is True
    assert threading.active_count() <= before + 1
