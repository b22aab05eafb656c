"""Processes a test starts die with the test run: PR_SET_PDEATHSIG, set between fork and exec.

Use `preexec_fn=die_with_parent()` on every Popen of a long-lived server (ostiary serve, notary,
registries, the control plane), so a pytest killed mid-run leaves nothing behind. The signal fires
when the *thread* that forked dies, so it is only set from the main thread (which is also the only
thread where preexec_fn is safe); elsewhere atexit and the fixtures' stop() still apply.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


def _load_prctl():
    """libc's prctl, resolved here in the parent: the child must not import or dlopen anything."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (ImportError, OSError, AttributeError):  # not Linux/glibc
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _pdeathsig() -> None:  # runs in the child between fork and exec
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)


def die_with_parent() -> Callable[[], None] | None:
    """The preexec_fn for Popen: SIGKILL when this process (its forking thread) dies."""
    if _PRCTL is None or threading.current_thread() is not threading.main_thread():
        return None
    return _pdeathsig
