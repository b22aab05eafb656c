"""Apply-time validation of policy resources: the validating admission webhook at POST /validate.

A policy Ostiary would refuse is refused when it is applied (``kubectl apply`` fails with the
reason), by the same steps the cluster source runs: the strict schema, the translation, and a
compile of the translated module in OPA (``PolicySync.compiles``: a scratch id and package that
never take part in a decision, removed right after). DELETE, and every kind that is not one of the
policy kinds, is allowed: this webhook judges policies, not workloads.

A policy that still reaches the cluster (webhook down, failurePolicy Ignore, applied before the
webhook was installed) is refused again by the cluster source, fail closed: its module is not in
force and its resource says why.
"""

from __future__ import annotations

from collections.abc import Callable

from app.admission import respond
from app.errors import InputError
from app.opa.client import OpaError, OpaModuleRefused
from app.policies.kinds import PolicyKind, as_document, kind_of, object_key, origin_of
from app.policies.model import PolicyError, PolicyResource, RegoModule
from app.policies.translate import entry_trust_servers


class BadValidationRequest(InputError):
    """The body is not an AdmissionReview with a request uid (answered 400)."""


def _kind_of(request: dict) -> PolicyKind | None:
    kind = request.get("kind") or {}
    if (
        not isinstance(kind, dict)
        or not isinstance(kind.get("group"), str)
        or not isinstance(kind.get("version"), str)
    ):
        return None
    return kind_of(f"{kind['group']}/{kind['version']}", str(kind.get("kind")))


def validate_review(
    body: object,
    *,
    parse: Callable[[dict, str], PolicyResource],
    translate: Callable[[PolicyResource], RegoModule],
    compiles: Callable[[RegoModule], None],
    trust_server_allowed: Callable[[str], bool] | None = None,
) -> dict:
    """The AdmissionReview answering one validation request (allowed, or denied with the reason)."""
    request = body.get("request") if isinstance(body, dict) else None
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str) or not request["uid"]:
        raise BadValidationRequest("expected an AdmissionReview with request.uid")
    uid = request["uid"]
    kind = _kind_of(request)
    if kind is None or request.get("operation") == "DELETE":
        return respond.allow(uid)
    obj = request.get("object")
    if not isinstance(obj, dict):
        return respond.deny(uid, f"{kind.kind} {kind.api_version}: the request carries no object", code=400)
    if kind.namespaced and not (obj.get("metadata") or {}).get("namespace") and request.get("namespace"):
        obj = {**obj, "metadata": {**(obj.get("metadata") or {}), "namespace": request["namespace"]}}
    origin = origin_of(object_key(kind, obj))
    try:
        resource = parse(as_document(kind, obj), origin)
        module = translate(resource)
    except PolicyError as exc:
        return respond.deny(uid, f"Ostiary refuses this policy: {exc}", code=422)
    except Exception as exc:  # noqa: BLE001 - a translator bug refuses the policy, it never crashes the webhook
        return respond.deny(
            uid,
            f"Ostiary could not translate this policy ({origin}): {exc.__class__.__name__}: {exc}",
            code=422,
        )
    try:
        compiles(module)
    except OpaModuleRefused as exc:
        return respond.deny(
            uid,
            f"Ostiary refuses this policy: OPA does not compile its module {module.id}: {exc.errors}",
            code=422,
        )
    except OpaError as exc:
        return respond.deny(uid, f"Ostiary could not check this policy now (OPA): {exc}; try again", code=503)
    return respond.allow(uid, _unallowed_servers(resource, trust_server_allowed))


def _unallowed_servers(resource: PolicyResource, allowed: Callable[[str], bool] | None) -> list[str]:
    """Warnings for the trust servers of a namespace policy Ostiary will not contact (serve
    --trust-server-allow): the policy is accepted, every image under those entries is denied."""
    if allowed is None or resource.kind == "ClusterImagePolicy":
        return []
    return [
        f"spec.repositories[{index}].policy.trust.trustServer: {server} is not a trust server "
        "namespace policies may name here (the cluster operator allows others with "
        "`ostiary serve --trust-server-allow`); every image under this entry is denied"
        for index, server in entry_trust_servers(resource)
        if not allowed(server)
    ]
