"""`smcpatch livepatch`'s refusals: one line, exit 2, before the archive is read (nothing
fetched into the cache), and the kernel's .config read for CONFIG_LIVEPATCH."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smcpatch.commands import livepatch as livepatch_cmd
from smcpatch.errors import BadInput
from smcpatch.kernels.request import KernelRequest
from tests.test_cli import assert_one_line_error, smcpatch


@pytest.mark.parametrize(("args", "message"), [
    (("--kernel", "6.1.176", "--arch", "arm64"), "Debian's arm64 kernels cannot be live-patched"),
    (("--kernel", "6.1.176", "--arch", "s390x"), "CONFIG_LIVEPATCH is set in Debian's amd64"),
    ((), "--kernel is required"),
    (("--kernel", "not-a-version"), "is not a kernel version"),
])
def test_bad_input_is_one_line_exit_2_before_any_download(tmp_path: Path, args: tuple[str, ...],
                                                          message: str) -> None:
    cache = tmp_path / "cache"
    proc = smcpatch("livepatch", *args, "--cache", str(cache), "--out", str(tmp_path / "out"))
    assert_one_line_error(proc, 2, message)
    assert not any(cache.rglob("*.deb")) if cache.exists() else True
    assert not (tmp_path / "out").exists()


def test_a_directory_of_the_users_is_refused_before_any_download(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep\n")
    proc = smcpatch("livepatch", "--kernel", "6.1.176", "--out", str(mine), "--cache",
                    str(tmp_path / "cache"))
    assert_one_line_error(proc, 2, "was not made by smcpatch")
    assert (mine / "notes.txt").read_text() == "keep\n"


def test_one_kernel_only() -> None:
    for kernels in (("6.1.176", "6.12.107"), ("all",)):
        with pytest.raises(BadInput, match="one --kernel"):
            livepatch_cmd.check_request(
                livepatch_cmd.LivepatchRequest(KernelRequest(kernels=kernels)))


def test_amd64_passes_the_early_checks() -> None:
    livepatch_cmd.check_request(livepatch_cmd.LivepatchRequest(
        KernelRequest(kernels=("6.12.107",), arches=("amd64",))))


@pytest.mark.parametrize(("line", "refused"), [("CONFIG_LIVEPATCH=y", False),
                                               ("# CONFIG_LIVEPATCH is not set", True),
                                               ("", True)])
def test_the_kernels_config_must_have_livepatch(tmp_path: Path, line: str,
                                                refused: bool) -> None:
    config = tmp_path / ".config"
    config.write_text(f"CONFIG_SMC=m\nCONFIG_HAVE_LIVEPATCH=y\n{line}\n")
    if refused:
        with pytest.raises(BadInput, match="built without CONFIG_LIVEPATCH"):
            livepatch_cmd.check_config(config, "6.1.176-1")
    else:
        livepatch_cmd.check_config(config, "6.1.176-1")


def test_nothing_built_result_is_exit_0_and_valid_json(tmp_path: Path) -> None:
    result = livepatch_cmd.LivepatchResult(kernel="6.12.117-1~deb12u1",
                                           release="6.12.117+deb12-amd64", state="fixed",
                                           built=False, message="already fixed")
    assert result.exit_code == 0
    path = tmp_path / "r.json"
    path.write_text(json.dumps(result.to_json()))  # judged by its schema after the test
    assert result.to_json()["judgement"] is None


def test_signing_needs_a_key_and_its_certificate(tmp_path: Path,
                                                 keys: tuple[Path, Path],
                                                 other_keys: tuple[Path, Path]) -> None:
    kernels = KernelRequest(kernels=("6.12.107",))
    with pytest.raises(BadInput, match="both --sign-key and --sign-cert"):
        livepatch_cmd.check_request(livepatch_cmd.LivepatchRequest(kernels, sign_key=keys[0]))
    with pytest.raises(BadInput):
        livepatch_cmd.check_request(livepatch_cmd.LivepatchRequest(
            kernels, sign_key=keys[0], sign_cert=other_keys[1]))
    livepatch_cmd.check_request(livepatch_cmd.LivepatchRequest(
        kernels, sign_key=keys[0], sign_cert=keys[1]))
