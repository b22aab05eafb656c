"""`ostiary trust`: inspect, capture, pins, pin, unpin (docs/trust.md, docs/policy-as-code.md)."""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from app.cli.options import (
    STATE_DIR_HELP,
    at_option,
    ca_file_option,
    checked_trusted_root,
    input_error,
    kube_records_options,
    registry_endpoint_option,
    sigstore_root_option,
    trust_data_option,
)
from app.policies.model import DEFAULT_SYSTEM_NAMESPACE

if TYPE_CHECKING:
    from app.notary.state import RecordStore


@click.group()
def trust() -> None:
    """Signatures offline: inspect, capture and pin Notary v1 trust data, cosign, simple signing and Notation."""


@trust.command()
@click.argument("image")
@click.option("--trust-server", help="Notary server URL (default: by registry host).")
@ca_file_option()
@click.option(
    "--signer",
    "signers",
    multiple=True,
    metavar="NAME=PEMFILE",
    help="Required signer and its public key/certificate.",
)
@at_option("Verify as of this time (RFC 3339), e.g. for archived data.")
@click.option("--timeout", default=30.0, show_default=True)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["notary", "cosign", "simple", "notation"]),
    default="notary",
    show_default=True,
    help="Which signatures: Notary trust data, cosign signatures, or simple signing (docs/signatures.md).",
)
@click.option(
    "--key",
    "key_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="cosign/simple: a public key file (PEM, or an armoured OpenPGP block); notation: a CA "
    "certificate file (PEM); repeatable.",
)
@click.option("--store-url", help="simple: the lookaside store (the policy's storeURL).")
@registry_endpoint_option("cosign/simple: read registry HOST at URL (as serve --registry-endpoint).")
@trust_data_option(
    "cosign/simple: read a signature capture (`ostiary trust capture --format`) instead of registries."
)
@sigstore_root_option("cosign without --key (keyless): the Sigstore trusted_root.json, as serve's option.")
def inspect(
    image: str,
    trust_server: str | None,
    ca_file: str | None,
    signers: tuple[str, ...],
    at: datetime | None,
    timeout: float,
    fmt: str,
    key_files: tuple[str, ...],
    store_url: str | None,
    registry_endpoints: dict[str, str],
    trust_data: tuple[str, ...],
    sigstore_trusted_root: str | None,
) -> None:
    """Print the verified trust facts of IMAGE as JSON, or why they could not be verified.

    With --format cosign or simple: the signature facts the webhook's verifier gives for a requirement
    with --key (the policy's identity rule is not applied; the signed identities are in the facts);
    --format cosign without --key: keyless signatures, each with its certificate identity, issuer and
    Rekor entry. One line per signature follows on standard error.
    """
    from app.notary.inspect import explain, inspect_image  # lazy: start-up

    if fmt != "notary":
        _inspect_signatures(
            image,
            fmt,
            key_files,
            store_url,
            registry_endpoints,
            trust_data,
            ca_file,
            at,
            timeout,
            checked_trusted_root(sigstore_trusted_root),
        )
        return
    pairs = []
    for item in signers:
        name, sep, path = item.partition("=")
        if not sep or not name or not Path(path).is_file():
            raise click.BadParameter(
                f"{item!r} is not NAME=PEMFILE (an existing file)", param_hint="--signer"
            )
        pairs.append((name, Path(path).read_text()))
    started = time.monotonic()
    facts, ok = inspect_image(
        image, trust_server=trust_server, ca_file=ca_file, signers=pairs, at=at, timeout=timeout
    )
    click.echo(json.dumps(facts, indent=2, sort_keys=True))
    if not ok:
        click.echo(f"not verified: {explain(facts)} ({time.monotonic() - started:.2f}s)", err=True)
        sys.exit(1)


def _inspect_signatures(
    image: str,
    fmt: str,
    key_files: tuple[str, ...],
    store_url: str | None,
    registry_endpoints: dict[str, str],
    trust_data: tuple[str, ...],
    ca_file: str | None,
    at: datetime | None,
    timeout: float,
    trusted_root: str | None = None,
) -> None:
    from app.signatures.inspect import describe  # lazy: start-up
    from app.signatures.replay import (  # lazy: start-up
        SignatureDataError,
        inspect_signatures,
        why_not_verified,
    )

    if not key_files and fmt != "cosign":
        raise click.UsageError(
            f"--format {fmt} needs --key FILE (the public key a signature must verify with)"
        )
    if fmt == "simple" and not store_url:
        raise click.UsageError("--format simple needs --store-url (the lookaside store)")
    keys = [(path, Path(path).read_bytes()) for path in key_files]
    try:
        facts, ok = inspect_signatures(
            image,
            fmt,
            keys,
            store_url=store_url,
            trust_data=trust_data,
            ca_file=ca_file,
            endpoints=registry_endpoints,
            at=at,
            timeout=timeout,
            trusted_root=trusted_root,
        )
    except SignatureDataError as exc:
        raise click.BadParameter(str(exc), param_hint="--trust-data") from None
    click.echo(json.dumps(facts, indent=2, sort_keys=True))
    for line in describe(facts):
        click.echo(line, err=True)
    if not ok:
        click.echo(f"not verified ({fmt}): {why_not_verified(facts)}", err=True)
        sys.exit(1)


@trust.command()
@click.argument("images", nargs=-1)
@click.option(
    "-f",
    "--filename",
    "manifest_paths",
    multiple=True,
    type=click.Path(),
    help="Also capture every image these manifests reference (files or directories, '-' for stdin; "
    "repeatable).",
)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Directory to write (created; repositories are added).",
)
@click.option(
    "--trust-server",
    "trust_server_args",
    multiple=True,
    metavar="[HOST=]URL",
    help="Notary server URL for every image, or HOST=URL for the images of registry HOST (repeatable; "
    "default: by registry host).",
)
@ca_file_option("Extra CA bundle for the Notary server.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds per repository.")
@click.option("--username", help="Registry user for the Notary token service (password read from stdin).")
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(["notary", "cosign", "simple", "notation"]),
    help="What to record (repeatable; default notary): Notary trust data, cosign signatures (.sig tag, "
    "referrers and fallback tag), simple signatures (lookaside under --store-url).",
)
@click.option("--store-url", help="The simple-signing lookaside store (the policy's storeURL).")
@registry_endpoint_option("Read registry HOST at URL (as serve --registry-endpoint); for cosign and simple.")
def capture(
    images: tuple[str, ...],
    manifest_paths: tuple[str, ...],
    out: str,
    trust_server_args: tuple[str, ...],
    ca_file: str | None,
    timeout: float,
    username: str,
    formats: tuple[str, ...],
    store_url: str | None,
    registry_endpoints: dict[str, str],
) -> None:
    """Record the trust data Notary servers serve, or the signatures registries serve, for IMAGE...,
    byte for byte, for offline runs (--trust-data DIR).

    Notary: each repository's root, timestamp, snapshot, targets and delegations are written under
    --out with the server URL and GUN (ostiary-trust.json), then verified from those bytes. cosign and
    simple: every manifest, blob, referrers listing and store file the verifier reads, and the answers
    that were 404 (ostiary-signatures.json); judged when replayed, with the policy's keys. A
    repository the Notary server has no trust data for is recorded as unsigned (a negative fixture).
    Exit 1 when one could not be captured (or, for Notary, does not verify now).
    """
    from app.offline.capture import CaptureError, capture_images, validity_summary  # lazy: start-up
    from app.offline.capture_targets import (  # lazy: start-up
        TargetError,
        images_to_capture,
        split_trust_servers,
    )
    from app.signatures.replay import capture_signatures  # lazy: start-up

    if username and "-" in manifest_paths:
        input_error("-f - and --username both read standard input: give the manifests as files")
    try:
        trust_server, trust_servers = split_trust_servers(trust_server_args)
        targets = images_to_capture(images, manifest_paths, sys.stdin)
    except TargetError as exc:
        input_error(str(exc))

    chosen = list(dict.fromkeys(formats or ("notary",)))
    credentials = ((username, sys.stdin.readline().rstrip("\n")),) if username else ()
    results: list[Any] = []
    if "notary" in chosen:
        try:
            results += capture_images(
                targets,
                Path(out),
                trust_server=trust_server,
                trust_servers=trust_servers,
                ca_file=ca_file,
                timeout=timeout,
                credentials=credentials,
            )
        except CaptureError as exc:
            input_error(str(exc))
    signature_formats = [f for f in chosen if f != "notary"]
    if "simple" in signature_formats and not store_url:
        input_error("--format simple needs --store-url (the lookaside store of the policy's storeURL)")
    if signature_formats:
        try:
            results += capture_signatures(
                targets,
                Path(out),
                signature_formats,
                store_url=store_url,
                ca_file=ca_file,
                endpoints=registry_endpoints,
                timeout=timeout,
                credentials=credentials,
            )
        except OSError as exc:
            input_error(f"cannot write {out}: {exc}")
    ok = True
    for result in results:
        click.echo(result.describe())
        ok = ok and result.ok
    validity = validity_summary([r for r in results if hasattr(r, "valid_until")])
    if validity:
        click.echo(validity)
    sys.exit(0 if ok else 1)


# -- trust records: pins, pin, unpin (docs/trust.md, "Roots of trust") --------------------------------


def _record_store(
    state_dir: str | None,
    *,
    create: bool = False,
    kube: bool = False,
    kubeconfig: str | None = None,
    system_namespace: str = DEFAULT_SYSTEM_NAMESPACE,
) -> RecordStore:
    from app.notary.state import FileRecordStore, StateError, default_state_dir  # lazy: start-up

    if kube:
        from app.kube.client import KubeConfigError, RestKubeApi  # lazy: start-up
        from app.kube.records import KubeRecordStore  # lazy: start-up

        if state_dir:
            raise click.UsageError("--kube and --state-dir are two different stores: give one")
        try:
            return KubeRecordStore(RestKubeApi.from_kubeconfig(kubeconfig), system_namespace)
        except KubeConfigError as exc:  # an input error: exit 2 with the message (app/cli/__init__.py)
            raise KubeConfigError(f"cannot reach the cluster's TrustRecords: {exc}") from None
    store = FileRecordStore(state_dir or default_state_dir())
    if create:
        try:
            store.ensure()
        except StateError as exc:
            raise click.ClickException(str(exc)) from None
    return store


def _record_key(image: str, trust_server: str | None) -> tuple[str, str]:
    from app.images import InvalidImageReference  # lazy: start-up
    from app.notary.servers import record_key  # lazy: start-up

    try:
        return record_key(image, trust_server)
    except InvalidImageReference as exc:
        raise click.BadParameter(str(exc), param_hint="IMAGE") from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


@trust.command()
@click.option("--state-dir", type=click.Path(file_okay=False), help=STATE_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@kube_records_options
def pins(
    state_dir: str | None, as_json: bool, kube: bool, kubeconfig: str | None, system_namespace: str
) -> None:
    """List the recorded roots of trust: server, GUN, root key IDs, versions, first seen when and by whom."""
    from app.notary.state import StateError  # lazy: start-up

    try:
        store = _record_store(state_dir, kube=kube, kubeconfig=kubeconfig, system_namespace=system_namespace)
        records = store.records()
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([r.to_json() for r in records], indent=2))
        return
    if not records:
        click.echo(f"no trust records in {store.description}")
        return
    for record in records:
        versions = " ".join(f"{role}={v}" for role, v in sorted(record.versions.items()))
        click.echo(f"{record.gun}  ({record.server})")
        click.echo(f"  root keys:  {', '.join(record.root_keyids)}")
        click.echo(f"  versions:   {versions}")
        click.echo(f"  first seen: {record.first_seen_at} by {record.first_seen_by} ({record.how})")
        click.echo(f"  updated:    {record.updated_at} by {record.updated_by}")


@trust.command()
@click.argument("image")
@click.option("--trust-server", help="Notary server URL (default: by registry host).")
@ca_file_option("Extra CA bundle for the Notary server.")
@click.option("--state-dir", type=click.Path(file_okay=False), help=STATE_DIR_HELP)
@click.option("--timeout", default=30.0, show_default=True)
@click.option(
    "--pem",
    "pem_file",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the root certificates to this file (for a policy's rootSecrets `publicKeys`).",
)
@kube_records_options
def pin(
    image: str,
    trust_server: str | None,
    ca_file: str | None,
    state_dir: str | None,
    timeout: float,
    pem_file: str | None,
    kube: bool,
    kubeconfig: str | None,
    system_namespace: str,
) -> None:
    """Verify IMAGE's trust data now and record its root deliberately, printing the root key IDs.

    An existing record is kept and must agree (same root, or a valid rotation of it): to accept a
    re-keyed repository, `ostiary trust unpin` it first."""
    from app.images import parse_image  # lazy: start-up
    from app.notary.service import TrustRequest, TrustService  # lazy: start-up
    from app.notary.settings import TrustSettings  # lazy: start-up
    from app.notary.state import StateError, mark_operator_pinned, this_process  # lazy: start-up

    server, gun = _record_key(image, trust_server)
    store = _record_store(
        state_dir, create=True, kube=kube, kubeconfig=kubeconfig, system_namespace=system_namespace
    )
    service = TrustService(TrustSettings(cache_entries=0), ca_file=ca_file, records=store)
    try:
        facts = service.gather(
            [TrustRequest(image=parse_image(image), server=server)], deadline=time.monotonic() + timeout
        )[0]
    finally:
        service.close()
    if facts.get("verified") is not True:
        raise click.ClickException(
            f"not recorded: the trust data of {gun} does not verify: {facts.get('error')}"
        )
    try:
        record = mark_operator_pinned(store, server, gun, f"{this_process()} (ostiary trust pin)")
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"recorded the root of {gun} from {server} in {store.description}")
    click.echo(f"root key IDs (review them): {', '.join(record.root_keyids)}")
    click.echo(f"root version {record.root_version}, {record.root_digest}")
    if pem_file:
        Path(pem_file).write_text(record.root_certificates())
        click.echo(f"root certificates written to {pem_file}")


@trust.command()
@click.argument("image")
@click.option("--trust-server", help="Notary server URL (default: by registry host).")
@click.option("--state-dir", type=click.Path(file_okay=False), help=STATE_DIR_HELP)
@kube_records_options
def unpin(
    image: str,
    trust_server: str | None,
    state_dir: str | None,
    kube: bool,
    kubeconfig: str | None,
    system_namespace: str,
) -> None:
    """Remove IMAGE's trust record: the next admission trusts the repository's current root on first use
    (the documented way to accept a legitimately re-keyed repository)."""
    from app.notary.state import StateError  # lazy: start-up

    server, gun = _record_key(image, trust_server)
    store = _record_store(state_dir, kube=kube, kubeconfig=kubeconfig, system_namespace=system_namespace)
    try:
        removed = store.delete(server, gun)
    except StateError as exc:
        raise click.ClickException(str(exc)) from None
    if not removed:
        raise click.ClickException(f"no trust record of {gun} from {server} in {store.description}")
    click.echo(f"removed the trust record of {gun} from {server}; its next use is a first use again")
