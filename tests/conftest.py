"""Shared fixtures for the test suite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

# Imported once here: pytester's in-process runs restore sys.modules after each run, and
# a second import of these breaks them (pyarrow registers its types twice; httpx would
# catch exceptions of another httpcore's classes).
import datasets  # noqa: F401
import httpcore  # noqa: F401
import httpx  # noqa: F401
import pytest

from tests.helpers import SHARED_DATASETS, Project


@pytest.fixture
def project(pytester: pytest.Pytester) -> Project:
    return Project(pytester)


@pytest.fixture
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"the shared datasets are not on this machine ({SHARED_DATASETS})")
    return SHARED_DATASETS


@pytest.fixture(scope="session", autouse=True)
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One Hugging Face cache for the whole session, outside every test's project."""
    path = tmp_path_factory.mktemp("hf-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HOME", str(path))
    yield path
    mp.undo()
