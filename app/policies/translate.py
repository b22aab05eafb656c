"""Translate a policy resource into the data document OPA holds for it.

The result is data only, never Rego: the JSON document `{"policy": <policy_data>}`, written to OPA
at /v1/data/ostiary_policies/cluster/<name> (or .../namespaced/<namespace>/<name>: a root of their
own, app.policies.model.POLICY_DATA_ROOT), the path the library reads
(`data.ostiary_policies.cluster[name].policy`). OPA stores a document without
compiling it: about 20x less memory and 30-100x less time to take it than the same entries as a
Rego module (docs/performance.md, "Policies as Rego rules or as data"). User values never enter
Rego source. All matching and deciding is done by the static library in rego/ostiary/; the
translator computes once what depends only on the policy (normalized patterns, their regular
expressions, the host-bucket index) and normalizes each repository pattern the same way images
are normalized (docs/policies.md, "Matching"):

- `*` alone matches every image.
- A pattern without `/` is an official Docker Hub name: `ubuntu*` -> `docker.io/library/ubuntu*`.
- With `/`, the first component is a registry host by the image parser's own rule
  (app.images.is_host_component: it contains `.` or `:`, is `localhost`, or has an upper-case
  letter) or when it holds a `*`; otherwise `docker.io/` is put in front. Hosts are normalized as
  image hosts are (app.images.normalize_host). On Docker Hub a one-component path gets
  `library/`: `docker.io/x*` -> `docker.io/library/x*`, but `docker.io/*` stays all of Docker Hub.
- The tag is what follows the last `:` after the last `/`. No tag matches any tag and any digest;
  `:*` matches any tag, but not a digest-only reference (which carries no tag).
- Host, path and tag are matched separately (anchored regular expressions where `*` is the only
  wildcard), so a `*` never spans from the path into the host or into the tag.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from app.images import (
    DEFAULT_REGISTRY,
    OFFICIAL_PREFIX,
    InvalidImageReference,
    is_host_component,
    normalize_host,
    parse_image,
)
from app.notary.servers import normalize_trust_server
from app.policies.model import POLICY_DATA_ROOT, PolicyError, PolicyResource, RegoModule, policy_document_id
from app.signatures.facts import identity_ref
from app.signatures.keyless import EXTENSION_FIELDS as KEYLESS_EXTENSION_FIELDS
from app.signatures.notation import NotationError, trusted_identity

_REGEX_META = set("\\.+*?()|[]{}^$")


@dataclass(frozen=True)
class Pattern:
    written: str
    host: str
    path: str
    tag: str | None

    @property
    def normalized(self) -> str:
        return f"{self.host}/{self.path}" + (f":{self.tag}" if self.tag is not None else "")

    @property
    def exact(self) -> str | None:
        """The image name:tag this pattern equals, when it has a tag and no wildcard."""
        if self.tag is None or "*" in self.normalized:
            return None
        return self.normalized

    @property
    def specificity(self) -> int:
        return len(self.normalized.replace("*", ""))

    @property
    def host_bucket(self) -> str:
        """The key under which the Rego looks this entry up by host (matching.host_keys):
        a literal host under "=" + host (only images of exactly that host try it); a host with a
        wildcard under "*" + the labels after the last label holding a `*` (`*.corp.example.com`
        and `reg*.corp.example.com` under "*corp.example.com"; `*` alone under "*"), so only
        images whose host ends in those labels try it."""
        if "*" not in self.host:
            return "=" + self.host
        labels = self.host.split(".")
        last = max(i for i, label in enumerate(labels) if "*" in label)
        return "*" + ".".join(labels[last + 1 :])

    def as_data(self) -> dict:
        any_tag = self.tag is None
        return {
            "normalized": self.normalized,
            "host": self.host,
            "path": self.path,
            "host_regex": wildcard_regex(self.host),
            "path_regex": wildcard_regex(self.path),
            "any_tag": any_tag,
            "tag": self.tag,
            "tag_regex": None if any_tag else wildcard_regex(self.tag or ""),
            "exact": self.exact,
            "specificity": self.specificity,
            "host_bucket": self.host_bucket,
        }


def wildcard_regex(text: str) -> str:
    """An anchored RE2 regular expression where `*` spans any characters and all else is literal."""
    out = []
    for ch in text:
        if ch == "*":
            out.append(".*")
        elif ch in _REGEX_META:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "^" + "".join(out) + "$"


def parse_pattern(written: str) -> Pattern:
    """Normalize a repository pattern; raise ValueError with a reason when it cannot be a pattern."""
    if not written or written != written.strip() or any(c.isspace() for c in written):
        raise ValueError("a repository name must be non-empty and contain no whitespace")
    if "@" in written:
        raise ValueError("a repository name cannot carry a digest; pin images, not patterns")
    if written == "*":
        return Pattern(written, "*", "*", None)
    name, tag = written, None
    colon, slash = written.rfind(":"), written.rfind("/")
    if colon > slash:
        name, tag = written[:colon], written[colon + 1 :]
        if not tag:
            raise ValueError("empty tag after ':'")
    if "/" not in name:
        return Pattern(written, DEFAULT_REGISTRY, OFFICIAL_PREFIX + name, tag)
    first, _, rest = name.partition("/")
    if "*" in first or is_host_component(first):  # the image parser's host rule, plus wildcard hosts
        host, path = normalize_host(first), rest
    else:
        host, path = DEFAULT_REGISTRY, name
    if not path:
        raise ValueError("no repository path after the registry host")
    if host == DEFAULT_REGISTRY and "/" not in path and path != "*":
        path = OFFICIAL_PREFIX + path
    return Pattern(written, host, path, tag)


def _with_normal_server(policy: dict) -> dict:
    """The entry's policy with trust.trustServer as the verifier names it in its facts (host
    lowercased, no trailing slash), so the Rego compares the two as strings (trust.rego facts_fit).
    A server the verifier cannot use is left as written: gathering from it fails and denies."""
    trust = policy.get("trust")
    if not isinstance(trust, dict):
        return policy
    server = trust.get("trustServer")
    if not isinstance(server, str):
        return policy
    normal, error = normalize_trust_server(server)
    if error is not None or normal == server:
        return policy
    return {**policy, "trust": {**trust, "trustServer": normal}}


def _identity_name(text: str, what: str) -> str:
    """A signedIdentity repository or prefix as images name theirs (host folded, Docker Hub
    expanded); raises ValueError when it is not one."""
    ref = parse_image(text)
    last = text.rsplit("/", 1)[-1]
    if ref.digest is not None or ":" in last and "/" in text:
        raise ValueError(f"{what} {text!r} must name a repository, without tag or digest")
    return ref.name


def simple_identity(identity: dict | None) -> dict:
    """A Portieris `signedIdentity` in the form the Rego compares (signatures.rego identity_ok):
    the type spelled out (default matchRepoDigestOrExact) and every reference parsed as images are.
    Raises ValueError naming the field that is not a reference."""
    identity = dict(identity or {})
    kind = identity.get("type") or "matchRepoDigestOrExact"
    out: dict = {"type": kind}
    if kind == "matchExactReference":
        text = identity["dockerReference"]
        ref = identity_ref(text)
        if ref is None or ref["tag"] is None or ref["digest"] is not None:
            raise ValueError(f"dockerReference {text!r} must be a reference with a tag")
        out.update(dockerReference=text, reference=ref)
    elif kind == "matchExactRepository":
        out.update(
            dockerRepository=identity["dockerRepository"],
            repository=_identity_name(identity["dockerRepository"], "dockerRepository"),
        )
    elif kind == "remapIdentity":
        out.update(prefix=identity["prefix"].rstrip("/"), signedPrefix=identity["signedPrefix"].rstrip("/"))
    return out


def _with_simple(policy: dict) -> dict:
    """The entry's policy with each `simple` requirement's signedIdentity as simple_identity gives it."""
    simple = policy.get("simple")
    if not isinstance(simple, dict) or not isinstance(simple.get("requirements"), list):
        return policy
    requirements = []
    for index, requirement in enumerate(simple["requirements"]):
        if not isinstance(requirement, dict) or requirement.get("type") != "signedBy":
            requirements.append(requirement)
            continue
        try:
            identity = simple_identity(requirement.get("signedIdentity"))
        except (ValueError, InvalidImageReference) as exc:
            raise ValueError(f"simple.requirements[{index}].signedIdentity: {exc}") from None
        requirements.append({**requirement, "signedIdentity": identity})
    return {**policy, "simple": {**simple, "requirements": requirements}}


def _with_cosign(policy: dict) -> dict:
    """The entry's policy with its `cosign.signedIdentity` as simple_identity gives it (default
    matchRepository: cosign signs the repository, not a tag; docs/signatures.md)."""
    cosign = policy.get("cosign")
    if not isinstance(cosign, dict):
        return policy
    try:
        identity = simple_identity(cosign.get("signedIdentity") or {"type": "matchRepository"})
    except (ValueError, InvalidImageReference) as exc:
        raise ValueError(f"cosign.signedIdentity: {exc}") from None
    out = {**cosign, "signedIdentity": identity}
    if isinstance(cosign.get("identities"), list):
        out["identities"] = [keyless_identity(i) for i in cosign["identities"]]
    return {**policy, "cosign": out}


def keyless_identity(identity: dict) -> dict:
    """A `cosign.identities` entry in the form the Rego compares (signatures.rego keyless_ok): the
    exact values, or the regular expressions anchored whole (`^(?:…)$`: cosign's own
    --certificate-identity-regexp matches anywhere in the value, which lets `corp.example` match
    `corp.example.attacker.net`; Ostiary's match the whole value), and the extension fields."""

    def anchored(key: str) -> str | None:
        value = identity.get(key)
        return f"^(?:{value})$" if isinstance(value, str) else None

    return {
        "issuer": identity.get("issuer"),
        "issuer_regex": anchored("issuerRegExp"),
        "subject": identity.get("subject"),
        "subject_regex": anchored("subjectRegExp"),
        "extensions": {k: v for k, v in sorted(identity.items()) if k in KEYLESS_EXTENSION_FIELDS},
        "written": dict(identity),
    }


# Notation's verification levels (trust-store-trust-policy.md, "Signature Verification details"): which
# validations are enforced (a failure fails the signature) and which are logged (a failure is reported
# as a warning and the next validation runs). Integrity is always enforced; `skip` verifies nothing.
NOTATION_VALIDATIONS: dict[str, dict[str, str]] = {
    "strict": {
        "authenticity": "enforce",
        "authenticTimestamp": "enforce",
        "expiry": "enforce",
        "revocation": "enforce",
    },
    "permissive": {
        "authenticity": "enforce",
        "authenticTimestamp": "log",
        "expiry": "log",
        "revocation": "log",
    },
    "audit": {"authenticity": "log", "authenticTimestamp": "log", "expiry": "log", "revocation": "log"},
}


def _notation_validations(verification: dict) -> dict[str, str]:
    level = verification.get("level", "strict")
    override = verification.get("override") or {}
    if level == "skip":
        if override:
            raise ValueError("notation.signatureVerification: the level skip cannot be overridden")
        return {}
    return {"integrity": "enforce", **NOTATION_VALIDATIONS[level], **override}


def _check_notation_skip(notation: dict, name: str) -> None:
    """The level skip names no trust store and no identity, and not for every image (`*`)."""
    extra = sorted(
        k for k in ("caSecret", "caSecretNamespace", "trustStores", "trustedIdentities") if k in notation
    )
    if extra:
        raise ValueError(
            f"notation: the level skip verifies no signature, so it takes no {', '.join(extra)} (remove them)"
        )
    if name.strip() == "*":
        raise ValueError("notation: the level skip cannot apply to every image (`*`); name the repositories")


def _notation_identities(texts: list) -> list:
    """notation.trustedIdentities parsed (trusted_identity): "*" only alone, no two overlapping."""
    if "*" in texts and len(texts) > 1:
        raise ValueError("notation.trustedIdentities: `*` must be the only entry when present")
    try:
        identities = [trusted_identity(text) for text in texts]
    except NotationError as exc:
        raise ValueError(f"notation.trustedIdentities: {exc}") from None
    # Notation: identities must not overlap (a certificate matched by two of them), e.g. a subject and
    # the same subject with one more attribute
    subjects = [
        (text, ident) for text, ident in zip(texts, identities, strict=True) if isinstance(ident, dict)
    ]
    for i, (text_a, a) in enumerate(subjects):
        for text_b, b in subjects[i + 1 :]:
            if a.items() <= b.items() or b.items() <= a.items():
                raise ValueError(
                    f"notation.trustedIdentities: {text_a[:120]!r} and {text_b[:120]!r} overlap "
                    "(a certificate would match both)"
                )
    return identities


def _with_notation(policy: dict, name: str = "") -> dict:
    """The entry's policy with `notation.identities`: each trusted identity as the Rego compares it,
    "*" or the x509 subject as {attribute: value} (C, ST and O required, "*" only alone, as
    Notation's trust policy; docs/signatures.md), the verification level and the action of each
    validation spelled out (`validations`), and the trust stores used (`stores`). `skip` names no
    trust store and no identity, and not for every image (a `*` entry), as Notation requires."""
    notation = policy.get("notation")
    if not isinstance(notation, dict):
        return policy
    verification = notation.get("signatureVerification") or {}
    level = verification.get("level", "strict")
    validations = _notation_validations(verification)
    if level == "skip":
        _check_notation_skip(notation, name)
        return {
            **policy,
            "notation": {**notation, "identities": [], "level": level, "validations": {}, "stores": []},
        }
    if not isinstance(notation.get("trustedIdentities"), list):
        return policy
    identities = _notation_identities(notation["trustedIdentities"])
    stores = list(notation.get("trustStores") or ["ca"])
    if "ca" not in stores and "signingAuthority" not in stores:
        raise ValueError(
            "notation.trustStores: name ca or signingAuthority (a tsa store alone trusts no signer)"
        )
    return {
        **policy,
        "notation": {
            **notation,
            "identities": identities,
            "level": level,
            "validations": validations,
            "stores": stores,
        },
    }


# The verifiers an entry's policy may name besides trust that make it an entry "with requirements"
# (matching.rego documents the order; va and vulnerability are refused by the decision).
REQUIREMENT_VERIFIERS = ("simple", "cosign", "notation", "va", "vulnerability")


def has_requirements(policy: object) -> bool:
    """The entry asks for something beyond "allow": trust.enabled is true, or it names a verifier of
    REQUIREMENT_VERIFIERS with any value but false (as Rego reads `policy[kind]`: only false fails)."""
    if not isinstance(policy, dict):
        return False
    trust = policy.get("trust")
    if isinstance(trust, dict) and trust.get("enabled") is True:
        return True
    return any(kind in policy and policy[kind] is not False for kind in REQUIREMENT_VERIFIERS)


def entry_rank(resource: PolicyResource, index: int, pattern: Pattern, policy: object) -> list:
    """The order in which entries win (docs/policies.md, "Matching"), lowest first: an exact
    pattern, then most non-wildcard characters, then an entry with requirements, then kind,
    namespace ("" for a ClusterImagePolicy), policy name and entry index. It depends on the policy
    alone, so it is computed here once and the Rego compares it (matching.rego `best_of`): an
    exact pattern (a tag, no wildcard) that matches an image equals its name:tag, so exactness needs
    no image either. Unique per entry (the last four tell every entry of a scope apart)."""
    return rank_of(resource, index, pattern, has_requirements(policy))


def rank_of(resource: PolicyResource, index: int, pattern: Pattern, requirements: bool) -> list:
    """entry_rank with has_requirements already known (`ostiary check` orders entries with it)."""
    return [
        0 if pattern.exact is not None else 1,
        -pattern.specificity,
        0 if requirements else 1,
        resource.kind,
        resource.namespace or "",
        resource.name,
        index,
    ]


SIGNATURE_VERIFIERS = ("simple", "cosign", "notation")
UNSUPPORTED_VERIFIERS = ("va", "vulnerability")


def _secret_names(trust: dict, key: str) -> list:
    """The `name` of each Secret a trust field lists, as main.rego reads `s.name` (others skipped)."""
    secrets = trust.get(key)
    items = secrets.values() if isinstance(secrets, dict) else secrets if isinstance(secrets, list) else []
    return [s["name"] for s in items if isinstance(s, dict) and "name" in s]


def entry_needs(policy: dict) -> dict:
    """What an entry's policy asks of an image, as the Rego reads the policy (main.rego
    image_requirements), computed here once instead of in every query: trust enabled (only `true`),
    the trust server it names, the names of its signer and root Secrets, whether it may have
    signature requirements (conservatively: it names a signature verifier at all; the Rego then
    derives them), whether images are pinned (mutateImage is not false) and the unsupported verifiers
    it names (any value but false, as Rego reads `policy[kind]`)."""
    found = policy.get("trust")
    trust: dict = found if isinstance(found, dict) else {}
    server = trust.get("trustServer")
    return {
        "trust": trust.get("enabled") is True,
        "server": server if isinstance(server, str) else None,
        "signers": _secret_names(trust, "signerSecrets"),
        "roots": _secret_names(trust, "rootSecrets"),
        "signatures": any(kind in policy for kind in SIGNATURE_VERIFIERS),
        "mutate": policy.get("mutateImage", True) is not False,
        "unsupported": [k for k in UNSUPPORTED_VERIFIERS if k in policy and policy[k] is not False],
    }


def policy_data(resource: PolicyResource) -> dict:
    """The JSON document the Rego library reads for one policy resource."""
    repositories = []
    for index, entry in enumerate(resource.spec.get("repositories") or []):
        try:
            pattern = parse_pattern(entry["name"])
        except ValueError as exc:
            raise PolicyError(resource.origin, f"spec.repositories[{index}].name", str(exc)) from None
        policy = _with_normal_server(entry.get("policy") or {})
        try:
            policy = _with_notation(_with_cosign(_with_simple(policy)), entry["name"])
        except ValueError as exc:
            raise PolicyError(resource.origin, f"spec.repositories[{index}].policy", str(exc)) from None
        repositories.append(
            {
                "index": index,
                "name": entry["name"],
                "pattern": pattern.as_data(),
                "policy": policy,
                "rank": entry_rank(resource, index, pattern, policy),
                "needs": entry_needs(policy),
            }
        )
    head = {
        "kind": resource.kind,
        "name": resource.name,
        "namespace": resource.namespace,
        "mode": resource.spec.get("mode", "enforce"),
    }
    # The entries' indices by host bucket, built once here rather than in every query: an image
    # looks up only the buckets of its own host (main.rego entries_for).
    by_host: dict[str, list[int]] = {}
    for entry in repositories:
        by_host.setdefault(entry["pattern"]["host_bucket"], []).append(entry["index"])
    # The wildcard buckets with the host suffix each stands for ("*corp.example.com": images of
    # corp.example.com or a host ending in .corp.example.com; "*": every host), so an image looks up
    # its own host's bucket and tests only these suffixes (main.rego entries_in_policies).
    wild = [[key, key[1:], "." + key[1:]] for key in sorted(by_host) if key.startswith("*")]
    return {
        "apiVersion": resource.api_version,
        **head,
        "origin": resource.origin,
        "repositories": repositories,
        "head": head,
        "by_host": by_host,
        "wild": wild,
    }


def module_id(resource: PolicyResource) -> str:
    return policy_document_id(
        None if resource.kind == "ClusterImagePolicy" else resource.namespace, resource.name
    )


def package_path(resource: PolicyResource) -> str:
    if resource.kind == "ClusterImagePolicy":
        return f"{POLICY_DATA_ROOT}.cluster[{json.dumps(resource.name)}]"
    return f"{POLICY_DATA_ROOT}.namespaced[{json.dumps(resource.namespace)}][{json.dumps(resource.name)}]"


def canonical_json(document: object) -> str:
    """The one text of a JSON document: what Ostiary writes to OPA and compares with what OPA holds
    (app/policies/sync.py), so the same document always reads as the same text."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def translate(resource: PolicyResource) -> RegoModule:
    """The data document for one policy resource (see the module docstring)."""
    return RegoModule(
        id=module_id(resource),
        package=package_path(resource),
        source=canonical_json({"policy": policy_data(resource)}),
        origin=resource.origin,
        trust_servers=named_trust_servers(resource) if resource.kind == "ClusterImagePolicy" else frozenset(),
        is_data=True,
    )


MAX_REFUSAL_CHARS = 2000


def refused_module(namespace: str, name: str, origin: str, reason: str) -> RegoModule:
    """The module put in place of an ImagePolicy Ostiary refused in directory mode (invalid, over a
    bound, or not compiled by OPA): a policy of no entries whose `refused` says why. Being a policy
    of the namespace, it keeps the ClusterImagePolicies from applying there, and the library
    denies every image of the namespace with its reason (main.rego `refusals`): fail closed for
    that tenant only. The reason is a string of the data document, cut to MAX_REFUSAL_CHARS."""
    resource = PolicyResource("ostiary.dev/v1", "ImagePolicy", name, namespace, {}, origin)
    if len(reason) > MAX_REFUSAL_CHARS:
        reason = reason[:MAX_REFUSAL_CHARS] + "..."
    data = policy_data(resource)
    data["refused"] = reason
    data["head"]["refused"] = reason
    return RegoModule(
        id=module_id(resource),
        package=package_path(resource),
        source=canonical_json({"policy": data}),
        origin=origin,
        is_data=True,
    )


def entry_trust_servers(resource: PolicyResource) -> list[tuple[int, str]]:
    """(entry index, trust server normalized as the verifier names it) of each entry naming a
    usable trustServer."""
    found = []
    for index, entry in enumerate(resource.spec.get("repositories") or []):
        policy = entry.get("policy") if isinstance(entry, dict) else None
        trust = policy.get("trust") if isinstance(policy, dict) else None
        server = trust.get("trustServer") if isinstance(trust, dict) else None
        if isinstance(server, str):
            normal, error = normalize_trust_server(server)
            if error is None:
                found.append((index, normal))
    return found


def named_trust_servers(resource: PolicyResource) -> frozenset[str]:
    """The trust servers the entries of a policy name."""
    return frozenset(server for _, server in entry_trust_servers(resource))


def cluster_trust_servers(policies: list[PolicyResource]) -> frozenset[str]:
    """The trust servers the ClusterImagePolicies among `policies` name (the operator's)."""
    return frozenset(s for p in policies if p.kind == "ClusterImagePolicy" for s in named_trust_servers(p))
