"""Every serving default has one home (app/defaults.py): the CLI, ServeConfig, the Reviewer, the
gunicorn configuration and the worker's settings all read it, so none can drift from another."""

from __future__ import annotations

import inspect

import pytest

from app import defaults, gunicorn_conf, serving
from app.admission.review import Reviewer
from app.cli.serve import serve
from app.errors import ConfigError
from app.kube.timings import KubeTimings
from app.notary.service import TrustService
from app.notary.settings import TrustSettings
from app.runtime import Runtime, ServeConfig


def option_default(name: str):
    return next(p.default for p in serve.params if p.name == name)


def test_serve_options_take_their_defaults_from_the_one_home():
    assert option_default("listen") == defaults.LISTEN
    assert option_default("budget") == defaults.BUDGET_SECONDS
    assert option_default("trust_cache_ttl") == defaults.TRUST_CACHE_TTL
    assert option_default("threads") == defaults.THREADS
    assert option_default("max_trust_records") == defaults.MAX_TRUST_RECORDS


def test_library_defaults_are_the_same():
    config = ServeConfig()
    assert (config.budget, config.trust_cache_ttl, config.max_trust_records) == (
        defaults.BUDGET_SECONDS,
        defaults.TRUST_CACHE_TTL,
        defaults.MAX_TRUST_RECORDS,
    )
    assert inspect.signature(Reviewer).parameters["budget"].default == defaults.BUDGET_SECONDS
    assert not hasattr(config, "extra")


def test_gunicorn_configuration_and_worker_settings_agree():
    assert gunicorn_conf.threads == defaults.THREADS
    assert gunicorn_conf.worker_connections == defaults.WORKER_CONNECTIONS
    pairs = {
        "tls_handshake_timeout": defaults.TLS_HANDSHAKE_TIMEOUT,
        "header_timeout": defaults.HEADER_TIMEOUT,
        "body_timeout": defaults.BODY_TIMEOUT,
        "send_timeout": defaults.SEND_TIMEOUT,
        "max_buffered_bytes": defaults.MAX_BUFFERED_BYTES,
        "peer_share": defaults.PEER_SHARE,
    }
    settings = {
        cls.name: cls.default
        for cls in vars(serving).values()
        if inspect.isclass(cls) and isinstance(getattr(cls, "name", None), str) and hasattr(cls, "default")
    }
    for name, value in pairs.items():
        assert getattr(gunicorn_conf, name) == value, name
        assert settings[name] == value, name
    assert settings["max_body"] == defaults.MAX_BODY


def test_trust_settings_take_their_defaults_from_the_one_home():
    settings = TrustSettings()
    assert (settings.cache_ttl, settings.max_records) == (
        defaults.TRUST_CACHE_TTL,
        defaults.MAX_TRUST_RECORDS,
    )
    # The service has no tunable of its own: every one is a field of TrustSettings.
    assert set(inspect.signature(TrustService).parameters) == {
        "settings",
        "client",
        "ca_file",
        "records",
        "default_pins",
        "allow",
        "clock",
        "monotonic",
        "deadline_clock",
    }


def test_serve_builds_its_trust_settings_from_its_options():
    config = ServeConfig(trust_cache_ttl=7.0, max_trust_records=3)
    service = Runtime(config).trust
    try:
        assert service.settings == TrustSettings(cache_ttl=7.0, max_records=3, hide_connection_errors=True)
        assert service.cache.ttl == 7.0
    finally:
        service.close()


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("cache_ttl", -1.0, "must not be negative"),
        ("max_workers", 0, "at least 1"),
        ("cache_entries", 1.5, "whole number"),
        ("failure_ttl", float("nan"), "must be a number"),
        ("max_records", True, "must be a number"),
        ("server_patience", "2", "must be a number"),
        ("hide_connection_errors", 1, "true or false"),
    ],
)
def test_a_bad_trust_setting_is_refused_with_its_name(field, value, says):
    with pytest.raises(ConfigError, match=f"trust setting {field} {says}|trust setting {field} .*{says}"):
        TrustSettings(**{field: value})


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("secret_ttl", -1.0, ">= 0"),
        ("retry_interval", float("nan"), ">= 0"),
        ("watch_timeout", 2.5, "whole number"),
        ("opa_check_interval", 0, "more than 0"),
        ("read_timeout", True, ">= 0"),
    ],
)
def test_a_bad_cluster_timing_is_refused_with_its_name(field, value, says):
    with pytest.raises(ConfigError, match=f"cluster timing {field} .*{says}"):
        KubeTimings(**{field: value})
