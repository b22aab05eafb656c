"""What the `ostiary` command answers when something fails (app/errors.py, app/cli/__init__.py):
an input error is the input's (exit 2, the message), Ostiary's own account of a failure keeps its
message, and a bug shows as a bug (its traceback, exit 3) — never as "the input is wrong"."""

from __future__ import annotations

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
