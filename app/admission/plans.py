"""Plans remembered per policy generation, so a warm admission costs one OPA query, not two.

The plan (which entry applies to each image, and what trust facts it needs) is a function of the
namespace, the image references and the policy modules OPA holds; nothing else in the input
reaches it (main.rego's `plan` reads input.request.namespace, input.images and input.config, and
the config is fixed per process). Pods of one Deployment, and every re-admission of a workload,
ask for the same plan again, so it is kept here under (generation, namespace, images).

The generation is PolicySync's count of writes to OPA: it moves before and after every change to
the module set, so a plan is only stored when no change overlapped its query, and none computed
under an earlier module set is found again once a change has begun.

Why a stale plan could never let anything through: the plan only says which facts to gather. The
decision query derives the requirements again from the modules in force and proves every
trust-enabled image from its facts; facts gathered for another requirement (another trust
server, other signers or signer keys, another root pinning) or no facts at all fail that proof (trust.rego `facts_fit`), and the
image is denied. The worst a stale plan can do is cost a denial during a policy change, exactly
as a policy change between the two queries of one admission can.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from app.lru import TTLCache, json_size

# A plan of up to this many images, whose references together are at most this long, is kept:
# every workload people write, never a hostile review's megabytes of image strings.
MAX_IMAGES = 64
MAX_KEY_CHARS = 16384
# The plans kept weigh at most this much, as serialized JSON (keys and plans): anyone who can reach
# the webhook chooses what is asked, so the budget is in bytes, not only in entries. A plan for a
# Pod of a few images is under 2 KB: thousands fit, and the worker holds a few times this at most.
MAX_BYTES = 8 * 1024 * 1024

Key = tuple[int, str, tuple[tuple[int, str], ...]]


class PlanCache:
    """`generation`: the current generation of OPA's module set (PolicySync.generation)."""

    def __init__(self, generation: Callable[[], int], max_entries: int = 4096, max_bytes: int = MAX_BYTES):
        self._generation = generation
        self._plans: TTLCache[Key, list[dict]] = TTLCache(
            float("inf"), max_entries, max_bytes=max_bytes, size=json_size
        )
        self._kept_generation = -1  # the generation of the plans kept (older ones are dropped)

    def key(self, namespace: str, images: Sequence[tuple[int, str]]) -> Key | None:
        """The key of this admission's plan under the current generation; None when it is not
        one to keep (too many images or too long references)."""
        if len(images) > MAX_IMAGES or sum(len(image) for _, image in images) > MAX_KEY_CHARS:
            return None
        return (self._generation(), namespace, tuple(images))

    def get(self, key: Key | None) -> list[dict] | None:
        """The plan kept under `key`, when its generation is still the current one."""
        if key is None or key[0] != self._generation():
            return None
        found, plan = self._plans.get(key)
        return plan if found else None

    def put(self, key: Key | None, plan: list[dict]) -> None:
        """Keep `plan`, queried under `key`, unless the module set changed meanwhile (its plan may
        then mix the old and the new set: it is used once, never kept)."""
        if key is None or key[0] != self._generation():
            return
        if key[0] != self._kept_generation:
            self._plans.clear()  # plans of an earlier module set are never asked for again
            self._kept_generation = key[0]
        self._plans.put(key, plan)

    def __len__(self) -> int:
        return len(self._plans)

    @property
    def bytes(self) -> int:
        """The serialized size of the plans kept."""
        return self._plans.bytes
