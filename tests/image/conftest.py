from __future__ import annotations

import pytest

from tests.image.images import built_images
from tests.node.cluster import NodeError


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    try:
        return built_images()
    except NodeError as exc:
        pytest.fail(str(exc), pytrace=False)
