"""Shared fixtures: a persistent test cache and real Debian kernel workspaces fetched on demand;
the small objects the inspection tests compile with gcc.

Integration tests use real packages from the Debian archive (through the host's apt sources). The
cache persists between runs (SMCPATCH_TEST_CACHE, default ~/.cache/smcpatch-tests), so only the
first run downloads and builds.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smcpatch.data import DEFAULT_PATCHES
from smcpatch.kernels.matrix import load_matrix
from smcpatch.kernels.targets import Target
from smcpatch.pipeline.classify import Fix, load_series
from smcpatch.pipeline.fetch import Workspace, fetch
from smcpatch.plumbing.cache import Cache

ROOT = Path(__file__).resolve().parents[1]
# the CLI run in a subprocess (`python -m smcpatch`, `python -m invoke`) is this checkout's code
# too, as in-process (pyproject's pythonpath), not whatever `pip install -e` last pointed at
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])


def cache_root_for_tests() -> Path:
    env = os.environ.get("SMCPATCH_TEST_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "smcpatch-tests"


@pytest.fixture(scope="session")
def test_cache() -> Cache:
    return Cache.open(cache_root_for_tests())


@pytest.fixture(scope="session")
def gnu_patch() -> str:
    """GNU patch, installed as root when missing (as smcpatch itself does); else a skip."""
    from tests.elfobjs import require_tool

    return require_tool("patch", "patch")


@pytest.fixture(scope="session")
def matrix() -> dict[str, Target]:
    return {t.version: t for t in load_matrix()}


@functools.cache
def real_workspace(version: str) -> Workspace:
    """The fetched workspace of a matrix kernel, by upstream or Debian version (cached on disk)."""
    for target in load_matrix():
        if version in (target.version, target.package_version):
            return fetch(Cache.open(cache_root_for_tests()), target)
    raise KeyError(f"{version} is not in kernels.toml")


@pytest.fixture(scope="session")
def workspace_for() -> Callable[[str], Workspace]:
    return real_workspace


# -- every smcpatch document a test writes is judged by its schema (tests/schemas.py) -------------
_judged_dirs: set[Path] = set()


def _judge_documents(roots: list[Path], malformed: tuple[str, ...] = ()) -> None:
    from tests.schemas import tree_problems

    found = tree_problems(roots, malformed)
    if found:
        pytest.fail("smcpatch JSON that does not match its schema (src/smcpatch/data/schemas/):\n"
                    + "\n".join(found[:20]), pytrace=False)


@pytest.fixture(autouse=True)
def _written_documents_match_their_schemas(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """After each test: every JSON file whose top-level `schema` starts with `smcpatch-` under the
    temporary directories made for it (its tmp_path, and tmp_path_factory's dirs its fixtures
    made), wherever it came from (in-process, or a CLI run in a subprocess), matches the schema of
    its kind; an unknown kind fails too. A test that writes broken documents on purpose names
    them: @pytest.mark.malformed_documents("x.json", ...) (file-name patterns)."""
    yield
    marker = request.node.get_closest_marker("malformed_documents")
    base = tmp_path_factory.getbasetemp()
    new = [p for p in sorted(base.iterdir()) if p.is_dir() and p not in _judged_dirs]
    _judged_dirs.update(new)
    _judge_documents(new, tuple(marker.args) if marker else ())


@pytest.fixture(scope="session", autouse=True)
def _documents_written_late_match_their_schemas(
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end: what was written into a long-lived directory after its first test (each file
    judged once while unchanged)."""
    yield
    _judge_documents([tmp_path_factory.getbasetemp()])


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The folder says what a test needs: tests/integration/ uses real Debian kernels (and the
    network, the wheel, apt); the rest are unit tests (`inv test --quick`)."""
    integration = Path(__file__).resolve().parent / "integration"
    for item in items:
        if integration in item.path.parents:
            item.add_marker(pytest.mark.integration)


# -- fixtures shared by unit and integration tests of one module ---------------------------------
@pytest.fixture
def fixes() -> list[Fix]:
    """Our patch series, as shipped."""
    return load_series(DEFAULT_PATCHES)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway signing key and certificate (openssl)."""
    from tests.packaging.test_signing import make_key

    return make_key(tmp_path_factory.mktemp("key"))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A second key, of someone else."""
    from tests.packaging.test_signing import make_key

    return make_key(tmp_path_factory.mktemp("other"), cn="someone else")


@pytest.fixture(scope="session")
def objs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every object the inspection tests use, compiled once (tests/elfobjs.py)."""
    from tests import elfobjs

    d = tmp_path_factory.mktemp("elfobjs")
    c = elfobjs.compile_c
    o: dict[str, Path] = {
        "vuln_g": c(d, elfobjs.SMC_CLC_C, "vuln_g.o"),
        "fixed_g": c(d, elfobjs.SMC_CLC_C, "fixed_g.o", defines=("FIXED",)),
        "vuln_nog": c(d, elfobjs.SMC_CLC_C, "vuln_nog.o", debug=False),
        "fixed_nog": c(d, elfobjs.SMC_CLC_C, "fixed_nog.o", debug=False, defines=("FIXED",)),
        "vuln_pie": c(d, elfobjs.SMC_CLC_C, "vuln_pie.o", kernel_model=False),
        "nolock": c(d, elfobjs.SMC_CLC_C, "nolock.o", defines=("NOLOCK",)),
        "nounlock": c(d, elfobjs.SMC_CLC_C, "nounlock.o", defines=("NOUNLOCK",)),
        "modinfo": c(d, elfobjs.SMC_CLC_C, "modinfo.o", debug=False, defines=("MODINFO",)),
        "other": c(d, elfobjs.OTHER_C, "other.o"),
        "changes_a": c(d, elfobjs.CHANGES_C, "changes_a.o", filename="changes.c"),
        "changes_b": c(
            d, elfobjs.CHANGES_C, "changes_b.o", filename="changes.c", defines=("VARIANT",)
        ),
        "changes_a_pie": c(
            d, elfobjs.CHANGES_C, "changes_a_pie.o", filename="changes.c", kernel_model=False
        ),
        "changes_b_pie": c(
            d,
            elfobjs.CHANGES_C,
            "changes_b_pie.o",
            filename="changes.c",
            kernel_model=False,
            defines=("VARIANT",),
        ),
    }
    o["vuln_stripped"] = elfobjs.strip_debug(o["vuln_g"], d / "vuln_stripped.o")
    o["fixed_stripped"] = elfobjs.strip_debug(o["fixed_g"], d / "fixed_stripped.o")
    return o
