"""Kernels outside the matrix (smcpatch.kernels.archive, sources' missing-package message): the
parts that need no archive. The resolution on real package lists is in
tests/integration/test_any_kernel.py."""

from __future__ import annotations

import pytest

from smcpatch.errors import BadInput
from smcpatch.kernels.versions import parse_version, series_of, upstream_of
from smcpatch.pipeline.fetch import missing_package_message


@pytest.mark.parametrize(("text", "series"), [
    ("6.1.176", "6.1"), ("6.12.107+deb13", "6.12"), ("6.12.95-1~bpo12+1", "6.12"),
    ("6.12.95+deb12-amd64", "6.12"), ("6.1.0-0.deb11.52-amd64", "6.1"),
    ("5.10.0-32-cloud-amd64", "5.10"), ("7.3~rc7-1~exp1", "7.3"), ("7.3-amd64", "7.3"),
])
def test_kernel_text_forms(text: str, series: str) -> None:
    assert parse_version(text) == (series, text)


@pytest.mark.parametrize("bad", ["6.1", "abc", "6.1.176; rm -rf /", "", "6.12.95 -amd64"])
def test_other_text_is_bad_input(bad: str) -> None:
    with pytest.raises(BadInput, match="not a kernel version"):
        parse_version(bad)


@pytest.mark.parametrize(("version", "upstream", "series"), [
    ("6.12.95-1~bpo12+1", "6.12.95", "6.12"), ("5.10.223-1", "5.10.223", "5.10"),
    ("7.3~rc7-1~exp1", "7.3~rc7", "7.3"), ("6.1.180-1~deb11u1", "6.1.180", "6.1"),
])
def test_upstream_and_series_of_a_debian_version(version: str, upstream: str,
                                                 series: str) -> None:
    assert upstream_of(version) == upstream
    assert series_of(upstream) == series


def test_missing_package_message_never_lists_the_version_it_says_is_gone() -> None:
    """The issue users met: `... 6.12.118-1~deb12u1 is no longer in the archive; available:
    6.12.118-1~deb12u1, ...` (the source package's versions, the very one included)."""
    name, version = "linux-image-6.12.118+deb12-amd64", "6.12.118-1~deb12u1"
    gone = missing_package_message(name, version, ["6.12.117-1~deb12u1", "6.12.115-2~deb12u1"])
    assert "no longer in the archive" in gone and version not in gone.split(";", 1)[1]
    assert "6.12.117-1~deb12u1" in gone
    none = missing_package_message(name, version, [])
    assert "no package" in none and "no longer" not in none
    listed = missing_package_message(name, version, [version])
    assert "no longer" not in listed and "index" in listed
