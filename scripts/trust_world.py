#!/usr/bin/env python3
"""A trust world for CI: a local Notary server and registry on fixed ports, test images pushed and
signed as a spec file says, signer keys written out and everything captured for offline tests.

    .venv/bin/python scripts/trust_world.py --spec world.yaml --out fixtures \\
        [--notary-port 4443] [--registry-port 5000] [--serve]

The spec (YAML):

    images:
      - repo: team/web            # pushed as 127.0.0.1:<registry-port>/team/web
        tag: v1
        signers: [releaser]       # as `docker trust sign` with these signers (targets/releases and
                                  # targets/<name>); without `signers`: signed with the repository key
      - repo: team/debug
        tag: v1
        signed: false             # pushed, never signed: a negative fixture

Writes into --out:

    trust/                 the capture (`ostiary trust capture` format), for --trust-data / trustData:
    keys/<signer>.pem      each signer's public key, for the policy's signer Secrets
    world.json             registry host, Notary URL and every image with its digest

The ports fix the GUNs (127.0.0.1:5000/team/web) and the trust-server URL
(https://127.0.0.1:4443), so the policies and test files a team commits stay valid across runs; the
image contents are derived from repo and tag, so digests are the same every run. Only the keys and
signatures are new on each run: commit the new `trust/` and `keys/` together. `--serve` keeps the
world running after the capture (Ctrl-C stops it) so `ostiary serve` or a cluster can use it live;
its CA file is printed.

Needs notary, notary-server, notary-signer and docker-registry (Debian packages; scripts/setup.sh
installs them). docs/policy-as-code.md, "A trust world for CI", walks through it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from app.offline.capture import CaptureError, capture_images, validity_summary  # noqa: E402
from tests.support.world import NotaryWorld, WorldError  # noqa: E402

SPEC_KEYS = {"repo", "tag", "signers", "signed"}


class SpecError(ValueError):
    pass


def read_spec(path: Path) -> list[dict]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"{path}: cannot read: {exc}") from None
    images = doc.get("images") if isinstance(doc, dict) else None
    if not isinstance(images, list) or not images:
        raise SpecError(f"{path}: expected `images:` with at least one entry")
    seen: set[tuple[str, str]] = set()
    for index, image in enumerate(images):
        where = f"{path}: images[{index}]"
        check_image(where, image)
        key = (image["repo"], image["tag"])
        if key in seen:
            raise SpecError(f"{where}: {image['repo']}:{image['tag']} is listed twice")
        seen.add(key)
    return images


def check_image(where: str, image: object) -> None:
    """One `images:` entry's fields and their types; SpecError naming `where` otherwise."""
    if not isinstance(image, dict):
        raise SpecError(f"{where}: expected a mapping")
    unknown = set(image) - SPEC_KEYS
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    if not isinstance(image.get("repo"), str) or not isinstance(image.get("tag"), str):
        raise SpecError(f"{where}: `repo` and `tag` are required strings")
    signers = image.get("signers", [])
    if not isinstance(signers, list) or not all(isinstance(s, str) and s.isidentifier() for s in signers):
        raise SpecError(f"{where}: `signers` is a list of names (letters, digits, _)")
    if not isinstance(image.get("signed", True), bool):
        raise SpecError(f"{where}: `signed` is true or false")
    if signers and image.get("signed") is False:
        raise SpecError(f"{where}: `signers` and `signed: false` contradict each other")


def build(world: NotaryWorld, images: list[dict], out: Path) -> dict:
    keys = out / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    record: dict = {"registry": world.registry_host, "notary_url": world.notary_url, "images": []}
    added: set[tuple[str, str]] = set()
    for image in images:
        repo, tag, signers = image["repo"], image["tag"], image.get("signers", [])
        pushed = world.push(repo, tag, seed=f"{repo}:{tag}")
        if image.get("signed", True):
            for name in signers:
                if (repo, name) not in added:
                    known = next((k for (_, n), k in world.signers.items() if n == name), None)
                    signer = world.add_delegation_key(
                        repo, name, ("targets/releases", f"targets/{name}"), key=known
                    )
                    (keys / f"{name}.pem").write_text(signer.public_pem)
                    added.add((repo, name))
            if signers:
                world.sign_as(repo, tag, pushed.digest, pushed.size, signers)
            else:
                world.sign(repo, tag, pushed.digest, pushed.size)
        record["images"].append(
            {
                "image": world.image_ref(repo, tag),
                "digest": pushed.digest,
                "signed": bool(image.get("signed", True)),
                "signers": signers,
            }
        )
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--notary-port", type=int, default=4443)
    parser.add_argument("--registry-port", type=int, default=5000)
    parser.add_argument("--serve", action="store_true", help="keep the world running after the capture")
    args = parser.parse_args(argv)
    try:
        images = read_spec(args.spec)
    except SpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ostiary-trust-world-") as base:
        world = NotaryWorld(base_dir=base, ports=(args.notary_port, args.registry_port))
        try:
            world.start()
            record = build(world, images, args.out)
            results = capture_images(
                [i["image"] for i in record["images"]],
                args.out / "trust",
                trust_server=world.notary_url,
                ca_file=world.ca_file,
            )
        except (WorldError, CaptureError, OSError) as exc:
            world.stop()
            print(f"error: {exc}", file=sys.stderr)
            return 1
        (args.out / "world.json").write_text(json.dumps(record, indent=2) + "\n")
        ok = True
        for result in results:
            print(result.describe())
            ok = ok and result.ok
        summary = validity_summary(results)
        if summary:
            print(summary)
        print(f"registry {world.registry_host}, Notary server {world.notary_url}; written to {args.out}")
        if args.serve and ok:
            print(f"serving until interrupted; CA file: {world.ca_file}", flush=True)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            try:
                stop.wait()
            except KeyboardInterrupt:
                pass
        world.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
