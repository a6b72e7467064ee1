"""Shared test helpers: where ``../shared`` is, and what a skip means.

A test skips when something it needs is missing: the shared data beside the repository, offscreen
OpenGL (EGL), Debian's Chromium, a test requirement. CI has all of them, so `.ci/run` sets
``EMAGE_STUDIO_STRICT_TESTS=1``, under which every such skip is a failure with its reason. Only skips
whose reason starts with ``optional:`` (a GPU, an optional package that is not a test requirement)
stay skips there. The README's test command prints every skip reason (``-rs``).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
BEAT2 = SHARED / "fixtures" / "beat2"
EMAGE_REF = SHARED / "reference" / "emage"

STRICT_ENV = "EMAGE_STUDIO_STRICT_TESTS"
OPTIONAL = "optional: "


def strict() -> bool:
    return os.environ.get(STRICT_ENV, "") not in ("", "0")


def need(path: Path) -> Path:
    """``path`` from the shared test data, or a skip naming it."""
    if not path.exists():
        pytest.skip(f"needs {path} (the shared test data beside the repository); absent here")
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under the strict switch a skip for something CI has is a failure (``optional:`` ones excepted)."""
    outcome = yield
    report = outcome.get_result()
    if not (strict() and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if reason.startswith(OPTIONAL):
        return
    report.outcome = "failed"
    report.longrepr = f"would skip, but {STRICT_ENV} is set (CI has what this test needs): {reason}"


@pytest.fixture
def beat2_dir() -> Path:
    """The real BEAT2 sample (CC BY-NC 4.0, read-only; never copied into the repo)."""
    return need(BEAT2)


@pytest.fixture
def beat2_npz(beat2_dir) -> Path:
    return need(beat2_dir / "2_scott_0_1_1.npz")


@pytest.fixture
def emage_ref() -> Path:
    return need(EMAGE_REF)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run many small ops: one thread is faster there (and fair to a busy machine).
    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
