from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or a skip where a clone has none (users' clones do not)."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"../shared/data is absent ({SHARED_DATA}); this test needs the shared real data")
    return SHARED_DATA
