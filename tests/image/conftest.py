from __future__ import annotations

import pytest

from tests.image.images import ImageMissing, built_images


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    try:
        return built_images()
    except ImageMissing as exc:
        pytest.fail(str(exc), pytrace=False)
