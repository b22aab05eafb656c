"""The images scripts/build-images.sh built, checked from the outside: what their layers hold, who
they run as, and that Ostiary's own image serves on a read-only root filesystem with only /tmp
writable (as the chart runs it), with OPA from the OPA image beside it."""

from __future__ import annotations

import re
import ssl
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.e2e.cluster import REPO, running_control_plane
from tests.e2e.k8s import CRD_DIR, install_crds, load_documents
from tests.image.images import archive_layers, archive_manifest, image_config, podman
from tests.support import pki
from tests.support.world import free_port

# As the chart runs every container: read-only root, nothing writable but what is mounted, no
# capabilities, no privilege escalation.
RESTRICTED = ("--read-only", "--read-only-tmpfs=false", "--cap-drop=all", "--security-opt=no-new-privileges")


@pytest.mark.parametrize("name", ["ostiary", "opa", "pause", "kubectl"])
def test_default_user_is_numeric_and_not_root(images, name):
    # runAsNonRoot can only be checked by the kubelet for a numeric user.
    user = image_config(images[name])["Config"]["User"]
    assert re.fullmatch(r"[0-9]+(:[0-9]+)?", user), user
    assert int(user.split(":")[0]) != 0
    assert int(user.split(":")[-1]) != 0


def test_archives_are_the_images_in_podman(images):
    # What `ctr images import` loads is what these tests ran.
    for name in ("ostiary", "opa", "pause", "kubectl"):
        config_digest = archive_manifest(name)["Config"].removesuffix(".json").removeprefix("blobs/sha256/")
        assert config_digest == image_config(images[name])["Id"], name


def test_no_wheel_pip_or_source_in_any_layer(images):
    found = []
    for layer, tar in archive_layers("ostiary"):
        for path in tar.getnames():
            p = path.removeprefix("./")
            if (
                p.endswith(".whl")
                or p.startswith(("wheels/", "src/"))
                or p.endswith("_test.rego")
                or re.search(r"site-packages/pip(/|-)", p)
            ):
                found.append(f"{layer}: {p}")
    assert not found, found[:20]


def _local_ca_markers() -> list[bytes]:
    """A line from the middle of each certificate in the host's bundle that Debian does not ship (the
    local CA that re-signs HTTPS here); the build hands that bundle to pip for one step."""
    shipped = b"".join(p.read_bytes() for p in Path("/usr/share/ca-certificates").rglob("*.crt"))
    bundle = Path("/etc/ssl/certs/ca-certificates.crt").read_text()
    markers = []
    for pem in re.findall(r"-----BEGIN CERTIFICATE-----\n(.*?)-----END", bundle, re.S):
        lines = pem.split()
        marker = lines[len(lines) // 2].encode()
        if marker not in shipped:
            markers.append(marker)
    return markers


def test_nothing_of_the_host_ca_bundle_is_in_the_image(images):
    markers = _local_ca_markers()
    found = []
    for layer, tar in archive_layers("ostiary"):
        for member in tar:
            p = member.name.removeprefix("./")
            if p in ("etc/pip.conf", "run/secrets/pip-ca") or p.startswith("run/secrets/"):
                found.append(f"{layer}: {p}")
            if not member.isfile() or not markers:
                continue
            f = tar.extractfile(member)
            assert f is not None
            data = f.read()
            found += [f"{layer}: {p} holds a host CA" for m in markers if m in data]
    assert not found, found[:20]


def test_build_context_is_the_allow_list(images, tmp_path):
    # The Dockerfile's context as podman sends it (the repository's .dockerignore applies).
    ref = f"localhost/ostiary-context-test:{uuid.uuid4().hex[:8]}"
    (tmp_path / "Containerfile").write_text(f"FROM {images['ostiary']}\nCOPY . /ctx\n")
    podman(
        "build",
        "-q",
        "--pull=never",
        "--network=none",
        "-t",
        ref,
        "-f",
        str(tmp_path / "Containerfile"),
        str(REPO),
    )
    try:
        listing = podman(
            "run", "--rm", "--network=none", "--entrypoint", "find", ref, "/ctx", "-type", "f"
        ).stdout
    finally:
        podman("rmi", "-f", ref, check=False)
    files = [line.removeprefix("/ctx/") for line in listing.split()]
    allowed = ("app/", "rego/ostiary/", "pyproject.toml", "setup.cfg", "README.md")
    assert [f for f in files if not f.startswith(allowed)] == []
    assert "app/cli/__init__.py" in files and "pyproject.toml" in files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_help_runs_as_the_image_user_on_a_read_only_root(images):
    proc = podman("run", "--rm", *RESTRICTED, "--network=none", images["ostiary"], "--help")
    assert "serve" in proc.stdout


@pytest.mark.parametrize(
    ("name", "args", "expect"),
    [
        ("opa", ["version"], r"^Version: \d"),
        ("pause", ["-v"], r"^pause\.c v"),
        ("kubectl", ["version", "--client"], r"^Client Version: v"),
    ],
)
def test_tool_images_run_on_a_read_only_root(images, name, args, expect):
    proc = podman("run", "--rm", *RESTRICTED, "--network=none", images[name], *args)
    assert re.search(expect, proc.stdout + proc.stderr, re.M), proc.stdout + proc.stderr


def _get(url: str) -> int:
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # only the status matters here
    try:
        with urllib.request.urlopen(url, timeout=5, context=context) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def serve_in_image(images: dict[str, str], serve_args: list[str], *podman_args: str) -> tuple[int, str]:
    """Run the OPA image and `ostiary serve SERVE_ARGS --listen ... --opa-url ...` from Ostiary's image
    side by side on loopback (host network), both restricted as the chart runs them, only /tmp
    writable in Ostiary's; wait for GET /readyz. Returns its last status and Ostiary's log."""
    opa_port, port = free_port(), free_port()
    tls = "--tls-cert" in " ".join(serve_args)
    tag = uuid.uuid4().hex[:8]
    opa_name, name = f"ostiary-test-opa-{tag}", f"ostiary-test-{tag}"
    try:
        podman(
            "run", "-d", "--name", opa_name, "--network=host", *RESTRICTED, images["opa"],
            "run", "--server", f"--addr=127.0.0.1:{opa_port}", "--skip-version-check",
        )  # fmt: skip
        podman(
            "run", "-d", "--name", name, "--network=host", *RESTRICTED, "--tmpfs", "/tmp", *podman_args,
            images["ostiary"], "serve", *serve_args,
            f"--listen=127.0.0.1:{port}", f"--opa-url=http://127.0.0.1:{opa_port}",
        )  # fmt: skip
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}/readyz"
        status, deadline = 0, time.monotonic() + 90
        while time.monotonic() < deadline:
            status = _get(url)
            if status == 200:
                break
            if podman("inspect", "--format", "{{.State.Running}}", name).stdout.strip() != "true":
                break
            time.sleep(0.5)
        logs = podman("logs", name, check=False)
        return status, logs.stdout + logs.stderr
    finally:
        podman("rm", "-f", "-t", "2", name, opa_name, check=False)


def test_serve_policy_dir_is_ready_on_a_read_only_root(images):
    # The chart's crash: the default state dir must be writable with only /tmp writable.
    policies = REPO / "examples" / "policies"
    status, log = serve_in_image(images, ["--policy-dir=/policies"], "-v", f"{policies}:/policies:ro")
    assert status == 200, log[-3000:]


def test_serve_kube_in_cluster_is_ready_on_a_read_only_root(images, tmp_path):
    # The image's default command (--kube, TLS from /etc/ostiary/tls) with in-cluster credentials as a
    # pod has them, against a real kube-apiserver; only the ports differ (loopback is shared here).
    with running_control_plane(tmp_path / "kube") as plane:
        admin = plane.api_client("admin")
        install_crds(admin, [doc for path in sorted(CRD_DIR.glob("*.yaml")) for doc in load_documents(path)])
        sa, tls = tmp_path / "serviceaccount", tmp_path / "tls"
        sa.mkdir(mode=0o755)
        tls.mkdir(mode=0o755)
        assert plane.ca_file is not None
        pki.write(sa / "ca.crt", plane.ca_file.read_bytes(), 0o644)
        pki.write(sa / "token", plane.tokens["admin"], 0o644)  # RBAC is the e2e suite's; this is the image
        pki.write(sa / "namespace", "ostiary-system", 0o644)
        key, cert = pki.CA.create().issue_server(("localhost",), ("127.0.0.1",))
        pki.write(tls / "tls.crt", pki.cert_pem(cert), 0o644)
        pki.write(tls / "tls.key", pki.private_key_pem(key), 0o644)
        api_port = plane.url.rsplit(":", 1)[1]
        default_cmd = image_config(images["ostiary"])["Config"]["Cmd"]
        serve_args = [a for a in default_cmd[1:] if not a.startswith(("--listen=", "--opa-url="))]
        assert serve_args == [
            "--kube",
            "--tls-cert=/etc/ostiary/tls/tls.crt",
            "--tls-key=/etc/ostiary/tls/tls.key",
        ]
        status, log = serve_in_image(
            images, serve_args,
            "-e", "KUBERNETES_SERVICE_HOST=127.0.0.1", "-e", f"KUBERNETES_SERVICE_PORT={api_port}",
            "-v", f"{sa}:/var/run/secrets/kubernetes.io/serviceaccount:ro", "-v", f"{tls}:/etc/ostiary/tls:ro",
        )  # fmt: skip
    assert status == 200, log[-3000:]


def test_the_image_holds_opa_s_parser_and_no_pip(images):
    """OPA's static binary is in the image (custom Rego is read with `opa parse` in the webhook
    container, found missing on the real node); pip is not."""
    proc = podman(
        "run",
        "--rm",
        "--network=none",
        "--entrypoint",
        "sh",
        images["ostiary"],
        "-c",
        "command -v pip pip3",
        check=False,
    )
    assert proc.stdout.strip() == "", proc.stdout
    version = podman("run", "--rm", "--network=none", "--entrypoint", "opa", images["ostiary"], "version")
    want = next(
        line
        for line in (REPO / "scripts" / "versions.env").read_text().splitlines()
        if line.startswith("OPA_VERSION=")
    )
    assert f"Version: {want.split('=', 1)[1].lstrip('v')}" in version.stdout, version.stdout
