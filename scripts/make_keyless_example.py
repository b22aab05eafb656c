"""Make the keyless part of examples/signed-images: images signed keyless by a test Sigstore (a private
Sigstore: tests/support/keyless_signing.py), pushed into a local docker-registry, captured into
examples/signed-images/captured with `ostiary trust capture --format cosign`, and the test Sigstore's
trusted_root.json written beside the test file. Run once from the repository root (its output is
committed; a new run makes new keys, so rerun only to remake the whole keyless part):

    .venv/bin/python scripts/make_keyless_example.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support import cosign_signing as cs  # noqa: E402
from tests.support.keyless_signing import TestSigstore  # noqa: E402
from tests.support.simple_signing import SigningWorld  # noqa: E402

EXAMPLE = ROOT / "examples" / "signed-images"
HOST = "registry.test:5000"
ISSUER = "https://token.actions.githubusercontent.com"
WORKFLOW = "https://github.com/example/app/.github/workflows/release.yml@refs/heads/main"
OTHER = "https://github.com/example/fork/.github/workflows/release.yml@refs/heads/main"


def main() -> None:
    sigstore = TestSigstore("example private sigstore")
    with tempfile.TemporaryDirectory() as tmp, SigningWorld(Path(tmp) / "w") as w:
        push = cs.Pusher(w.registry_url)
        for tag, subject in (("release", WORKFLOW), ("fork", OTHER)):
            digest = push.image("ostiary/keyless", tag)
            push.bundle_signature(
                "ostiary/keyless",
                digest,
                sigstore.bundle(cs.statement(digest), subject=subject, issuer=ISSUER),
            )
            print(f"{HOST}/ostiary/keyless:{tag} {digest} signed by {subject}")
        subprocess.run(
            [str(ROOT / ".venv" / "bin" / "ostiary"), "trust", "capture", "--format", "cosign",
             "--registry-endpoint", f"{HOST}={w.registry_url}", "--out", str(EXAMPLE / "captured"),
             f"{HOST}/ostiary/keyless:release", f"{HOST}/ostiary/keyless:fork"],
            check=True,
        )  # fmt: skip
    (EXAMPLE / "trusted_root.json").write_bytes(sigstore.trusted_root())


if __name__ == "__main__":
    main()
