"""Differential test: app/images.py against the docker reference grammar itself.

tools/refdiff is distribution/reference (the parser containerd and Docker use to read an image
field) behind a JSON pipe, built by `scripts/setup-tools.sh refdiff`. On generated and hand-picked
strings Ostiary must agree with it — same registry, repository, tag and digest — or both refuse.
The only disagreement allowed is Ostiary refusing something Docker accepts, and only for the
deliberate differences listed in DELIBERATE (docs/policies.md, "Image references"). Every pin
Ostiary would write must read, to Docker, as the same domain, path and tag with the new digest.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.images import InvalidImageReference, parse_image
from tests.support.procs import die_with_parent

ROOT = Path(__file__).resolve().parents[2]
PIN = "sha256:" + "c" * 64
HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}


class RefDiff:
    """A running tools/refdiff: one JSON string in, one JSON verdict out."""

    def __init__(self, binary: str):
        self.proc = subprocess.Popen(
            [binary],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            preexec_fn=die_with_parent(),
        )

    def __call__(self, text: str) -> dict:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(text) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"refdiff exited ({self.proc.poll()}) on {text!r}"
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(10)


@pytest.fixture(scope="module")
def docker():
    """Builds tools/refdiff when needed (idempotent, instant when built); no Go means a failure."""
    binary = os.environ.get("OSTIARY_REFDIFF")
    if not binary:
        built = subprocess.run(
            [str(ROOT / "scripts" / "setup-tools.sh"), "refdiff"],
            check=False,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if built.returncode != 0:
            pytest.fail(
                f"scripts/setup-tools.sh refdiff failed (needs Go):\n{built.stdout}{built.stderr}",
                pytrace=False,
            )
        tools = Path(os.environ.get("OSTIARY_TOOLS_DIR") or ROOT / ".tools")
        binary = str(tools / "bin" / "refdiff")
    rd = RefDiff(binary)
    yield rd
    rd.close()


def fold(domain: str, path: str) -> tuple[str, str]:
    """Docker's (domain, path) as Ostiary names the registry: lower case, Hub aliases as docker.io."""
    registry = domain.lower()
    if registry in HUB_ALIASES:
        if "/" not in path:
            path = "library/" + path
        registry = "docker.io"
    return registry, path


# Each deliberate difference: a name and a test on (text, Docker's verdict) saying the refusal is it.
DELIBERATE = {
    # Docker accepts any registered digest algorithm (sha384 too); Notary and Ostiary's pins use
    # sha256 and sha512 only, so another algorithm could never be verified.
    "digest algorithm other than sha256/sha512": lambda text, d: (
        bool(d.get("digest")) and not d["digest"].startswith(("sha256:", "sha512:"))
    ),
    # A first component that Docker takes for a host (it has a `.`) but that is no valid host name
    # (`a_b.io/app`) is re-read by Docker as a path with an *empty* domain; the runtime would then
    # contact a host named by the first component. Ambiguous, so refused.
    "first component neither host nor Docker Hub path": lambda text, d: d.get("domain", "") == "",
    # Folding a Docker Hub alias (registry-1.docker.io/x) adds `library/`, which can push a path of
    # 248..255 characters over the limit.
    "alias folding makes the path too long": lambda text, d: (
        d.get("domain", "").lower() in HUB_ALIASES and len(fold(d["domain"], d["path"])[1]) > 255
    ),
    # No real image has a longer reference (DNS names stop at 253 characters, paths at 255); the
    # grammar itself puts no bound on the host, so Docker accepts a 2000-character one.
    "reference over 1024 characters": lambda text, d: len(text) > 1024,
}


def check(docker: RefDiff, text: str) -> None:
    theirs = docker(text)
    try:
        ours = parse_image(text)
    except InvalidImageReference as exc:
        if theirs["ok"]:
            why = [name for name, applies in DELIBERATE.items() if applies(text, theirs)]
            assert why, f"Ostiary refuses {text!r} ({exc.reason}) but Docker reads it as {theirs}"
        return
    assert theirs["ok"], (
        f"Ostiary accepts {text!r} as {ours.normalized} but Docker refuses it: {theirs['error']}"
    )
    assert (ours.registry, ours.repository) == fold(theirs["domain"], theirs["path"]), (text, theirs)
    assert ours.tag == (theirs.get("tag") or None), (text, theirs)
    assert ours.digest == (theirs.get("digest") or None), (text, theirs)
    hub = theirs["domain"].lower() in HUB_ALIASES
    expected = (theirs["domain"], theirs["path"]) if not hub else ("docker.io", ours.repository)
    assert ours.runtime_name == "/".join(expected), (text, theirs)
    pinned = docker(ours.pinned(PIN))
    assert pinned["ok"], (text, ours.pinned(PIN), pinned)
    # Docker reads the pin as the very same domain and path (Docker Hub: its canonical name)
    assert (pinned["domain"], pinned["path"]) == expected, (text, ours.pinned(PIN))
    assert (pinned.get("tag"), pinned["digest"]) == (ours.tag, PIN), (text, ours.pinned(PIN))


HEX64 = "a" * 64
TRICKY = [
    # upper case and single-label hosts
    "REGISTRY/app:v1",
    "Registry/app",
    "REGISTRY:5000/app",
    "Registry.Example.COM/team/app:1",
    "rEgistry/app",
    "registry/app",
    "LOCALHOST/app",
    "LocalHost:5000/app",
    "REGISTRY",
    "Registry/App",
    "REG_ISTRY/app",
    "Index.Docker.IO/library/nginx",
    "DOCKER.IO/nginx",
    "INDEX.DOCKER.IO/nginx",
    # ports and localhost
    "localhost/app",
    "localhost:5000/app",
    "localhost:5000",
    "localhost",
    "localhost:5000/app:5000",
    "host:5000/app",
    "host:/app",
    "host:abc/app",
    "host:5000:1/app",
    ":5000/app",
    "host:5000",
    "a:1:2",
    "127.0.0.1/app",
    "127.0.0.1:5000/a/b/c:tag",
    "0/app",
    "1.2.3.4.5/app",
    # IPv6 brackets
    "[::1]/app",
    "[::1]:5000/app",
    "[::1]:5000/app:v1",
    "[2001:db8::1]:443/a/b",
    "[::1",
    "::1/app",
    "[fe80::1%eth0]/app",
    "[]/app",
    "[::1]:/app",
    "[g::1]/app",
    "[::1]a/app",
    # Docker Hub spellings
    "nginx",
    "library/nginx",
    "docker.io/nginx",
    "docker.io/library/nginx",
    "index.docker.io/nginx",
    "index.docker.io/library/nginx:1",
    "registry-1.docker.io/nginx",
    "registry-1.docker.io/library/nginx",
    "docker.io/library/library/nginx",
    "docker.io",
    "docker.io/",
    "library",
    "docker.io/org/team/app",
    # digests
    "nginx@sha256:" + HEX64,
    "nginx@sha256:" + "a" * 63,
    "nginx@sha256:" + "a" * 65,
    "nginx@sha256:",
    "@sha256:" + HEX64,
    "nginx@",
    "nginx@sha512:" + "b" * 128,
    "nginx@sha512:" + HEX64,
    "nginx@sha384:" + "a" * 96,
    "nginx@SHA256:" + HEX64,
    "nginx@sha256:" + "A" * 64,
    "nginx@md5:" + "a" * 32,
    "nginx:1@sha256:" + HEX64,
    "nginx:@sha256:" + HEX64,
    "nginx@sha256:" + HEX64 + "@sha256:" + HEX64,
    "nginx@sha256" + HEX64,
    "nginx@" + HEX64,
    HEX64,
    "a" * 63,
    "A" * 64,
    HEX64 + ":tag",
    "x/" + HEX64,
    "nginx@sha256+b64:" + HEX64,
    "nginx@sha256:" + "a" * 64 + "\n",
    # tags
    "nginx:",
    "nginx:latest",
    "nginx:LATEST",
    "nginx:-x",
    "nginx:.x",
    "nginx:_x",
    "nginx:" + "x" * 128,
    "nginx:" + "x" * 129,
    "nginx:a:b",
    "nginx:a/b",
    "nginx:é",
    "nginx:١",
    "nginx:ǅ",
    # path components and lengths
    "a//b",
    "app/",
    "/app",
    "a/-b",
    "a/b-",
    "a/b--c",
    "a/b__c",
    "a/b___c",
    "a/b..c",
    "a/b.-c",
    "a_b.io/app",
    "a__b.c/d",
    "x." * 5 + "io/app",
    "a" * 255,
    "a" * 256,
    "b/" + "a" * 246,
    "b/" + "a" * 254,
    "example.com/" + "a" * 255,
    "a" * 1100 + ".io/app",
    "a." * 380 + "io/" + "b" * 255 + ":" + "t" * 128,
    "registry-1.docker.io/" + "a" * 250,
    "quay.io/" + "a/" * 120 + "b",
    # whitespace, control and non-ASCII
    "",
    " ",
    "nginx ",
    " nginx",
    "nginx\n",
    "ng\tinx",
    "ng\x00inx",
    "ngïnx",
    "\u212aeg.io/app",
    "ﬁ.io/app",
    "exa\u0131mple.com/app",
    "nginx\u2028",
]


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_references_agree_with_docker(docker, text):
    check(docker, text)


_host_label = st.text(alphabet="abzAZ09-_", min_size=0, max_size=6)
_host = st.one_of(
    st.sampled_from(
        [
            "docker.io",
            "index.docker.io",
            "registry-1.docker.io",
            "localhost",
            "LOCALHOST",
            "quay.io",
            "[::1]",
            "[2001:db8::2]",
            "127.0.0.1",
            "REGISTRY",
            "Registry.Example.COM",
        ]
    ),
    st.lists(_host_label, min_size=1, max_size=3).map(".".join),
)
_port = st.one_of(st.just(""), st.sampled_from([":5000", ":0", ":", ":x", ":65536"]))
_component = st.text(alphabet="ab09._-A", min_size=0, max_size=8)
_path = st.lists(_component, min_size=1, max_size=3).map("/".join)
_tag = st.one_of(st.just(""), st.text(alphabet="aZ09_.-:/", min_size=0, max_size=10).map(lambda t: ":" + t))
_digest = st.one_of(
    st.just(""),
    st.builds(
        lambda alg, n, c: f"@{alg}:{c * n}",
        st.sampled_from(["sha256", "sha512", "sha384", "SHA256", "md5", ""]),
        st.sampled_from([0, 1, 32, 63, 64, 65, 96, 128]),
        st.sampled_from(["a", "0", "F", "g"]),
    ),
)
_structured = st.builds(
    lambda host, port, use_host, path, tag, digest: (
        (f"{host}{port}/" if use_host else "") + path + tag + digest
    ),
    _host,
    _port,
    st.booleans(),
    _path,
    _tag,
    _digest,
)
_junk = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_structured, _structured, _structured, _junk))
@example("REGISTRY/app:v1")
def test_generated_references_agree_with_docker(docker, text):
    check(docker, text)


def test_upper_case_single_label_host_keeps_its_registry_when_pinned(docker):
    ref = parse_image("REGISTRY/app:v1")
    assert ref.pinned(PIN) == "REGISTRY/app:v1@" + PIN
    assert docker(ref.pinned(PIN))["domain"] == "REGISTRY"
    # what the old pin (`registry/app:v1@…`) meant to Docker: a Docker Hub repository
    assert docker("registry/app:v1@" + PIN)["domain"] == "docker.io"


def test_every_deliberate_difference_is_exercised(docker):
    """Each entry in DELIBERATE names a real case, so none is dead text."""
    cases = {
        "digest algorithm other than sha256/sha512": "nginx@sha384:" + "a" * 96,
        "first component neither host nor Docker Hub path": "a_b.io/app",
        "alias folding makes the path too long": "registry-1.docker.io/" + "a" * 250,
        "reference over 1024 characters": "a" * 1100 + ".io/app",
    }
    assert set(cases) == set(DELIBERATE)
    for name, text in cases.items():
        theirs = docker(text)
        assert theirs["ok"] and DELIBERATE[name](text, theirs), (name, theirs)
        with pytest.raises(InvalidImageReference):
            parse_image(text)
