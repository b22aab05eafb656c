"""What `ostiary trust capture` records: images named on the command line and every image the given
manifests reference (`-f dir/`), and which Notary server each goes to (`--trust-server [HOST=]URL`).

Pure reading: no network here. The manifests are read by the same reader as `apply` (so a file
`apply` accepts is one `capture -f` accepts), images found by the same extraction as admission.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO

from app.admission.extract import BadRequest, image_sites
from app.errors import InputError
from app.offline.manifests import ManifestError, load_manifests


class TargetError(InputError):
    """The images to capture cannot be determined; the message names the file or option."""


def split_trust_servers(values: Iterable[str]) -> tuple[str | None, dict[str, str]]:
    """`--trust-server` values -> (the URL for every image, {registry host: URL}).

    `URL` alone applies to every image not listed by host; `HOST=URL` to the images of HOST. A URL
    has a scheme, so `https://x` is never read as HOST=URL."""
    default: str | None = None
    by_host: dict[str, str] = {}
    for value in values:
        head, sep, tail = value.partition("=")
        if sep and "://" not in head:
            if not head or not tail:
                raise TargetError(f"--trust-server {value!r}: expected URL or HOST=URL")
            if head in by_host and by_host[head] != tail:
                raise TargetError(f"--trust-server: two servers for registry {head}")
            by_host[head] = tail
        else:
            if default is not None and default != value:
                raise TargetError("--trust-server: give one URL for every image, or HOST=URL per registry")
            default = value
    return default, by_host


def images_to_capture(
    images: Iterable[str], manifest_paths: Iterable[str], stdin: IO[str] | None = None
) -> list[str]:
    """The images named, then those of the manifests in reading order, each once."""
    found = list(images)
    paths = list(manifest_paths)
    if paths:
        try:
            manifests = load_manifests(paths, stdin)
        except ManifestError as exc:
            raise TargetError(str(exc)) from None
        for manifest in manifests:
            kind = manifest.obj.get("kind")
            if not isinstance(kind, str):
                continue
            try:
                sites = image_sites(manifest.obj, kind)
            except BadRequest as exc:
                raise TargetError(f"{manifest.origin}: {exc}") from None
            found.extend(site.image for site in sites)
    unique = list(dict.fromkeys(found))
    if not unique:
        raise TargetError(
            "nothing to capture: name IMAGE... or give manifests with -f"
            + (" (the manifests reference no image)" if paths else "")
        )
    return unique
