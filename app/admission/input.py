"""The document OPA reads (docs/rego-input.md), built by one function from one reading of a request.

`read_request` reads an AdmissionReview request once: its kind, object, namespace and the workload
(pod spec and image sites, app/admission/extract.py). `opa_input` turns that into the `input` of the
plan and decision queries. The reviewer, `ostiary check`'s synthetic admissions, the benchmark and
the tests all build the document here, so none of them can drift from what the webhook sends.

The reviewer then adds what it gathers for the decision query (`images[i].trust`,
`images[i].signatures`, `trust_material`); nothing else in the document changes after this.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.admission.decode import BadRequest
from app.admission.extract import POD_SPEC_PATHS, ImageSite, Workload, find_workload
from app.notary.servers import DEFAULT_TRUST_SERVERS


@dataclass(frozen=True)
class Admission:
    """One AdmissionReview request, read once."""

    request: dict
    kind: str  # request.kind.kind
    obj: dict  # request.object
    metadata: dict  # request.object.metadata ({} when absent)
    namespace: str  # request.namespace, else the object's, else ""
    workload: Workload | None  # None: a kind that carries no pod spec Ostiary knows (not checked)

    @property
    def sites(self) -> list[ImageSite]:
        return self.workload.sites if self.workload is not None else []


def _string_field(container: dict, key: str, where: str) -> str | None:
    value = container.get(key)
    if value is None or isinstance(value, str):
        return value
    raise BadRequest(f"{where} is not a string (got {type(value).__name__})")


def read_request(request: dict) -> Admission:
    """The request's kind, object, namespace and workload; BadRequest naming the field that is
    malformed. A kind without a known pod spec is read no further (`workload` None)."""
    gvk = request.get("kind")
    kind = gvk.get("kind") if isinstance(gvk, dict) else None
    if not isinstance(kind, str):
        raise BadRequest("request.kind.kind is missing or not a string")
    obj = request.get("object")
    if not isinstance(obj, dict):
        raise BadRequest("request.object is missing or not an object")
    if kind not in POD_SPEC_PATHS:
        return Admission(request, kind, obj, {}, "", None)
    if obj.get("kind") is not None and obj.get("kind") != kind:
        raise BadRequest(f"request.object.kind {obj.get('kind')!r} is not request.kind.kind {kind!r}")
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise BadRequest("request.object.metadata is not an object")
    workload = find_workload(obj, kind)
    namespace = (
        _string_field(request, "namespace", "request.namespace")
        or _string_field(metadata, "namespace", "request.object.metadata.namespace")
        or ""
    )
    return Admission(request, kind, obj, metadata, namespace, workload)


def input_config(system_namespace: str) -> dict:
    """`input.config`: fixed per process (the plan cache relies on it, app/admission/plans.py)."""
    return {"system_namespace": system_namespace, "trust_servers": dict(DEFAULT_TRUST_SERVERS)}


def opa_input(admission: Admission, config: Mapping[str, object]) -> dict:
    """The `input` of the plan and decision queries for `admission` (docs/rego-input.md). `config` is
    input_config(...)'s document; it is shared, not copied, and nothing may change it."""
    request = admission.request
    return {
        "request": {
            "uid": request.get("uid"),
            "operation": request.get("operation"),
            "kind": request.get("kind"),
            "resource": request.get("resource"),
            "subResource": request.get("subResource"),
            "name": request.get("name") or admission.metadata.get("name"),
            "namespace": admission.namespace,
            "dryRun": bool(request.get("dryRun")),
            "userInfo": request.get("userInfo") or {},
        },
        "object": admission.obj,
        "images": [site.as_input() for site in admission.sites],
        "config": config,
    }
