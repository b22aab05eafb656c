"""Find every pod spec and image in an admission request (pure functions over dicts).

One table says where each kind keeps its pod spec; Portieris needed a switch per API version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.images import InvalidImageReference, parse_image

# kind -> JSON path (list of keys) of the pod spec inside the object
POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "ReplicationController": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
CONTAINER_KINDS = ("initContainers", "containers", "ephemeralContainers")


class BadRequest(ValueError):
    """The AdmissionReview itself is malformed."""


@dataclass(frozen=True)
class ImageSite:
    id: int
    path: str               # JSON pointer of the image field, e.g. /spec/containers/0/image
    container_kind: str     # containers | initContainers | ephemeralContainers
    container: str          # container name
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
    """The pod spec of `obj` and its JSON pointer; (None, "") when the kind carries none."""
    path = POD_SPEC_PATHS.get(kind)
    if path is None:
        return None, ""
    node: Any = obj
    for key in path:
        if not isinstance(node, dict):
            raise BadRequest(f"{kind}: /{'/'.join(path)} is not an object")
        node = node.get(key)
        if node is None:
            return None, ""
    if not isinstance(node, dict):
        raise BadRequest(f"{kind}: /{'/'.join(path)} is not an object")
    return node, "/" + "/".join(path)


def image_sites(obj: dict, kind: str) -> list[ImageSite]:
    """Every non-blank image of every container list in the object's pod spec."""
    spec, base = pod_spec(obj, kind)
    if spec is None:
        return []
    sites: list[ImageSite] = []
    for container_kind in CONTAINER_KINDS:
        containers = spec.get(container_kind) or []
        if not isinstance(containers, list):
            raise BadRequest(f"{base}/{container_kind} is not a list")
        for index, container in enumerate(containers):
            if not isinstance(container, dict):
                raise BadRequest(f"{base}/{container_kind}/{index} is not an object")
            image = container.get("image")
            if image is None or (isinstance(image, str) and image.strip() == ""):
                continue  # blank images are skipped (the API server rejects them for pods)
            sites.append(
                ImageSite(
                    id=len(sites),
                    path=f"{base}/{container_kind}/{index}/image",
                    container_kind=container_kind,
                    container=str(container.get("name", "")),
                    image=image if isinstance(image, str) else repr(image),
                )
            )
    return sites


def pull_secret_names(obj: dict, kind: str) -> list[str]:
    spec, _ = pod_spec(obj, kind)
    names = []
    for ref in (spec or {}).get("imagePullSecrets") or []:
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            names.append(ref["name"])
    return names


def service_account_name(obj: dict, kind: str) -> str:
    spec, _ = pod_spec(obj, kind)
    name = (spec or {}).get("serviceAccountName") or (spec or {}).get("serviceAccount")
    return name if isinstance(name, str) and name else "default"
