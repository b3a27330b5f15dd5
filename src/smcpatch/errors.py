"""The exception tree. Stages raise these deep down; the CLI edge (smcpatch.cli) reports them once.

Exit codes: 2 when the run cannot do what was asked as asked (bad input, our own or the user's
data files malformed, a host tool missing that smcpatch may not install), 1 when the work was done
and failed (archive, extraction, patch, build, guest), as for a target that is not verified.
"""

from __future__ import annotations


class SmcpatchError(Exception):
    """Base of every error smcpatch reports as a one-line message with a non-zero exit."""

    exit_code = 2

    def one_line(self) -> str:
        return " ".join(str(self).split()) or type(self).__name__


class BadInput(SmcpatchError):
    """The user asked for something that cannot exist (unknown kernel, bad path, bad option)."""


class ConfigError(SmcpatchError):
    """kernels.toml, patches/series or another of our own inputs is malformed."""


class UnknownFix(BadInput, ConfigError):
    """A fix id the patch series does not have (named by the user, or asked of the series)."""


class ToolMissing(SmcpatchError):
    """A host tool is missing; the message names the command that installs it."""


class FetchError(SmcpatchError):
    """The archive, apt or the network failed, or a package version is gone."""

    exit_code = 1


class ExtractError(SmcpatchError):
    """A package or tarball could not be unpacked safely (hostile paths, truncation, disk full)."""

    exit_code = 1


class PatchError(SmcpatchError):
    """The fix neither applies nor reverts cleanly on the tree (names the rejected hunks)."""

    exit_code = 1


class BuildError(SmcpatchError):
    """make failed; the message names the full log, `detail` carries the log's tail."""

    exit_code = 1

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class InspectError(SmcpatchError):
    """The module is not an ELF file, is truncated, is not smc.ko or lacks the function."""


class NothingToState(SmcpatchError):
    """A VEX document was asked for but no product was judged (it needs one statement)."""

    exit_code = 1


class VmError(SmcpatchError):
    """The QEMU guest failed: panic, hang, module load failure, or an unexpected fallback."""

    exit_code = 1


class AuditError(SmcpatchError):
    """spatch (Coccinelle) failed or timed out on a rule: the source was not audited."""

    exit_code = 1
