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

import re
from dataclasses import dataclass

DEFAULT_REGISTRY = "docker.io"
OFFICIAL_PREFIX = "library/"
_DOCKER_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "docker.io"}

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?$"
)
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")
_SHA256_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
_NAME_MAX = 255


class InvalidImageReference(ValueError):
    """The text is not a valid image reference; `reason` says which part is wrong."""

    def __init__(self, text: str, reason: str):
        super().__init__(f"invalid image reference {text!r}: {reason}")
        self.text = text
        self.reason = reason


@dataclass(frozen=True)
class ImageRef:
    original: str
    registry: str
    repository: str
    tag: str | None
    digest: str | None

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
        """The reference pinned to `digest`, keeping the tag: registry/repo:tag@sha256:..."""
        if not _SHA256_RE.match(digest):
            raise ValueError(f"refusing to pin to {digest!r}: not a sha256 digest")
        tag = f":{self.tag}" if self.tag is not None else ""
        return f"{self.name}{tag}@{digest}"

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


def split_domain(name: str) -> tuple[str, str]:
    """Split a name (no tag, no digest) into (registry, repository) with Docker's defaults."""
    first, sep, rest = name.partition("/")
    if not sep or (
        not any(c in first for c in ".:") and first != "localhost" and first.lower() == first
    ):
        registry, repository = DEFAULT_REGISTRY, name
    else:
        registry, repository = first, rest
    registry = registry.lower()  # host names are case-insensitive; match and pin one spelling
    if registry in _DOCKER_HUB_ALIASES:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = OFFICIAL_PREFIX + repository
    return registry, repository


def parse_image(text: str) -> ImageRef:
    """Parse and normalize an image reference; raise InvalidImageReference naming the bad part."""
    if not isinstance(text, str):
        raise InvalidImageReference(repr(text), "not a string")
    if text != text.strip() or any(c.isspace() for c in text):
        raise InvalidImageReference(text, "contains whitespace")
    if not text:
        raise InvalidImageReference(text, "empty")
    remainder, digest = text, None
    if "@" in remainder:
        remainder, _, digest = remainder.partition("@")
        if not _DIGEST_RE.match(digest):
            raise InvalidImageReference(
                text, f"digest {digest!r} is not sha256:<64 hex> or sha512:<128 hex>"
            )
    tag = None
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidImageReference(text, f"tag {tag!r} is not valid")
    if not remainder:
        raise InvalidImageReference(text, "no repository name")
    if len(remainder) > _NAME_MAX:
        raise InvalidImageReference(text, f"name longer than {_NAME_MAX} characters")
    registry, repository = split_domain(remainder)
    if not _DOMAIN_RE.match(registry):
        raise InvalidImageReference(text, f"registry host {registry!r} is not valid")
    for component in repository.split("/"):
        if not _PATH_COMPONENT_RE.match(component):
            raise InvalidImageReference(
                text,
                f"repository path component {component!r} is not valid "
                "(lowercase letters, digits and separators . _ __ - only)",
            )
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(original=text, registry=registry, repository=repository, tag=tag, digest=digest)


def is_sha256_digest(value: object) -> bool:
    return isinstance(value, str) and bool(_SHA256_RE.match(value))
