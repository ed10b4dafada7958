"""Fixtures shared by every package's tests. Package-specific fixtures live in tests/<package>/conftest.py;
heavier shared ones (models, servers) in tests/fixtures/ and are registered here."""

import os

import pytest

os.environ.setdefault("PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    "tests.fixtures.models",
    "tests.fixtures.vllm",
]


@pytest.fixture(scope="session")
def repo_root():
    from infra.paths import REPO_ROOT

    return REPO_ROOT
