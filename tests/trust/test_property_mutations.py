"""Property: random mutations of valid metadata never raise anything but the verifier's own errors, and
the work stays linear in the input (a mutation that repeats a field many times costs no more per byte
than the valid document does). Bounds are generous: the failure being caught is a blow-up, not slowness.
"""

from __future__ import annotations

import json
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.notary.errors import TrustError
from tests.trust.forge import DIGEST_B, ForgedRepo, load

_REPO = ForgedRepo()
_REPO.add_delegation("targets/releases", targets={"latest": DIGEST_B})
VALID = _REPO.build()
ROLES = sorted(VALID)


def _mutate_json(document: Any, path: list[int], value: Any) -> Any:
    """Replace one node chosen by `path` (indexes into the keys/items met on the way) with `value`."""
    if not path or not isinstance(document, (dict, list)) or not document:
        return value
    if isinstance(document, dict):
        key = sorted(document)[path[0] % len(document)]
        return {**document, key: _mutate_json(document[key], path[1:], value)}
    index = path[0] % len(document)
    return [*document[:index], _mutate_json(document[index], path[1:], value), *document[index + 1 :]]


_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.text(max_size=40)
    | st.sampled_from(["-----BEGIN CERTIFICATE-----\n" * 2000, "A" * 5000, "", "targets/releases/x"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _attempt(files: dict[str, bytes]) -> float:
    started = time.monotonic()
    try:
        load(files)
    except TrustError:
        pass
    return time.monotonic() - started


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(role=st.sampled_from(ROLES), path=st.lists(st.integers(0, 50), max_size=6), value=_VALUES)
def test_structured_mutation_raises_only_trust_errors(role: str, path: list[int], value: Any) -> None:
    document = json.loads(VALID[role])
    files = dict(VALID)
    files[role] = json.dumps(_mutate_json(document, path, value)).encode()
    assert _attempt(files) < 5.0


@settings(max_examples=150, deadline=None)
@given(
    role=st.sampled_from(ROLES),
    position=st.integers(0, 10**6),
    junk=st.binary(max_size=64),
    repeat=st.integers(1, 2000),
)
def test_byte_mutation_raises_only_trust_errors_in_linear_time(
    role: str, position: int, junk: bytes, repeat: int
) -> None:
    data = VALID[role]
    at = position % (len(data) + 1)
    files = dict(VALID)
    files[role] = data[:at] + junk * repeat + data[at:]
    assert _attempt(files) < 5.0
