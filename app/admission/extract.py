"""Find the pod spec and every image in an object (pure functions over dicts).

The pod spec is found once per object (`find_workload`), from the one table of where each kind
keeps it (app/workloads.py; Portieris needed a switch per API version); each image site carries its
parsed reference from here to the patch, so an image's text is parsed once per admission.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.admission.decode import BadRequest
from app.images import ImageRef, InvalidImageReference, parse_image
from app.workloads import WORKLOADS

__all__ = ["BadRequest", "ImageSite", "Workload", "find_workload", "image_sites"]

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


@dataclass(frozen=True)
class ImageSite:
    """One image the pod spec names, with its reference parsed once, here: `ref` when the text is a
    valid reference, else `ref_error` (an invalid reference is data for the policy, not an error)."""

    id: int
    path: str  # JSON pointer of the image field, e.g. /spec/containers/0/image
    container_kind: str  # containers | initContainers | ephemeralContainers | volumes
    container: str  # container name, or the volume name for an image volume
    image: str
    ref: ImageRef | None = field(init=False, repr=False, compare=False)
    ref_error: InvalidImageReference | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            ref, error = parse_image(self.image), None
        except InvalidImageReference as exc:
            ref, error = None, exc
        object.__setattr__(self, "ref", ref)
        object.__setattr__(self, "ref_error", error)

    def reference(self) -> ImageRef:
        """The parsed reference; raises the InvalidImageReference of an invalid one."""
        if self.ref is None:
            raise self.ref_error or InvalidImageReference(self.image, "not parsed")
        return self.ref

    def as_input(self) -> dict:
        """The site as the OPA input document carries it (docs/rego-input.md, `input.images[i]`)."""
        ref = self.ref.as_input() if self.ref is not None else {"valid": False, "error": str(self.ref_error)}
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
    node: object = obj
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


def _image_text(value: object, where: str) -> str | None:
    """The image string at `where`; None when blank (the API server refuses blank images in pods,
    templates may leave them for a later webhook to fill). Non-strings are refused."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{where} is not a string (got {type(value).__name__})")
    return value if value.strip() else None


def _object(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise BadRequest(f"{where} is not an object")
    return value


Found = tuple[str, str, str, str]  # (path, container kind, name, image)


def _container_images(spec: dict, base: str) -> list[Found]:
    found: list[Found] = []
    for container_kind in CONTAINER_KINDS:
        for index, item in enumerate(_list(spec, container_kind, base)):
            where = f"{base}/{container_kind}/{index}"
            container = _object(item, where)
            image = _image_text(container.get("image"), f"{where}/image")
            if image is not None:
                found.append((f"{where}/image", container_kind, _name(container, where), image))
                _check_count(len(found), base)
    return found


def _volume_images(spec: dict, base: str, before: int) -> list[Found]:
    found: list[Found] = []
    for index, item in enumerate(_list(spec, VOLUME_KIND, base)):
        where = f"{base}/{VOLUME_KIND}/{index}"
        volume = _object(item, where)
        source = volume.get("image")
        if source is None:
            continue
        if not isinstance(source, dict):
            raise BadRequest(f"{where}/image is not an object (got {type(source).__name__})")
        image = _image_text(source.get("reference"), f"{where}/image/reference")
        if image is not None:
            found.append((f"{where}/image/reference", VOLUME_KIND, _name(volume, where), image))
            _check_count(before + len(found), base)
    return found


def _check_count(found: int, base: str) -> None:
    if found > MAX_IMAGE_SITES:
        raise BadRequest(
            f"{base or '/'} names more than {MAX_IMAGE_SITES} images, more than Ostiary checks in one pod"
        )


@dataclass(frozen=True)
class Workload:
    """An object's pod spec, found once, and what the admission reads from it."""

    spec: dict | None  # None: the kind carries no pod spec
    base: str  # JSON pointer of the pod spec ("" when none)
    sites: list[ImageSite]

    def pull_secret_names(self) -> list[str]:
        names = []
        for ref in _list(self.spec or {}, "imagePullSecrets", self.base):
            if isinstance(ref, dict) and isinstance(ref.get("name"), str):
                names.append(ref["name"])
        return names

    def service_account_name(self) -> str:
        spec = self.spec or {}
        name = spec.get("serviceAccountName") or spec.get("serviceAccount")
        return name if isinstance(name, str) and name else "default"


def find_workload(obj: dict, kind: str) -> Workload:
    """The pod spec of `obj` and every non-blank image it makes the kubelet pull: each container
    list, then each image volume. Any field of the wrong type is a BadRequest naming it."""
    if not isinstance(obj, dict):
        raise BadRequest("request.object is not an object")
    spec, base = pod_spec(obj, kind)
    if spec is None:
        return Workload(None, "", [])
    found = _container_images(spec, base)
    found += _volume_images(spec, base, len(found))
    return Workload(spec, base, [ImageSite(i, *site) for i, site in enumerate(found)])


def image_sites(obj: dict, kind: str) -> list[ImageSite]:
    """The image sites of `obj` (find_workload(obj, kind).sites)."""
    return find_workload(obj, kind).sites
