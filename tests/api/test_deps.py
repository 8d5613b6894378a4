"""The dependencies that hand route handlers the lifespan's resources."""

from __future__ import annotations

import pytest

from factq.api.deps import from_state
from factq.settings import Settings
from factq.state.store import Store


def test_a_dependency_names_a_resource_of_the_lifespan_with_its_type() -> None:
    with pytest.raises(TypeError, match="no Settings named 'store'"):
        from_state("store", Settings)
    with pytest.raises(TypeError, match="no Store named 'stores'"):
        from_state("stores", Store)
