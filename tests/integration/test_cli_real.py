"""The command line on real archive lookups."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import assert_one_line_error, inv


@pytest.mark.integration
def test_unknown_kernel_lists_what_the_archive_has(tmp_path: Path) -> None:
    proc = inv("verify", "--kernel", "6.1.1", cache=tmp_path)
    assert_one_line_error(proc, 2, "unknown kernel 6.1.1")
    assert "6.1.176-1" in proc.stderr  # the archive's versions are listed
