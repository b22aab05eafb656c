"""One admission, start to end: extract -> plan (OPA) -> gather trust -> decision (OPA) -> respond.

Every failure on the way ends in a denial with a message that says what went wrong; nothing here
turns an error into an allow.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from app import defaults
from app.admission import respond
from app.admission.decode import BadRequest
from app.admission.extract import ImageSite
from app.admission.input import Admission, input_config, opa_input, read_request
from app.admission.plans import PlanCache
from app.images import ImageRef
from app.notary.keys import material_fingerprint
from app.notary.pins import RootPin, root_pin
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
# The share of an admission's budget the trust and signature gathering may use; the rest is left for
# the decision query and the answer.
TRUST_SHARE = 0.75


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


def decision_answered(path: str, result: object) -> object:
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
        self.clock = clock
        self.plans = plans  # None: every admission asks OPA for its plan
        self.signatures = signatures  # None: images with signature requirements are denied (no facts)
        # serve --root-pins, per normalized trust server (TrustService.default_pins): what the
        # decision must find in the facts of an entry without rootSecrets of its own.
        self.default_root_pins = {server: tuple(pins) for server, pins in (default_root_pins or {}).items()}
        self._input_config: dict = {}

    # ---- entry point ---------------------------------------------------------------------

    def review(self, review: object) -> tuple[dict, Outcome]:
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
        admission = read_request(request)
        if admission.workload is None:
            warning = f"Ostiary does not check kind {admission.kind!r}: it carries no pod spec Ostiary knows"
            return respond.allow(uid, [warning]), Outcome(True, "kind not checked")
        owner_proved = self._owner_approval(uid, admission)
        document = opa_input(admission, self.input_config)
        planned, decided = self._plan(document, admission, deadline)
        if decided is not None:
            return self._respond(uid, decided, admission)
        # A kept plan saves the plan query only: the decision is always asked for, on the modules
        # in force now, and it proves every trust requirement again from the facts (plans.py).
        trust_deadline = start + self.budget * TRUST_SHARE
        self._gather(document, planned, admission, trust_deadline, owner_proved)
        document["trust_material"] = self._trust_material(planned)
        decision = self.opa.query(DECISION_PATH, document, deadline)
        return self._respond(uid, decision, admission)

    @property
    def input_config(self) -> dict:
        """`input.config` (app/admission/input.py), built once per system namespace."""
        if self._input_config.get("system_namespace") != self.system_namespace:
            self._input_config = input_config(self.system_namespace)
        return self._input_config

    def _owner_approval(self, uid: str, admission: Admission) -> bool:
        """Whether an owner's approval spares the network for this object. It spares only that:
        the trust facts of images its template already proved may come from the verified cache
        past its freshness time (for a while, never past the signed expiry: service.OWNER_MAX_AGE).
        The plan, the decision and every custom module still run on this object."""
        sites = admission.sites
        if self.owners is None or not sites:
            return False
        approval = self.owners.approved_by_owner(
            admission.obj, admission.namespace, [(s.container_kind, s.container, s.image) for s in sites]
        )
        if approval:
            log.info("admission %s: %s; deciding on the object itself", uid, approval)
        return bool(approval)

    def _plan(self, document: dict, admission: Admission, deadline: float) -> tuple[list[dict], object]:
        """(the plan's images, the decision the plan query brought when it is final, else None).

        The plan query's decision is final when no image needs trust facts: it was made on exactly
        the input a second query would get (gathering adds facts only for trust-enabled images).
        A kept plan brings no decision: the decision query is asked."""
        sites = admission.sites
        plans = self.plans
        key = plans.key(admission.namespace, [(s.id, s.image) for s in sites]) if plans is not None else None
        planned = plans.get(key) if plans is not None else None
        if planned is not None:
            return planned, None
        plan = self.opa.query(PLAN_PATH, document, deadline)
        planned = self._check_plan(plan, sites)
        if plans is not None:
            plans.put(key, planned)
        decided = decision_answered(PLAN_PATH, plan)
        if decided is not None and not any(trust_requirement(item) for item in planned):
            return planned, decided
        return planned, None

    @staticmethod
    def _check_plan(plan: object, sites: list[ImageSite]) -> list[dict]:
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

    def _pull_secrets(self, admission: Admission) -> list[dict]:
        """The pull secrets of the pod spec and of its service account that exist, in order."""
        workload = admission.workload
        if workload is None:
            return []
        names = workload.pull_secret_names()
        sa = self.store.get_service_account(admission.namespace, workload.service_account_name())
        for ref in (sa or {}).get("imagePullSecrets") or []:
            if isinstance(ref, dict) and isinstance(ref.get("name"), str) and ref["name"] not in names:
                names.append(ref["name"])
        secrets = []
        for name in names:
            secret = self.store.get_secret(admission.namespace, name)
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

    def _signature_request(self, ref: ImageRef, requirement: dict, credentials: tuple) -> SignatureRequest:
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
        self, wanted: list[tuple[dict, ImageSite, list[dict]]], pull_secrets: list[dict], deadline: float
    ) -> None:
        """Signature facts for each (input image, site, requirements), into the input image."""
        if self.signatures is None:
            return
        requests, owners = [], []
        for image, site, requirements in wanted:
            ref = site.reference()
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
        self, document: dict, planned: list[dict], admission: Admission, deadline: float, owner_proved: bool
    ) -> None:
        """The trust and signature facts the plan asks for, added to the input's images. Each
        image's reference is the one parsed at extraction (ImageSite.reference())."""
        signed, trusted = [], []
        for item, image, site in zip(planned, document["images"], admission.sites, strict=True):
            if self.signatures is not None and (requirements := signature_requirements(item)):
                signed.append((image, site, requirements))
            if self.trust is not None and (trust := trust_requirement(item)) is not None:
                trusted.append((image, site, trust))
        if not signed and not trusted:
            return  # the Rego denies images whose facts are missing (no service, or none asked)
        pull_secrets = self._pull_secrets(admission)
        if signed:
            self._gather_signatures(signed, pull_secrets, deadline)
        if trusted:
            self._gather_trust(trusted, pull_secrets, deadline, owner_proved, document["request"]["dryRun"])

    def _gather_trust(
        self,
        wanted: list[tuple[dict, ImageSite, dict]],
        pull_secrets: list[dict],
        deadline: float,
        owner_proved: bool,
        dry_run: bool,
    ) -> None:
        """Trust facts for each (input image, site, trust requirement), into the input image."""
        if self.trust is None:
            return
        requests, signer_errors, order = [], [], []
        for _, site, trust in wanted:
            ref = site.reference()
            signers, errors = self._signers(trust.get("signer_secrets") or [])
            requests.append(
                TrustRequest(
                    image=ref,
                    server=trust["server"],
                    signers=tuple(signers),
                    credentials=tuple(credentials_for(ref.registry, pull_secrets)),
                    root_pins=tuple(self._root_pins(trust.get("root_secrets") or [])),
                    owner_proved=owner_proved,
                    dry_run=dry_run,
                )
            )
            signer_errors.append(errors)
            order.append([s.get("name") for s in trust.get("signer_secrets") or []])
        facts_list = self.trust.gather(requests, deadline)
        if not isinstance(facts_list, list) or len(facts_list) != len(requests):
            raise RuntimeError("the trust service did not return facts for every image")
        for (image, _, _), facts, errors, names in zip(wanted, facts_list, signer_errors, order, strict=True):
            facts["signers"] = _merged_signers(facts, errors, names)
            image["trust"] = facts

    # ---- response ------------------------------------------------------------------------

    def _respond(self, uid: str, decision: object, admission: Admission) -> tuple[dict, Outcome]:
        sites = admission.sites
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
        patch = respond.pin_patch(images, sites)
        record, warning = respond.original_images_patch(admission.obj, sites, patch)
        if warning:
            warnings.append(warning)
        return respond.allow(uid, warnings, patch + record), Outcome(True, "allowed", images, pins=patch)


def _merged_signers(facts: dict, errors: dict[str, str], names: list[str]) -> list[dict]:
    """The signer facts in policy order: the service's for the secrets that resolved, an error fact
    for each that did not (Reviewer._signers)."""
    by_secret = {s.get("secret"): s for s in facts.get("signers") or []}
    merged: list[dict] = []
    for name in names:
        if name in errors:
            merged.append(
                {"name": None, "secret": name, "role": None, "keyids": [], "error": errors[name], "key": None}
            )
        elif name in by_secret:
            merged.append(by_secret[name])
    return merged
