"""PolicySync.compiles against a real OPA: a refused module is named, the serving set untouched."""

from __future__ import annotations

import threading

import pytest

from app.opa.client import OpaClient, OpaModuleRefused
from app.opa.process import LocalOpa
from app.policies.model import RegoModule
from app.policies.sync import PolicySync, library_modules


@pytest.fixture(scope="module")
def sync():
    opa = LocalOpa().start()
    s = PolicySync(OpaClient(opa.url))
    s.set_base(library_modules())
    s.replace_all([])
    yield s
    opa.stop()


def module(body: str, name: str = "x") -> RegoModule:
    package = f'ostiary_policies.cluster["{name}"]'
    return RegoModule(
        id=f"ostiary_policies/cluster/{name}",
        package=package,
        source=f"# generated\npackage {package}\n\n{body}\n",
    )


def test_a_module_that_does_not_compile_is_refused_by_its_own_id(sync):
    with pytest.raises(OpaModuleRefused) as refused:
        sync.compiles(module("policy := {"))
    assert refused.value.module_id == "ostiary_policies/cluster/x"
    assert "unexpected eof token" in refused.value.errors
    assert "ostiary_validation_scratch" not in refused.value.errors


def test_compiling_leaves_exactly_the_serving_set_even_when_run_in_parallel(sync):
    before = sync.opa.list_policies()
    errors: list[BaseException] = []

    def check(i: int) -> None:
        try:
            sync.compiles(module('policy := {"repositories": []}', name=f"n{i}"))
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=check, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert sync.opa.list_policies() == before
    assert sync.in_place()


def test_a_module_without_its_declared_package_is_refused_before_opa(sync):
    with pytest.raises(Exception, match="does not declare package"):
        sync.compiles(
            RegoModule(
                id="ostiary_policies/cluster/y",
                package='ostiary_policies.cluster["y"]',
                source="package ostiary.main\n",
            )
        )
