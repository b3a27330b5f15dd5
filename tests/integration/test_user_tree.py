"""A packager's own tree: `inv verify --source TREE --kdir KDIR`, no archive access."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from smcpatch.errors import BadInput
from smcpatch.kernels.resolve import local_target
from smcpatch.pipeline import fetch as sources
from smcpatch.pipeline import prepare as pipeline
from smcpatch.plumbing.cache import Cache

pytestmark = pytest.mark.integration


def _copy_tree(ws: sources.Workspace, dest: Path) -> Path:
    shutil.copytree(ws.source_tree, dest)
    return dest


def test_user_tree_verifies_like_the_archive_kernel(
        tmp_path: Path, workspace_for: Callable[[str], sources.Workspace]) -> None:
    ws = workspace_for("6.1.176")
    tree = _copy_tree(ws, tmp_path / "linux")
    mine = local_target(tree, ws.kdir)
    assert mine.release == "6.1.0-50-amd64"  # UTS_RELEASE, what vermagic must say
    r = pipeline.verify_target(Cache.open(tmp_path / "cache"), mine, pipeline.Options())
    assert r.ok, (r.error, r.problems)
    assert r.fixes[0]["variant"] == "main"
    assert not list((tmp_path / "cache").glob("debs/*"))  # nothing fetched


def test_tree_without_dst_dev_rcu_gets_the_compat_fix(
        tmp_path: Path, workspace_for: Callable[[str], sources.Workspace]) -> None:
    ws = workspace_for("6.12.107")
    tree = _copy_tree(ws, tmp_path / "linux")
    dst_h = tree / "include" / "net" / "dst.h"
    text = dst_h.read_text()
    # an older tree: the helper (and its users in dst.h) does not exist yet
    stripped = re.sub(r"\bdst_dev_rcu\b", "dst_dev_old", text)
    dst_h.write_text(stripped)
    mine = local_target(tree, ws.kdir)
    r = pipeline.verify_target(Cache.open(tmp_path / "cache"), mine, pipeline.Options())
    assert r.fixes[0]["variant"] == "compat"
    assert r.ok, (r.error, r.problems)
    assert r.after is not None and r.after.verdict == "fixed"
    assert dst_h.read_text() == stripped  # the user's tree is never modified


def test_source_without_net_smc_is_bad_input(tmp_path: Path,
                                             workspace_for: Callable[[str], sources.Workspace]
                                             ) -> None:
    ws = workspace_for("6.1.176")
    with pytest.raises(BadInput, match="has no net/smc"):
        local_target(tmp_path, ws.kdir)
    with pytest.raises(BadInput, match="lacks"):
        local_target(ws.source_tree, tmp_path)
