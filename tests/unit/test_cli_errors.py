"""What the `ostiary` command answers when something fails (app/errors.py, app/cli/__init__.py):
an input error is the input's (exit 2, the message), Ostiary's own account of a failure keeps its
message, and a bug shows as a bug (its traceback, exit 3) — never as "the input is wrong"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import app.offline.check as offline_check
import app.opa.process as process
from app.cli import main
from app.cli.options import EXIT_BUG, EXIT_INPUT
from app.errors import InputError, OpaUnavailable, OstiaryError, UnavailableError, VerificationError
from app.notary.errors import TrustError
from app.offline.check import InputRefused
from app.offline.engine import Engine, EngineError
from app.opa.client import OpaError
from app.policies.model import PolicyError
from app.runtime import ServeConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
OSTIARY = Path(sys.executable).parent / "ostiary"


def _check(policy_dir: Path) -> object:
    return CliRunner().invoke(main, ["check", "--policy-dir", str(policy_dir)])


def test_an_unexpected_error_in_a_command_is_a_bug_not_an_input_error(monkeypatch, tmp_path):
    """Before: `check` caught every RuntimeError and said "Error: <it>", exit 2, as if the policy
    directory were wrong."""

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("injected: a bug inside the check")

    monkeypatch.setattr(offline_check, "run_check", broken)
    result = _check(tmp_path)
    assert result.exit_code == EXIT_BUG, result.output
    assert "Traceback" in result.output and "injected: a bug inside the check" in result.output
    assert "an Ostiary bug" in result.output
    assert not any(line.startswith("Error:") for line in result.output.splitlines())  # the input-error line


@pytest.mark.parametrize(
    "error",
    [
        InputRefused("policies/bomb.yaml: more than 100 aliases"),  # an input error the command means
        UnavailableError("the Kubernetes API at https://10.0.0.1 did not answer"),  # one it did not catch
    ],
)
def test_ostiary_errors_exit_2_with_their_message(monkeypatch, tmp_path, error):
    def fails(*_args: object, **_kwargs: object) -> None:
        raise error

    monkeypatch.setattr(offline_check, "run_check", fails)
    result = _check(tmp_path)
    assert result.exit_code == EXIT_INPUT, result.output
    assert f"Error: {error}" in result.output
    assert "Traceback" not in result.output


def test_a_manifest_that_cannot_be_read_exits_2_with_the_file_and_line(tmp_path):
    bad = tmp_path / "web.yaml"
    bad.write_text("kind: Deployment\nmetadata: {name: web\n")
    result = CliRunner().invoke(main, ["apply", "--policy-dir", str(EXAMPLES / "policies"), str(bad)])
    assert result.exit_code == EXIT_INPUT, result.output
    assert "Error:" in result.output and "web.yaml" in result.output
    assert "Traceback" not in result.output


def test_a_bug_while_starting_the_offline_engine_is_not_an_engine_error(monkeypatch):
    """Before: the Engine turned any RuntimeError of runtime.start() into EngineError ("cannot start
    the local OPA"), which the CLI answers as an input error."""

    def broken(self: process.LocalOpa) -> process.LocalOpa:
        raise RuntimeError("injected: a bug while starting")

    monkeypatch.setattr(process.LocalOpa, "start", broken)
    with pytest.raises(RuntimeError, match="injected") as caught:
        Engine(ServeConfig(policy_dir=str(EXAMPLES / "policies"), decision_log="off"))
    assert not isinstance(caught.value, EngineError)


def test_an_opa_that_does_not_start_is_still_an_engine_error(monkeypatch):
    def fails(self: process.LocalOpa) -> process.LocalOpa:
        raise process.OpaStartFailed("opa exited at start (1): bind: address already in use")

    monkeypatch.setattr(process.LocalOpa, "start", fails)
    with pytest.raises(EngineError, match="cannot start the local OPA: opa exited at start"):
        Engine(ServeConfig(policy_dir=str(EXAMPLES / "policies"), decision_log="off"))


def test_the_tree():
    """The families join the root by their base class; the ValueErrors stay ValueErrors."""
    assert issubclass(InputError, ValueError) and issubclass(PolicyError, InputError)
    assert issubclass(EngineError, InputError) and issubclass(InputRefused, InputError)
    assert issubclass(TrustError, VerificationError)
    assert issubclass(OpaError, OpaUnavailable) and issubclass(process.OpaNotFound, OpaUnavailable)
    assert issubclass(process.OpaStartFailed, OpaUnavailable) and not issubclass(OpaError, RuntimeError)
    assert issubclass(OpaUnavailable, UnavailableError) and issubclass(UnavailableError, OstiaryError)


MALFORMED_KUBECONFIGS = {
    "a number for the clusters": "apiVersion: v1\nclusters: 5\n",  # the loader trips: TypeError
    "broken YAML": "garbage: [",
    "empty": "",
}


@pytest.mark.parametrize("content", MALFORMED_KUBECONFIGS.values(), ids=MALFORMED_KUBECONFIGS.keys())
@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--kube", "--listen", "127.0.0.1:0"],
        ["audit"],
        ["trust", "pins", "--kube"],
    ],
    ids=["serve", "audit", "trust-pins"],
)
def test_a_malformed_kubeconfig_is_the_operators_input_not_a_bug(tmp_path, argv, content):
    """Before: `serve --kube` crashed its gunicorn worker with a TypeError traceback ("Worker failed
    to boot", exit 3), and `audit` and `trust pins` caught every exception as "cannot build"."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(content)
    # The real command in its own process: a serve that started gunicorn would not come back.
    done = subprocess.run(
        [str(OSTIARY), *argv, "--kubeconfig", str(kubeconfig)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == EXIT_INPUT, output
    assert f"cannot use the kubeconfig {kubeconfig}" in output
    assert "Traceback" not in output and "an Ostiary bug" not in output


def test_a_bug_while_building_the_audit_runtime_is_a_bug(monkeypatch, tmp_path):
    """Before: audit_once caught Exception and said "cannot build the audit runtime", exit 2."""
    import app.audit.once as once

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("injected: a bug in the runtime")

    monkeypatch.setattr(once, "Runtime", broken)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("")
    result = CliRunner().invoke(main, ["audit", "--kubeconfig", str(kubeconfig)])
    assert result.exit_code == EXIT_BUG, result.output
    assert "injected: a bug in the runtime" in result.output and "cannot build" not in result.output
