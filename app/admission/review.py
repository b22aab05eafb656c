"""One admission, start to end: extract -> plan (OPA) -> gather trust -> decision (OPA) -> respond.

Every failure on the way ends in a denial with a message that says what went wrong; nothing here
turns an error into an allow.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app import defaults
from app.admission import respond
from app.admission.extract import (
    POD_SPEC_PATHS,
    BadRequest,
    ImageSite,
    image_sites,
    pull_secret_names,
    service_account_name,
)
from app.admission.plans import PlanCache
from app.images import parse_image
from app.notary.keys import material_fingerprint
from app.notary.pins import RootPin, root_pin
from app.notary.servers import DEFAULT_TRUST_SERVERS
from app.notary.service import Signer, TrustRequest
from app.opa.client import OpaError
from app.ports import ObjectStore, OwnerVerifier, PolicyQuery, SignatureGatherer, TrustGatherer
from app.registry.credentials import credentials_for, secret_value
from app.signatures.port import NOTATION_STORE_KEYS, SignatureRequest

log = logging.getLogger("ostiary.admission")

PLAN_PATH = "ostiary/main/plan"
DECISION_PATH = "ostiary/main/decision"
CHECKED_OPERATIONS = ("CREATE", "UPDATE")
UNCHECKED_OPERATIONS = ("DELETE", "CONNECT")  # carry no new pod spec to run
# Deeper than any object of a kind Ostiary checks (a CronJob's pod spec affinity terms sit ~15
# levels down, managedFields ~20); the limit keeps every later walk, dump and OPA call bounded.
MAX_DEPTH = 100
# Values and keys in one AdmissionReview at most: a Deployment of 100 containers with 50 variables
# each, in an UPDATE that carries it twice with its managedFields, has about 100,000. Decoding costs
# about 100 bytes and half a microsecond per value, and 7 MiB of `[{},{},…]` are 4.8 million of
# them: such a body is refused before anything is built.
MAX_VALUES = 200_000
_STRING = re.compile(rb'"[^"]*"')  # a JSON string once its escaped backslashes and quotes are gone


class _Pairs(dict):
    """A JSON object that had a key more than once (kept, so the walk can name where)."""

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()
    marked = _Pairs(obj)
    marked.duplicates = [k for k, _ in pairs if k in seen or seen.add(k)]  # type: ignore[func-returns-value]
    return marked


def _refuse_constant(name: str) -> Any:
    raise BadRequest(f"{name} is not JSON")


def _pointer(path: list[str]) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path) if path else "(top level)"


def _path_to(root: Any, target: Any) -> list[str]:
    """The keys leading from root to target (by identity); only run to word an error."""
    stack: list[tuple[Any, list[str]]] = [(root, [])]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        stack.extend((v, [*path, str(k)]) for k, v in items if isinstance(v, (dict, list)))
    return []


def _check_tree(root: Any) -> None:
    """Refuse duplicated keys and nesting deeper than MAX_DEPTH, naming the place.

    Level by level, so it is iterative and costs one step per object or array; the path is only
    spelled out (a second walk) when there is something to refuse.
    """
    level = [root] if isinstance(root, (dict, list)) else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_DEPTH:
            where = _pointer(_path_to(root, level[0])[:8])
            raise BadRequest(f"nested deeper than {MAX_DEPTH} levels at {where}/…")
        below: list = []
        for node in level:
            if isinstance(node, dict):
                if type(node) is _Pairs:
                    raise BadRequest(
                        f"key {node.duplicates[0]!r} appears more than once in the object at "
                        f"{_pointer(_path_to(root, node))}; a duplicated key can show one parser a "
                        "different value than another, so it is refused"
                    )
                below.extend([v for v in node.values() if isinstance(v, (dict, list))])
            else:
                below.extend([v for v in node if isinstance(v, (dict, list))])
        level = below


def count_values(raw: bytes, limit: int = MAX_VALUES) -> int:
    """The number of values and keys a JSON text holds, counted on the bytes at C speed (each
    follows a `[`, `{`, `,` or `:` outside any string), as far as it matters against `limit`: over
    the limit only when the text holds more than `limit` (empty containers count one), never under
    it when it does. For text that is not JSON it still bounds what a decoder builds before it stops."""
    bare = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    strings = bare.count(b'"') // 2  # every string is a value or a key
    if strings > limit:
        return strings
    separators = (b"[", b"{", b",", b":")
    rough = sum(bare.count(c) for c in separators)  # separators inside strings too: at least the count
    if rough <= limit:
        return rough
    bare = _STRING.sub(b"", bare)  # at most `limit` strings to drop
    return sum(bare.count(c) for c in separators)


def parse_review(raw: bytes) -> Any:
    """Decode an AdmissionReview body strictly: UTF-8 JSON, no NaN/Infinity, no duplicated keys,
    at most MAX_DEPTH levels and MAX_VALUES values. Raises BadRequest saying what is wrong and where."""
    if count_values(raw) > MAX_VALUES:
        raise BadRequest(
            f"the JSON holds more than {MAX_VALUES} values and keys, more than any workload Ostiary checks"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        body = json.loads(text, object_pairs_hook=_pairs_hook, parse_constant=_refuse_constant)
    except RecursionError:
        raise BadRequest(f"the JSON is nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise BadRequest(f"the body is not JSON Ostiary can read: {exc}") from None
    _check_tree(body)
    return body


def request_uid(body: Any) -> str | None:
    """request.uid when the body has one (for answering a request Ostiary will deny anyway)."""
    request = body.get("request") if isinstance(body, dict) else None
    uid = request.get("uid") if isinstance(request, dict) else None
    return uid if isinstance(uid, str) and uid else None


def _string_field(container: dict, key: str, where: str) -> str | None:
    value = container.get(key)
    if value is None or isinstance(value, str):
        return value
    raise BadRequest(f"{where} is not a string (got {type(value).__name__})")


@dataclass
class Outcome:
    """What happened, for metrics and logs."""

    allowed: bool
    reason: str = ""
    images: list[dict] = field(default_factory=list)
    error: bool = False
    # The pin operations of the answer's JSONPatch as built from the decision (respond.pin_patch),
    # so the decision log summarizes them without decoding the patch it was sent as.
    pins: list[dict] = field(default_factory=list)


def trust_requirement(planned_image: dict | None) -> dict | None:
    """The trust requirement of one planned image when it asks for verified facts (enabled, with a
    server to ask), else None: the one test of whether an image needs trust facts gathered."""
    trust = ((planned_image or {}).get("requirements") or {}).get("trust") or {}
    return trust if trust.get("enabled") is True and isinstance(trust.get("server"), str) else None


def signature_requirements(planned_image: dict | None) -> list[dict]:
    """The signature requirements of one planned image that Ostiary's verifiers check (signedBy, keyless;
    the others decide without facts): the one test of which signature facts are gathered."""
    requirements = ((planned_image or {}).get("requirements") or {}).get("signatures") or []
    return [r for r in requirements if isinstance(r, dict) and r.get("type") in ("signedBy", "keyless")]


def decision_answered(path: str, result: Any) -> Any:
    """The decision a query answered with: the decision query's result, or the decision the plan
    query brings when no image needs trust facts; None when the query decided nothing."""
    if path == DECISION_PATH:
        return result
    if path == PLAN_PATH and isinstance(result, dict):
        return result.get("decision")
    return None


class Reviewer:
    def __init__(
        self,
        opa: PolicyQuery,
        store: ObjectStore,
        *,
        trust: TrustGatherer | None = None,
        owners: OwnerVerifier | None = None,
        system_namespace: str = "ostiary-system",
        budget: float = defaults.BUDGET_SECONDS,
        trust_share: float = 0.75,
        clock: Callable[[], float] = time.monotonic,
        plans: PlanCache | None = None,
        signatures: SignatureGatherer | None = None,
        default_root_pins: Mapping[str, Sequence[RootPin]] | None = None,
    ):
        self.opa = opa
        self.store = store
        self.trust = trust
        self.owners = owners
        self.system_namespace = system_namespace
        self.budget = budget
        self.trust_share = trust_share
        self.clock = clock
        self.plans = plans  # None: every admission asks OPA for its plan
        self.signatures = signatures  # None: images with signature requirements are denied (no facts)
        # serve --root-pins, per normalized trust server (TrustService.default_pins): what the
        # decision must find in the facts of an entry without rootSecrets of its own.
        self.default_root_pins = {server: tuple(pins) for server, pins in (default_root_pins or {}).items()}

    # ---- entry point ---------------------------------------------------------------------

    def review(self, review: Any) -> tuple[dict, Outcome]:
        """An AdmissionReview in, an AdmissionReview (with response) out. Raises BadRequest only
        when there is no request uid to answer to."""
        if not isinstance(review, dict) or not isinstance(review.get("request"), dict):
            raise BadRequest("body is not an AdmissionReview with a request")
        request = review["request"]
        uid = request.get("uid")
        if not isinstance(uid, str) or not uid:
            raise BadRequest("request.uid is missing")
        if review.get("apiVersion") != respond.API_VERSION or review.get("kind") != "AdmissionReview":
            return self._deny(uid, f"expected an AdmissionReview of {respond.API_VERSION}")
        try:
            return self._review(uid, request)
        except BadRequest as exc:
            return self._deny(uid, f"Ostiary could not read the object: {exc}")
        except OpaError as exc:
            return self._deny(
                uid, f"Ostiary denied the request because the policy engine failed: {exc}", error=True
            )
        except Exception as exc:  # fail closed on anything unexpected, and say so
            log.exception("admission %s failed", uid)
            return self._deny(
                uid,
                f"Ostiary denied the request because of an internal error: {exc.__class__.__name__}: {exc}",
                error=True,
            )

    def _deny(self, uid: str, message: str, error: bool = False) -> tuple[dict, Outcome]:
        return respond.deny(uid, message), Outcome(False, message, error=error)

    # ---- the flow ------------------------------------------------------------------------

    def _review(self, uid: str, request: dict) -> tuple[dict, Outcome]:
        start = self.clock()
        deadline = start + self.budget
        operation = request.get("operation")
        if operation in UNCHECKED_OPERATIONS:
            return respond.allow(uid), Outcome(True, f"operation {operation} is not checked")
        if operation not in CHECKED_OPERATIONS:
            raise BadRequest(f"request.operation {operation!r} is not CREATE, UPDATE, DELETE or CONNECT")
        gvk = request.get("kind")
        kind = gvk.get("kind") if isinstance(gvk, dict) else None
        if not isinstance(kind, str):
            raise BadRequest("request.kind.kind is missing or not a string")
        obj = request.get("object")
        if not isinstance(obj, dict):
            raise BadRequest("request.object is missing or not an object")
        if kind not in POD_SPEC_PATHS:
            warning = f"Ostiary does not check kind {kind!r}: it carries no pod spec Ostiary knows"
            return respond.allow(uid, [warning]), Outcome(True, "kind not checked")
        if obj.get("kind") is not None and obj.get("kind") != kind:
            raise BadRequest(f"request.object.kind {obj.get('kind')!r} is not request.kind.kind {kind!r}")
        metadata = obj.get("metadata")
        if metadata is None:
            metadata = {}
        if not isinstance(metadata, dict):
            raise BadRequest("request.object.metadata is not an object")
        sites = image_sites(obj, kind)
        namespace = (
            _string_field(request, "namespace", "request.namespace")
            or _string_field(metadata, "namespace", "request.object.metadata.namespace")
            or ""
        )

        # An owner's approval spares only the network: the trust facts of images its template
        # already proved may come from the verified cache past its freshness time (for a while, never
        # past the signed expiry: service.OWNER_MAX_AGE). The plan, the decision and every custom
        # module still run on this object.
        owner_approval = None
        if self.owners is not None and sites:
            owner_approval = self.owners.approved_by_owner(
                obj, namespace, [(s.container_kind, s.container, s.image) for s in sites]
            )
            if owner_approval:
                log.info("admission %s: %s; deciding on the object itself", uid, owner_approval)

        opa_input = self._input(request, obj, namespace, sites)
        key = self.plans.key(namespace, [(s.id, s.image) for s in sites]) if self.plans is not None else None
        planned = self.plans.get(key) if self.plans is not None else None
        if planned is None:
            plan = self.opa.query(PLAN_PATH, opa_input, deadline)
            planned = self._check_plan(plan, sites)
            if self.plans is not None:
                self.plans.put(key, planned)
            decided = decision_answered(PLAN_PATH, plan)
            if decided is not None and not any(trust_requirement(item) for item in planned):
                # No image needs trust facts: the plan query decided already, on exactly the input a
                # second query would get (gathering adds facts only for trust-enabled images).
                return self._respond(uid, decided, sites, obj)
        # A kept plan saves the plan query only: the decision is always asked for, on the modules
        # in force now, and it proves every trust requirement again from the facts (plans.py).
        trust_deadline = start + self.budget * self.trust_share
        self._gather(opa_input, planned, obj, kind, namespace, trust_deadline, bool(owner_approval))
        opa_input["trust_material"] = self._trust_material(planned)
        decision = self.opa.query(DECISION_PATH, opa_input, deadline)
        return self._respond(uid, decision, sites, obj)

    def _input(self, request: dict, obj: dict, namespace: str, sites: list[ImageSite]) -> dict:
        return {
            "request": {
                "uid": request.get("uid"),
                "operation": request.get("operation"),
                "kind": request.get("kind"),
                "resource": request.get("resource"),
                "subResource": request.get("subResource"),
                "name": request.get("name") or (obj.get("metadata") or {}).get("name"),
                "namespace": namespace,
                "dryRun": bool(request.get("dryRun")),
                "userInfo": request.get("userInfo") or {},
            },
            "object": obj,
            "images": [s.as_input() for s in sites],
            "config": {
                "system_namespace": self.system_namespace,
                "trust_servers": dict(DEFAULT_TRUST_SERVERS),
            },
        }

    @staticmethod
    def _check_plan(plan: Any, sites: list[ImageSite]) -> list[dict]:
        images = plan.get("images") if isinstance(plan, dict) else None
        if not isinstance(images, list) or len(images) != len(sites):
            raise OpaError("the plan from OPA does not cover every image")
        return images

    # ---- trust ---------------------------------------------------------------------------

    def _signers(self, secrets: list[dict]) -> tuple[list, dict[str, str]]:
        """Signer objects for the secrets that resolve, and an error fact for each that does not."""
        signers, errors = [], {}
        for ref in secrets:
            name, ns = str(ref.get("name")), str(ref.get("namespace"))
            secret = self.store.get_secret(ns, name)
            if secret is None:
                errors[name] = f"secret {name} not found in namespace {ns}"
                continue
            signer_name = secret_value(secret, "name")
            pem = secret_value(secret, "publicKey")
            if not signer_name or not pem:
                errors[name] = f"secret {ns}/{name} must hold base64 `name` and `publicKey`"
                continue
            signers.append(Signer(secret=name, name=signer_name.strip(), public_key_pem=pem))
        return signers, errors

    def _root_pins(self, secrets: list[dict]) -> list:
        """Pinned root material (policy `trust.rootSecrets`): a Secret that is missing or unusable
        becomes a pin with an error, which denies the image (no fall-back to trust on first use)."""
        pins = []
        for ref in secrets:
            name, ns = str(ref.get("name")), str(ref.get("namespace"))
            secret = self.store.get_secret(ns, name)
            if secret is None:
                pins.append(RootPin(name, error=f"root secret {name} not found in namespace {ns}"))
                continue
            pins.append(
                root_pin(
                    f"{ns}/{name}", secret_value(secret, "publicKeys"), secret_value(secret, "caCertificates")
                )
            )
        return pins

    def _trust_material(self, planned: list[dict]) -> dict:
        """What the secrets and pins a requirement names hold *now* (read after the facts were
        gathered), for the decision to prove the facts against (docs/rego-input.md,
        `trust_material`): the fingerprint of each root secret's pins and of each signer secret's
        key, and the `--root-pins` of each trust server. A secret changed while the facts were
        gathered then no longer matches them, and the image is denied."""
        roots: dict[str, str] = {}
        signers: dict[str, str | None] = {}
        for item in planned:
            trust = trust_requirement(item)
            if trust is None:
                continue
            for ref in trust.get("root_secrets") or []:
                [pin] = self._root_pins([ref])
                roots[f"{ref.get('namespace')}/{ref.get('name')}"] = pin.fingerprint
            for ref in trust.get("signer_secrets") or []:
                name, ns = str(ref.get("name")), str(ref.get("namespace"))
                secret = self.store.get_secret(ns, name)
                pem = secret_value(secret, "publicKey") if secret is not None else None
                signers[f"{ns}/{name}"] = material_fingerprint(pem)
        return {
            "root_secrets": roots,
            "signer_secrets": signers,
            "root_pins": {
                server: sorted(pin.fingerprint for pin in pins)
                for server, pins in self.default_root_pins.items()
            },
        }

    def _pull_secrets(self, obj: dict, kind: str, namespace: str) -> list[dict]:
        names = pull_secret_names(obj, kind)
        sa = self.store.get_service_account(namespace, service_account_name(obj, kind))
        for ref in (sa or {}).get("imagePullSecrets") or []:
            if isinstance(ref, dict) and isinstance(ref.get("name"), str) and ref["name"] not in names:
                names.append(ref["name"])
        secrets = []
        for name in names:
            secret = self.store.get_secret(namespace, name)
            if secret is not None:
                secrets.append(secret)
        return secrets

    def _key_material(
        self, ref: dict | None, what: str, keys: tuple[str, ...]
    ) -> tuple[str, bytes | None, str | None]:
        """("namespace/name", the value of the Secret's first of `keys` it has, why it is unusable)."""
        ref = ref or {}
        name, ns = ref.get("name"), ref.get("namespace")
        where = f"{ns}/{name}"
        if not isinstance(name, str) or not isinstance(ns, str):
            return where, None, f"{what} is not named"
        secret = self.store.get_secret(ns, name)
        if secret is None:
            return where, None, f"{what} {name} not found in namespace {ns}"
        value = next((v for key in keys if (v := secret_value(secret, key))), None)
        if not value:
            return where, None, f"{what} {where} has no {' or '.join(f'`{k}`' for k in keys)}"
        return where, value.encode(), None

    def _signature_request(self, ref: Any, requirement: dict, credentials: tuple) -> SignatureRequest:
        # cosign's own Secrets (cosign generate-key-pair k8s://…) hold the public key as `cosign.pub`
        names = {"cosign": ("key", "cosign.pub"), "notation": ("ca.crt",)}.get(
            str(requirement.get("format")), ("key",)
        )
        keys: tuple[tuple[str, bytes], ...] = ()
        errors: list[str] = []
        if requirement.get("type") == "keyless":  # identities, not keys: no Secret to read
            pass
        elif requirement.get("format") == "notation":
            # one Secret, one key per trust store the policy uses (app/signatures/notation.py STORE_KEYS)
            for store in requirement.get("stores") or ["ca"]:
                key = NOTATION_STORE_KEYS.get(str(store))
                if key is None:
                    errors.append(f"unknown Notation trust store {str(store)[:40]!r}")
                    continue
                where, material, error = self._key_material(
                    requirement.get("key_secret"), "trust store secret", (key,)
                )
                keys += ((f"{where} {key}", material),) if material is not None else ()
                errors += [error] if error else []
        else:
            where, material, error = self._key_material(requirement.get("key_secret"), "key secret", names)
            keys = ((where, material),) if material is not None else ()
            errors += [error] if error else []
        store_credentials: tuple[tuple[str, str], ...] = ()
        store = requirement.get("store") or {}
        store_errors: list[str] = []
        if isinstance(store, dict) and store.get("secret") is not None:
            secret_ref = store["secret"]
            secret = self.store.get_secret(str(secret_ref.get("namespace")), str(secret_ref.get("name")))
            username = secret_value(secret, "username") if secret else None
            password = secret_value(secret, "password") if secret else None
            if not username or not password:
                store_errors.append(
                    f"store secret {secret_ref.get('namespace')}/{secret_ref.get('name')} is missing or "
                    "lacks `username` and `password`"
                )
            else:
                store_credentials = ((username, password),)
        return SignatureRequest(
            image=ref,
            requirement=requirement,
            keys=keys,
            key_errors=tuple(errors + store_errors),
            credentials=credentials,
            store_credentials=store_credentials,
        )

    def _gather_signatures(
        self, opa_input: dict, planned: list[dict], obj: dict, kind: str, namespace: str, deadline: float
    ) -> None:
        wanted = [
            (image, requirements)
            for item, image in zip(planned, opa_input["images"], strict=False)
            if (requirements := signature_requirements(item))
        ]
        if not wanted or self.signatures is None:
            return  # the Rego denies: signature facts unavailable
        pull_secrets = self._pull_secrets(obj, kind, namespace)
        requests, owners = [], []
        for image, requirements in wanted:
            ref = parse_image(image["image"])
            credentials = tuple(credentials_for(ref.registry, pull_secrets))
            for requirement in requirements:
                requests.append(self._signature_request(ref, requirement, credentials))
                owners.append(image)
        facts_list = self.signatures.gather(requests, deadline)
        if not isinstance(facts_list, list) or len(facts_list) != len(requests):
            raise RuntimeError("the signature service did not return facts for every requirement")
        for image, facts in zip(owners, facts_list, strict=True):
            image.setdefault("signatures", []).append(facts)

    def _gather(
        self,
        opa_input: dict,
        planned: list[dict],
        obj: dict,
        kind: str,
        namespace: str,
        deadline: float,
        owner_proved: bool = False,
    ) -> None:
        self._gather_signatures(opa_input, planned, obj, kind, namespace, deadline)
        wanted = []
        for item, image in zip(planned, opa_input["images"], strict=False):
            trust = trust_requirement(item)
            if trust is not None:
                wanted.append((image, trust))
        if not wanted or self.trust is None:
            return  # the Rego denies trust-enabled images without facts
        pull_secrets = self._pull_secrets(obj, kind, namespace)
        requests, signer_errors, order = [], [], []
        for image, trust in wanted:
            ref = parse_image(image["image"])
            signers, errors = self._signers(trust.get("signer_secrets") or [])
            requests.append(
                TrustRequest(
                    image=ref,
                    server=trust["server"],
                    signers=tuple(signers),
                    credentials=tuple(credentials_for(ref.registry, pull_secrets)),
                    root_pins=tuple(self._root_pins(trust.get("root_secrets") or [])),
                    owner_proved=owner_proved,
                    dry_run=opa_input["request"]["dryRun"],
                )
            )
            signer_errors.append(errors)
            order.append([s.get("name") for s in trust.get("signer_secrets") or []])
        facts_list = self.trust.gather(requests, deadline)
        if not isinstance(facts_list, list) or len(facts_list) != len(requests):
            raise RuntimeError("the trust service did not return facts for every image")
        for (image, _), facts, errors, names in zip(wanted, facts_list, signer_errors, order, strict=False):
            by_secret = {s.get("secret"): s for s in facts.get("signers") or []}
            merged = []
            for name in names:
                if name in errors:
                    merged.append(
                        {
                            "name": None,
                            "secret": name,
                            "role": None,
                            "keyids": [],
                            "error": errors[name],
                            "key": None,
                        }
                    )
                elif name in by_secret:
                    merged.append(by_secret[name])
            facts["signers"] = merged
            image["trust"] = facts

    # ---- response ------------------------------------------------------------------------

    def _respond(self, uid: str, decision: Any, sites: list[ImageSite], obj: dict) -> tuple[dict, Outcome]:
        if not isinstance(decision, dict) or not isinstance(decision.get("allowed"), bool):
            raise OpaError("the decision from OPA has no boolean `allowed`")
        images = decision.get("images")
        if not isinstance(images, list) or len(images) != len(sites):
            raise OpaError("the decision from OPA does not cover every image")
        warnings = [w for w in decision.get("warnings") or [] if isinstance(w, str)]
        denials = [d for d in decision.get("denials") or [] if isinstance(d, str)]
        if not decision["allowed"] or any(not i.get("allowed") for i in images):
            message = "Ostiary denied the request: " + ("; ".join(denials) or "denied by policy")
            return respond.deny(uid, message, warnings), Outcome(False, message, images)
        patch = respond.pin_patch(images)
        record, warning = respond.original_images_patch(obj, sites, patch)
        if warning:
            warnings.append(warning)
        return respond.allow(uid, warnings, patch + record), Outcome(True, "allowed", images, pins=patch)
