"""A directory reload swaps the Reviewer a request decides with; it never changes one in use
(app/runtime.py Holder, app/supervise.py reload_directory). A request takes the runtime's Reviewer
once (app/server.py admit), so every read of Secrets and service accounts in one review comes from
one load of the files: the old one or the new one, never both. Real OPA, real files."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from app.runtime import Runtime, ServeConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SECRET = """apiVersion: v1
kind: Secret
metadata:
  name: pull
  namespace: team-a
type: Opaque
stringData:
  generation: "{generation}"
"""


@pytest.fixture
def runtime(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(EXAMPLES / "policies", policies)
    (policies / "pull.yaml").write_text(SECRET.format(generation=1))
    rt = Runtime(ServeConfig(policy_dir=str(policies), decision_log="off")).start(watch=False)
    try:
        assert rt.load_error is None, rt.load_error
        yield rt, policies
    finally:
        rt.stop()


def _generation(store: object) -> str:
    secret = store.get_secret("team-a", "pull")  # type: ignore[attr-defined]
    return secret["stringData"]["generation"] if "stringData" in secret else secret["data"]["generation"]


def _reload(rt: Runtime, policies: Path, generation: int) -> None:
    (policies / "pull.yaml").write_text(SECRET.format(generation=generation))
    rt.reload_directory()
    assert rt.load_error is None, rt.load_error


def test_a_reload_leaves_the_reviewer_in_use_as_it_was(runtime):
    """Before: the reload assigned the new store into the live Reviewer, so a review under way
    read the old Secrets before the reload and the new ones after it."""
    rt, policies = runtime
    in_use = rt.reviewer
    store_in_use = in_use.store
    _reload(rt, policies, 2)
    assert in_use.store is store_in_use and _generation(in_use.store) == "1"
    fresh = rt.reviewer
    assert fresh is not in_use and fresh.store is rt.store and _generation(fresh.store) == "2"
    # the same OPA client (wrapped once by the runtime's decision log), services and plan cache
    assert fresh.opa is in_use.opa and fresh.opa is not rt.opa
    assert (fresh.trust, fresh.signatures, fresh.plans) == (in_use.trust, in_use.signatures, in_use.plans)


def test_reviews_during_reloads_each_read_one_generation(runtime):
    """Readers take the Reviewer once and read the store again and again while reloads run: every
    read of one reader's Reviewer gives the generation its first read gave."""
    rt, policies = runtime
    stop = threading.Event()
    mixed: list[tuple[str, str]] = []
    reads = [0]

    def reader() -> None:
        while not stop.is_set():
            reviewer = rt.reviewer
            first = _generation(reviewer.store)
            for _ in range(20):
                again = _generation(reviewer.store)
                reads[0] += 1
                if again != first:
                    mixed.append((first, again))

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for generation in range(2, 8):
            _reload(rt, policies, generation)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    assert reads[0] > 0
    assert not mixed, mixed[:5]
    assert _generation(rt.reviewer.store) == "7"
