"""The background check of OPA's modules and documents (PolicySync.difference(): the repair and
the readiness probe) does not decode again what OPA answered before (app/opa/listing.py,
OpaClient.get_data, PolicySync._documents), and still sees every change on the very next check.

Real OPA (token authentication, as `ostiary serve` runs it), the real library and policy documents.
Each change is made from the attacker's side (a writer holding OPA's token) right after a check
that remembered OPA's answer, and must be seen by the next one, exactly as a reader that remembers
nothing sees it.
"""

from __future__ import annotations

import json

import pytest

from app import jsonio
from app.opa import listing
from app.opa.client import OpaClient
from app.opa.process import LocalOpa
from app.policies.model import POLICY_DATA_ROOT, PolicyResource
from app.policies.sync import PolicySync, library_modules
from app.policies.translate import translate


def policy(name: str, namespace: str | None = None, repository: str = "registry.example.com/app/*"):
    kind = "ImagePolicy" if namespace else "ClusterImagePolicy"
    spec = {"repositories": [{"name": repository}]}
    return translate(PolicyResource("ostiary.dev/v1", kind, name, namespace, spec, "test"))


POLICIES = [policy("base"), policy("team", "team-a"), policy("other", "team-b")]


def annotated(module_package: str, ids: int) -> str:
    """A module whose AST holds `,{"id":"` `ids - 1` times (a METADATA annotation's list of
    objects with an `id`): the text that separates two modules of a listing."""
    entries = "".join(f'#   - id: "m{i}"\n' for i in range(ids))
    return f"# METADATA\n# custom:\n#   things:\n{entries}package {module_package}\n\nx := 1\n"


@pytest.fixture()
def opa(opa_binary):
    server = LocalOpa(opa_binary, authenticate=True).start()
    yield server
    server.stop()


@pytest.fixture()
def sync(opa):
    policy_sync = PolicySync(OpaClient(opa.url, token=opa.token), base=library_modules())
    policy_sync.replace_all(POLICIES)
    found = policy_sync.difference()  # the first look: what OPA answers is remembered from here
    assert found.empty, found.describe()
    return policy_sync


def fresh_view(opa: LocalOpa) -> tuple[tuple[dict[str, str], dict[str, str]], object]:
    """What a client remembering nothing reads: the modules and the policy documents."""
    client = OpaClient(opa.url, token=opa.token)
    return client.list_modules(), client.get_data(POLICY_DATA_ROOT)


def by_id(modules) -> dict[str, listing.ListedModule]:
    return {module.id: module for module in modules}


def listing_bytes(opa: LocalOpa) -> bytes:
    return OpaClient(opa.url, token=opa.token)._request("GET", "/v1/policies", 10.0).content


def test_a_check_of_an_unchanged_opa_decodes_nothing_again(sync, monkeypatch):
    """Failed before: every check decoded the whole listing (every module's AST) and every
    document, ~65 ms of the worker's CPU with the library and 200 policies."""
    decoded: list[int] = []
    real = jsonio.loads

    def counting(raw):
        decoded.append(len(raw))
        return real(raw)

    monkeypatch.setattr(jsonio, "loads", counting)
    for _ in range(3):
        found = sync.difference()
        assert found.empty, found.describe()
        assert sync.repair() is None
        assert sync.in_place() is True
    assert decoded == [], (
        f"OPA's unchanged answers were decoded again ({len(decoded)} times, {sum(decoded)} bytes)"
    )


def write_module(opa: LocalOpa, module_id: str, source: str) -> None:
    OpaClient(opa.url, token=opa.token).put_policy(module_id, source)


def write_document(opa: LocalOpa, path: str, text: str) -> None:
    OpaClient(opa.url, token=opa.token).put_data(path, text)


LIBRARY = library_modules()
MAIN = next(m for m in LIBRARY if m.id.endswith("/main"))

# Each change an attacker (or an OPA restart) makes, and the difference the next check must report.
CHANGES = {
    "planted module": (
        lambda opa: write_module(opa, "planted/plain", "package planted.plain\n\nallow := true\n"),
        ("foreign", "planted/plain"),
    ),
    "planted module whose AST holds the separator of modules": (
        lambda opa: write_module(opa, "planted/annotated", annotated("planted.annotated", 3)),
        ("foreign", "planted/annotated"),
    ),
    "planted module cut nowhere (separator past the limit)": (
        lambda opa: write_module(opa, "planted/many", annotated("planted.many", listing.MAX_FALSE_ENDS + 4)),
        ("foreign", "planted/many"),
    ),
    "planted module whose source quotes a module of the listing": (
        lambda opa: write_module(
            opa,
            'planted/"quoted"',
            'package planted.quoted\n\n# },{"id":"' + MAIN.id + '","raw":"package x"\nallow := true\n',
        ),
        ("foreign", 'planted/"quoted"'),
    ),
    "library module replaced in place": (
        lambda opa: write_module(opa, MAIN.id, MAIN.source + "\n# replaced\n"),
        ("altered", MAIN.id),
    ),
    "library module deleted": (
        lambda opa: OpaClient(opa.url, token=opa.token).delete_policy(MAIN.id),
        ("missing", MAIN.id),
    ),
    "policy document changed in place": (
        lambda opa: write_document(
            opa, POLICIES[0].id, policy("base", repository="evil.example.com/*").source
        ),
        ("altered", "data:" + POLICIES[0].id),
    ),
    "policy document removed": (
        lambda opa: OpaClient(opa.url, token=opa.token).delete_data(POLICIES[1].id),
        ("missing", "data:" + POLICIES[1].id),
    ),
    "policy document planted": (
        lambda opa: write_document(opa, f"{POLICY_DATA_ROOT}/cluster/planted", policy("planted").source),
        ("foreign", f"data:{POLICY_DATA_ROOT}/cluster/planted"),
    ),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_every_change_is_seen_by_the_next_check(sync, opa, change):
    make, (kind, key) = CHANGES[change]
    assert sync.difference().empty  # remembered: the next answer is compared with this one
    make(opa)
    found = sync.difference()
    assert key in getattr(found, kind), found.describe()
    assert sync.opa.list_modules() == fresh_view(opa)[0]
    assert sync.opa.get_data(POLICY_DATA_ROOT) == fresh_view(opa)[1]
    assert sync.repair() is not None
    assert sync.difference().empty
    assert sync.in_place() is True


def test_opa_restarted_empty_is_seen_by_the_next_check(sync, opa):
    assert sync.difference().empty
    opa.stop()
    opa.start()
    sync.opa.url = opa.url
    found = sync.difference()
    assert set(found.missing) == {m.id for m in LIBRARY} | {"data:" + p.id for p in POLICIES}
    assert not found.altered and not found.foreign
    assert sync.in_place() is False
    assert sync.repair() is not None
    assert sync.in_place() is True


def test_the_separator_inside_a_module_is_not_taken_for_the_end_of_it(opa):
    """A module whose AST holds `,{"id":"` is cut at its real end; one holding it too often is
    not cut (decoded whole every time, as before). Both read as a reader remembering nothing does."""
    client = OpaClient(opa.url, token=opa.token)
    write_module(opa, "a/annotated", annotated("a.annotated", 3))
    content = listing_bytes(opa)
    assert content.count(b',{"id":"') > 0 and b'{"id":"m1"}' in content, "the AST does not hold the separator"
    pieces = listing.cut(content)
    assert pieces is not None
    assert by_id(module for _, module in pieces.values()) == by_id(listing.decode(content))
    assert client.list_modules() == client.list_modules() == fresh_view(opa)[0]
    write_module(opa, "b/many", annotated("b.many", listing.MAX_FALSE_ENDS + 4))
    content = listing_bytes(opa)
    assert listing.cut(content) is None
    assert client.list_modules() == client.list_modules() == fresh_view(opa)[0]
    assert set(client.list_policies()) == {"a/annotated", "b/many"}


def test_only_the_known_modules_bytes_exactly_are_read_without_decoding(opa):
    """`match` reads an answer only when it is exactly the known modules' bytes, in any order."""
    for i in range(3):
        write_module(opa, f"m/{i}", f"package m{i}\n\nx := {i}\n")
    content = listing_bytes(opa)
    known = listing.cut(content)
    assert known is not None
    modules = by_id(listing.decode(content))
    pieces = [piece for piece, _ in known.values()]
    reordered = b'{"result":[' + b",".join(reversed(pieces)) + b"]}\n"
    assert by_id(listing.match(reordered, known) or []) == modules
    assert listing.match(b'{"result":[' + pieces[0] + b"]}", known) == [known[next(iter(known))][1]]
    others = [
        b'{"result":[' + b", ".join(pieces) + b"]}",  # spaces: another layout, decoded instead
        b'{"result":[' + b",".join(pieces) + b"]",  # cut short
        b'{"result":[' + b",".join(pieces) + b',{"id":"m/9"}]}',  # one more, unknown
        b'{"result":[' + pieces[0][:-1] + b',"x":1}' + b"]}",  # a known start, another end
        b'{"result":[' + pieces[0] + pieces[1] + b"]}",  # no separator
        b'{"other":1,"result":[' + b",".join(pieces) + b"]}",
        content.replace(b"x := 1", b"x := 7"),  # a known module replaced in place
    ]
    for other in others:
        assert listing.match(other, known) is None, other[:80]
    reader = listing.ModuleListing()
    assert by_id(reader.read(content)) == modules
    changed = content.replace(b"x := 1", b"x := 7")
    assert any(m.raw.endswith("x := 7\n") for m in reader.read(changed))
    with pytest.raises(ValueError):
        reader.read(changed[:-10])
    assert json.loads(content)["result"]  # the material is a real listing
