"""Image references, parsed by the docker reference grammar (distribution/reference).

Every decision Ostiary makes is about the *normalized* reference, never the string as written, so
that `nginx`, `docker.io/nginx` and `index.docker.io/library/nginx:latest` are one image and a
policy cannot be evaded by spelling a name differently:

    >>> ref = parse_image("nginx")
    >>> ref.name, ref.tag, ref.digest
    ('docker.io/library/nginx', 'latest', None)
    >>> parse_image("localhost:5000/team/app:1.0@sha256:" + "a" * 64).registry
    'localhost:5000'

Only `sha256:` (64 hex) and `sha512:` (128 hex) digests are valid; anything else makes the whole
reference invalid. Pinning always uses sha256.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from app.errors import InputError

DEFAULT_REGISTRY = "docker.io"
OFFICIAL_PREFIX = "library/"
_LEGACY_DEFAULT = "index.docker.io"  # the only alias Docker's own parser folds (case-sensitively)
_DOCKER_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "docker.io"}

# The docker reference grammar (distribution/reference regexp.go), ASCII only: Python's \w and \d
# match any Unicode letter or digit, Go's do not, so every class is spelled out. fullmatch, never
# match + `$` (which also matches before a trailing newline).
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?")
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
_SHA256_RE = re.compile(r"sha256:[a-f0-9]{64}")
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")
_PATH_MAX = 255  # distribution/reference RepositoryNameTotalLengthMax, on the repository path
# The longest reference that can name a real image: a DNS name (253) and port, the path (255), a
# tag (128) and a sha512 digest (135) stay under 800. Longer text is refused before any regex runs.
MAX_REFERENCE = 1024
_SHOWN = 200  # characters of a refused reference quoted back in a message


class InvalidImageReference(InputError):
    """The text is not a valid image reference; `reason` says which part is wrong."""

    def __init__(self, text: str, reason: str):
        shown = text if len(text) <= _SHOWN else text[:_SHOWN] + "…"
        if len(reason) > _SHOWN:
            reason = reason[:_SHOWN] + "…"
        super().__init__(f"invalid image reference {shown!r}: {reason}")
        self.text = text
        self.reason = reason


@dataclass(frozen=True)
class ImageRef:
    original: str
    registry: str  # lower case, Docker Hub aliases folded: what policies match and secrets key on
    repository: str
    tag: str | None
    digest: str | None
    runtime_name: str = ""  # domain/path as the runtime reads `original` (Docker Hub: docker.io/…)

    @property
    def name(self) -> str:
        """registry/repository, e.g. docker.io/library/nginx; also the Notary GUN."""
        return f"{self.registry}/{self.repository}"

    @property
    def normalized(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    def pinned(self, digest: str) -> str:
        """The reference pinned to `digest`, keeping the tag: domain/path:tag@sha256:...

        The name is the one the runtime reads from the original, host spelling included: folding
        `REGISTRY/app` to `registry/app` would send the pull to Docker Hub (a single lower-case
        first component is a path there), so the pin never changes which registry is asked.
        Docker Hub's aliases are written docker.io/<verified path>, the same registry.
        """
        if not _SHA256_RE.fullmatch(digest):
            raise ValueError(f"refusing to pin to {digest!r}: not a sha256 digest")
        tag = f":{self.tag}" if self.tag is not None else ""
        return f"{self.runtime_name or self.name}{tag}@{digest}"

    def as_input(self) -> dict:
        """The reference as the OPA input document carries it (docs/rego-input.md)."""
        return {
            "valid": True,
            "registry": self.registry,
            "repository": self.repository,
            "name": self.name,
            "tag": self.tag,
            "digest": self.digest,
            "normalized": self.normalized,
        }


def is_host_component(first: str) -> bool:
    """Docker's rule for the first component of a name: a registry host when it is `localhost`,
    contains `.` or `:`, or has an upper-case letter (repository paths are lower case). The one
    rule for image references and policy patterns alike."""
    return first == "localhost" or any(c in first for c in ".:") or first.lower() != first


def normalize_host(domain: str) -> str:
    """The registry as Ostiary matches it: lower-cased (host names are case-insensitive), every
    Docker Hub alias spelled docker.io. Used for image references and policy patterns alike."""
    registry = domain.lower()
    return DEFAULT_REGISTRY if registry in _DOCKER_HUB_ALIASES else registry


def docker_split(name: str) -> tuple[str, str]:
    """Split a name (no tag, no digest) exactly as Docker's splitDockerDomain does: (domain, path).

    The first component is a host when it is `localhost`, contains `.` or `:`, or has an upper-case
    letter (repository paths are lower case); otherwise the name is on Docker Hub.
    """
    first, sep, rest = name.partition("/")
    if not sep:
        return DEFAULT_REGISTRY, OFFICIAL_PREFIX + name
    if first == _LEGACY_DEFAULT:
        domain, path = DEFAULT_REGISTRY, rest
    elif is_host_component(first):
        domain, path = first, rest
    else:
        domain, path = DEFAULT_REGISTRY, name
    if domain == DEFAULT_REGISTRY and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return domain, path


def split_domain(name: str) -> tuple[str, str]:
    """(registry, repository) as Ostiary matches them: Docker's split, the host lower-cased (host
    names are case-insensitive) and every Docker Hub alias spelled docker.io."""
    domain, path = docker_split(name)
    registry = normalize_host(domain)
    if registry == DEFAULT_REGISTRY and "/" not in path:
        path = OFFICIAL_PREFIX + path
    return registry, path


# Valid references parsed lately, by their exact text: the images of a cluster repeat in every
# admission of every replica. ImageRef is immutable, so one is shared safely; refusals are not kept.
# At most PARSED_KEPT entries of at most MAX_REFERENCE characters each (a few MB at worst).
PARSED_KEPT = 1024


def parse_image(text: str) -> ImageRef:
    """Parse and normalize an image reference; raise InvalidImageReference naming the bad part.

    Agrees with the docker reference grammar (tests/unit/test_images_refdiff.py) except where it
    deliberately refuses more (docs/policies.md, "Image references").
    """
    if not isinstance(text, str):
        raise InvalidImageReference(repr(text), "not a string")
    return _parse_kept(str(text))


@functools.lru_cache(maxsize=PARSED_KEPT)
def _parse_kept(text: str) -> ImageRef:
    return _parse(text)


def _parse(text: str) -> ImageRef:  # noqa: C901 - one pass over Docker's grammar, tested against it
    if any(c.isspace() for c in text):
        raise InvalidImageReference(text, "contains whitespace")
    if not text:
        raise InvalidImageReference(text, "empty")
    if len(text) > MAX_REFERENCE:
        raise InvalidImageReference(text, f"longer than {MAX_REFERENCE} characters")
    if not text.isascii():
        raise InvalidImageReference(text, "contains a character that is not ASCII")
    if _IDENTIFIER_RE.fullmatch(text):
        raise InvalidImageReference(text, "64 hex characters are an image ID, not a repository name")
    remainder, digest = text, None
    if "@" in remainder:
        remainder, _, digest = remainder.partition("@")
        if not _DIGEST_RE.fullmatch(digest):
            raise InvalidImageReference(text, f"digest {digest!r} is not sha256:<64 hex> or sha512:<128 hex>")
    tag = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise InvalidImageReference(text, f"tag {tag!r} is not valid")
    if not remainder:
        raise InvalidImageReference(text, "no repository name")
    domain, path = docker_split(remainder)
    if not _DOMAIN_RE.fullmatch(domain):
        raise InvalidImageReference(text, f"registry host {domain!r} is not valid")
    registry, repository = split_domain(remainder)
    for component in repository.split("/"):
        if not _PATH_COMPONENT_RE.fullmatch(component):
            raise InvalidImageReference(
                text,
                f"repository path component {component!r} is not valid "
                "(lowercase letters, digits and separators . _ __ - only)",
            )
    if len(repository) > _PATH_MAX:
        raise InvalidImageReference(text, f"repository path longer than {_PATH_MAX} characters")
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(
        original=text,
        registry=registry,
        repository=repository,
        tag=tag,
        digest=digest,
        # Docker Hub under any alias spelling is pinned by its canonical name and the path that was
        # verified (docker.io/library/nginx, which the runtime sends to the same registry); every
        # other host keeps the spelling the runtime read.
        runtime_name=f"{registry}/{repository}" if registry == DEFAULT_REGISTRY else f"{domain}/{path}",
    )


def is_sha256_digest(value: object) -> bool:
    return isinstance(value, str) and bool(_SHA256_RE.fullmatch(value))
