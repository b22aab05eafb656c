"""Find every pod spec and image in an admission request (pure functions over dicts).

One table says where each kind keeps its pod spec; Portieris needed a switch per API version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.errors import InputError
from app.images import InvalidImageReference, parse_image
from app.workloads import WORKLOADS

# kind -> JSON path (list of keys) of the pod spec inside the object (app/workloads.py)
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {w.kind: w.pod_spec_path for w in WORKLOADS}
CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")
# Image volumes (core/v1 ImageVolumeSource, `volumes[].image.reference`) are the only other pod-spec
# field naming an image the kubelet pulls (Kubernetes 1.34 API types); `volumes[].rbd.image` names
# a Ceph block image, not a container image. Their sites carry container kind "volumes".
VOLUME_KIND = "volumes"
SITE_KINDS = (*CONTAINER_KINDS, VOLUME_KIND)
# Images in one pod spec at most (the benchmarks go to 1000, docs/performance.md): each one costs
# work in every OPA query, so a spec naming more is refused before its inputs are built.
MAX_IMAGE_SITES = 1000


class BadRequest(InputError):
    """The AdmissionReview itself is malformed; the message names the field."""


@dataclass(frozen=True)
class ImageSite:
    id: int
    path: str  # JSON pointer of the image field, e.g. /spec/containers/0/image
    container_kind: str  # containers | initContainers | ephemeralContainers | volumes
    container: str  # container name, or the volume name for an image volume
    image: str

    def as_input(self) -> dict:
        try:
            ref = parse_image(self.image).as_input()
        except InvalidImageReference as exc:
            ref = {"valid": False, "error": str(exc)}
        return {
            "id": self.id,
            "path": self.path,
            "container": {"kind": self.container_kind, "name": self.container},
            "image": self.image,
            "ref": ref,
        }


def pod_spec(obj: dict, kind: str) -> tuple[dict | None, str]:
    """The pod spec of `obj` and its JSON pointer; (None, "") when the kind carries none.

    A workload kind whose pod spec is missing or null is malformed (the API server requires it),
    and is refused rather than read as "no images": a later mutating webhook could still add some.
    """
    path = POD_SPEC_PATHS.get(kind)
    if path is None:
        return None, ""
    node: Any = obj
    walked = ""
    for key in path:
        if not isinstance(node, dict):
            raise BadRequest(f"{kind}: {walked or '/'} is not an object")
        walked += "/" + key
        node = node.get(key)
        if node is None:
            raise BadRequest(f"{kind}: {walked} is missing")
    if not isinstance(node, dict):
        raise BadRequest(f"{kind}: {walked} is not an object")
    return node, walked


def _list(spec: dict, key: str, base: str) -> list:
    """spec[key] as a list: absent or null is empty; any other type is refused, never skipped."""
    value = spec.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadRequest(f"{base}/{key} is not a list (got {type(value).__name__})")
    return value


def _name(item: dict, where: str) -> str:
    name = item.get("name", "")
    if name is None:
        return ""
    if not isinstance(name, str):
        raise BadRequest(f"{where}/name is not a string (got {type(name).__name__})")
    return name


def _image_text(value: Any, where: str) -> str | None:
    """The image string at `where`; None when blank (the API server refuses blank images in pods,
    templates may leave them for a later webhook to fill). Non-strings are refused."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{where} is not a string (got {type(value).__name__})")
    return value if value.strip() else None


def _check_count(found: list, base: str) -> None:
    if len(found) > MAX_IMAGE_SITES:
        raise BadRequest(
            f"{base or '/'} names more than {MAX_IMAGE_SITES} images, more than Ostiary checks in one pod"
        )


def image_sites(obj: dict, kind: str) -> list[ImageSite]:
    """Every non-blank image the pod spec makes the kubelet pull: each container list, then each
    image volume. Any field of the wrong type is a BadRequest naming it."""
    if not isinstance(obj, dict):
        raise BadRequest("request.object is not an object")
    spec, base = pod_spec(obj, kind)
    if spec is None:
        return []
    found: list[tuple[str, str, str, str]] = []  # (path, kind, name, image)
    for container_kind in CONTAINER_KINDS:
        for index, container in enumerate(_list(spec, container_kind, base)):
            where = f"{base}/{container_kind}/{index}"
            if not isinstance(container, dict):
                raise BadRequest(f"{where} is not an object")
            image = _image_text(container.get("image"), f"{where}/image")
            if image is not None:
                found.append((f"{where}/image", container_kind, _name(container, where), image))
                _check_count(found, base)
    for index, volume in enumerate(_list(spec, VOLUME_KIND, base)):
        where = f"{base}/{VOLUME_KIND}/{index}"
        if not isinstance(volume, dict):
            raise BadRequest(f"{where} is not an object")
        source = volume.get("image")
        if source is None:
            continue
        if not isinstance(source, dict):
            raise BadRequest(f"{where}/image is not an object (got {type(source).__name__})")
        image = _image_text(source.get("reference"), f"{where}/image/reference")
        if image is not None:
            found.append((f"{where}/image/reference", VOLUME_KIND, _name(volume, where), image))
            _check_count(found, base)
    return [ImageSite(i, path, k, name, image) for i, (path, k, name, image) in enumerate(found)]


def pull_secret_names(obj: dict, kind: str) -> list[str]:
    spec, base = pod_spec(obj, kind)
    names = []
    for ref in _list(spec or {}, "imagePullSecrets", base):
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            names.append(ref["name"])
    return names


def service_account_name(obj: dict, kind: str) -> str:
    spec, _ = pod_spec(obj, kind)
    name = (spec or {}).get("serviceAccountName") or (spec or {}).get("serviceAccount")
    return name if isinstance(name, str) and name else "default"
