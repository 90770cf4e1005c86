"""Shared fixtures for the test suite."""

from __future__ import annotations

from pathlib import Path

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
