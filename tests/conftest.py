"""Shared test helpers: where ``../shared`` is, and skips when it is absent."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BEAT2 = SHARED / "fixtures" / "beat2"
EMAGE_REF = SHARED / "reference" / "emage"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"needs {path} (the shared test data beside the repository); absent here")
    return path


@pytest.fixture
def beat2_dir() -> Path:
    """The real BEAT2 sample (CC BY-NC 4.0, read-only; never copied into the repo)."""
    return _need(BEAT2)


@pytest.fixture
def beat2_npz(beat2_dir) -> Path:
    return _need(beat2_dir / "2_scott_0_1_1.npz")


@pytest.fixture
def emage_ref() -> Path:
    return _need(EMAGE_REF)
