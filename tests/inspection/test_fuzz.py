"""Random truncations and byte edits of gcc-built objects: an answer or an InspectError,
never another exception.  (Mutated real modules: tests/integration/test_inspection_real.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smcpatch.inspection import InspectError, function_bodies, inspect_module


@pytest.fixture(scope="module")
def stripped_bytes(objs: dict[str, Path]) -> bytes:
    return objs["vuln_stripped"].read_bytes()


@pytest.fixture(scope="module")
def dwarf_bytes(objs: dict[str, Path]) -> bytes:
    return objs["fixed_g"].read_bytes()


_FIXTURES_OK = [HealthCheck.function_scoped_fixture]


def _inspect_bytes(data: bytes, tmp: Path) -> None:
    path = tmp / "fuzz.ko"
    path.write_bytes(data)
    try:
        inspect_module(path)
        function_bodies(path)
    except InspectError as exc:
        assert exc.one_line()


@settings(max_examples=150, deadline=None, suppress_health_check=_FIXTURES_OK)
@given(cut=st.integers(min_value=0, max_value=100_000))
def test_fuzz_truncation(
    dwarf_bytes: bytes, tmp_path_factory: pytest.TempPathFactory, cut: int
) -> None:
    _inspect_bytes(dwarf_bytes[: cut % (len(dwarf_bytes) + 1)], tmp_path_factory.mktemp("t"))


@settings(max_examples=200, deadline=None, suppress_health_check=_FIXTURES_OK)
@given(
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=1 << 20), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    )
)
def test_fuzz_corruption(
    stripped_bytes: bytes,
    tmp_path_factory: pytest.TempPathFactory,
    edits: list[tuple[int, int]],
) -> None:
    """Random byte edits: the result is either an answer or an InspectError, never a crash."""
    data = bytearray(stripped_bytes)
    for pos, value in edits:
        data[pos % len(data)] = value
    _inspect_bytes(bytes(data), tmp_path_factory.mktemp("c"))

