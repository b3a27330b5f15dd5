"""Shared fixtures: a persistent test cache and real Debian kernel workspaces fetched on demand.

Integration tests use real packages from the Debian archive (through the host's apt sources). The
cache persists between runs (SMCPATCH_TEST_CACHE, default ~/.cache/smcpatch-tests), so only the
first run downloads and builds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from smcpatch.cache import Cache
from smcpatch.sources import Workspace, fetch
from smcpatch.targets import Target, load_matrix

ROOT = Path(__file__).resolve().parents[1]


def _test_cache_root() -> Path:
    env = os.environ.get("SMCPATCH_TEST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "smcpatch-tests"


@pytest.fixture(scope="session")
def test_cache() -> Cache:
    return Cache.open(_test_cache_root())


@pytest.fixture(scope="session")
def matrix() -> dict[str, Target]:
    return {t.version: t for t in load_matrix()}


@pytest.fixture(scope="session")
def workspace_for(test_cache: Cache, matrix: dict[str, Target]) -> Callable[[str], Workspace]:
    """Fetch (once per session, cached on disk) the workspace of a matrix kernel by version."""
    fetched: dict[str, Workspace] = {}

    def get(version: str) -> Workspace:
        if version not in fetched:
            fetched[version] = fetch(test_cache, matrix[version])
        return fetched[version]

    return get
