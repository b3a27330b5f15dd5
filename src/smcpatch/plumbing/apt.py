"""A private apt configuration over the host's own mirror list.

We never edit /etc/apt: the host's source entries are copied into our cache, and apt-get / apt-cache
run with APT_CONFIG pointing at a config whose state, cache and source list all live there. Mirror
URIs are therefore read from the host at run time and never written into the repository.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import FetchError, ToolMissing
from . import proc as children
from .cache import Cache, hash_file, sweep_stale_temps
from .debmeta import enabled, first_stanza, stanzas
from .files import temp_name, write_atomic
from .progress import Poller, Progress, silent

HOST_APT_DIR = Path("/etc/apt")
LISTS_MAX_AGE_S = 24 * 3600
# apt's own http(s) timeout: a connection or transfer silent this long fails (a full disk under
# the cache, a mirror that stops answering) instead of apt waiting on it for ever
HTTP_STALL_S = 30


@dataclass(frozen=True)
class PackageRecord:
    name: str
    version: str
    filename: str  # pool path, e.g. pool/main/l/linux/linux-source-6.1_6.1.176-1_all.deb
    size: int
    sha256: str

    @property
    def deb_name(self) -> str:
        return Path(self.filename).name


@dataclass(frozen=True)
class Offer:
    """One package version in one suite."""

    name: str
    version: str
    suite: str


class Apt:
    """apt-get/apt-cache bound to a private configuration under the cache."""

    def __init__(self, cache: Cache, host_apt_dir: Path = HOST_APT_DIR,
                 suites: tuple[str, ...] = (), name: str | None = None,
                 foreign_arches: tuple[str, ...] = ()) -> None:
        """With `suites`, the sources are those suites on the host's own mirrors (e.g. trixie on
        a bookworm host); without, the host's sources as they are. `foreign_arches` adds other
        architectures' package lists (arm64, s390x) beside the host's own; their packages are
        then named name:arch. A separate root: the host-arch lists stay as small as they were."""
        if not shutil.which("apt-get"):
            raise ToolMissing("apt-get not found: smcpatch fetches kernels from a Debian archive "
                              "(use --source/--kdir for a tree you already have)")
        self.cache = cache
        self.suites = suites
        self.foreign_arches = tuple(sorted(set(foreign_arches)))
        self.root = cache.dir(_root_name(suites, name) + "".join(f"+{a}" for a in
                                                                 self.foreign_arches))
        self.host_apt_dir = host_apt_dir
        self.config = self.root / "apt.conf"
        self._write_config()

    # -- configuration ---------------------------------------------------------------------
    def _write_config(self) -> None:
        """The private configuration, written under a lock (runs in parallel share the root)
        and only where it changed, each file atomically: a reader never sees it half-made."""
        parts = self.root / "sources.list.d"
        for sub in ("lists/partial", "archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        wanted = self._sources()
        if not wanted:
            raise FetchError(f"no apt sources found in {self.host_apt_dir} (sources.list or "
                             "sources.list.d/*.list|*.sources): cannot reach a Debian archive")
        arches = ""
        if self.foreign_arches:
            listed = " ".join(f'"{a}";' for a in (_native_arch(), *self.foreign_arches))
            arches = f"APT::Architectures {{ {listed} }};\n"
        config = (
            arches +
            f'Dir::State::Lists "{self.root}/lists";\n'
            f'Dir::State::status "/dev/null";\n'
            f'Dir::Cache "{self.root}";\n'
            f'Dir::Cache::archives "{self.root}/archives";\n'
            f'Dir::Etc::SourceList "/dev/null";\n'
            f'Dir::Etc::SourceParts "{parts}";\n'
            'Acquire::Check-Valid-Until "false";\n'
            'Acquire::Languages "none";\n'
            f'Acquire::http::Timeout "{HTTP_STALL_S}";\n'
            f'Acquire::https::Timeout "{HTTP_STALL_S}";\n'
            'APT::Get::List-Cleanup "false";\n'
        )
        with self.cache.lock(f"apt-config-{self.root.name}"):
            parts.mkdir(parents=True, exist_ok=True)
            for old in parts.iterdir():
                if old.name not in wanted:
                    old.unlink(missing_ok=True)
            for name, text in {**wanted, "../apt.conf": config}.items():
                path = (parts / name).resolve() if name.startswith("..") else parts / name
                if not path.is_file() or path.read_text() != text:
                    write_atomic(path, text)

    def _sources(self) -> dict[str, str]:
        """{file name: text} of the sources: the suites asked for on the host's own mirrors,
        or the host's own sources as they are."""
        if self.suites:
            lines = mirror_lines(host_sources(self.host_apt_dir), self.suites)
            return {"smcpatch-suites.list": "\n".join(lines) + "\n"} if lines else {}
        found: dict[str, str] = {}
        main_list = self.host_apt_dir / "sources.list"
        if main_list.is_file() and _has_entries(main_list.read_text()):
            found["host-sources.list"] = main_list.read_text()
        host_parts = self.host_apt_dir / "sources.list.d"
        if host_parts.is_dir():
            for src in sorted(host_parts.iterdir()):
                if src.suffix in (".list", ".sources") and src.is_file():
                    found[f"host-{src.name}"] = src.read_text()
        return found

    def cache_command(self, *args: str) -> list[str]:
        """apt-cache with its binary caches kept in our root: a host that turns them off
        (Docker images set Dir::Cache::pkgcache "") would otherwise rebuild them from the lists
        on every call, 2 s each for the whole archive instead of 0.02 s."""
        return ["apt-cache", "-o", f"Dir::Cache::pkgcache={self.root}/pkgcache.bin",
                "-o", f"Dir::Cache::srcpkgcache={self.root}/srcpkgcache.bin", *args]

    def env(self) -> dict[str, str]:
        return {**os.environ, "APT_CONFIG": str(self.config), "LC_ALL": "C"}

    def _run(self, args: list[str], cwd: Path | None = None, timeout: int = 600) -> str:
        proc = children.run(args, cwd=cwd, env=self.env(), capture_output=True, text=True,
                            timeout=timeout, error=FetchError,
                            what=f"{' '.join(args[:3])} (is the archive reachable?)")
        if proc.returncode != 0:
            raise FetchError(f"{' '.join(args[:2])} failed: {_last_error(proc.stderr)}")
        return str(proc.stdout)

    # -- index -----------------------------------------------------------------------------
    def update(self, force: bool = False) -> None:
        """apt-get update into our private lists, at most once a day unless forced."""
        stamp = self.root / "lists" / ".updated"
        if not force and _fresh(stamp):
            return
        with self.cache.lock("apt-update"):
            if not force and _fresh(stamp):
                return  # another run updated while we waited for the lock
            stamp.unlink(missing_ok=True)
            proc = children.run(["apt-get", "-q", "update"], env=self.env(),
                                capture_output=True, text=True, timeout=900, error=FetchError,
                                what="apt-get update (is the archive reachable?)")
            # apt-get update exits 0 even when every index failed to download: read its words
            failed = [ln for ln in proc.stderr.splitlines()
                      if ln.startswith(("E:", "Err:")) or "Failed to fetch" in ln]
            if proc.returncode != 0 or failed:
                raise FetchError("apt-get update failed: the archive is unreachable or refused "
                                 f"the request ({_last_error(proc.stderr)}); check the network, "
                                 "proxy and /etc/apt sources, then rerun (a warm cache needs "
                                 "no archive)")
            stamp.touch()

    def fields(self, name: str, version: str) -> dict[str, str]:
        """The control fields of name=version (the first stanza of apt-cache show), or {}."""
        proc = children.run(self.cache_command("show", f"{name}={version}"), env=self.env(),
                            capture_output=True, text=True, timeout=120, error=FetchError,
                            what="apt-cache show")
        return first_stanza(proc.stdout)

    def show(self, name: str, version: str) -> PackageRecord | None:
        """The archive's record of name=version, or None when the archive doesn't have it."""
        fields = self.fields(name, version)
        if not fields or fields.get("Version") != version:
            return None
        return PackageRecord(name=name, version=version, filename=fields.get("Filename", ""),
                             size=int(fields.get("Size", "0")), sha256=fields.get("SHA256", ""))

    def offers(self, names: list[str]) -> list[Offer]:
        """Every (package, version, suite) of these packages, newest version first: the one
        reading of `apt-cache madison`."""
        if not names:
            return []
        proc = children.run(self.cache_command("madison", *names), env=self.env(),
                            capture_output=True, text=True, timeout=300, error=FetchError,
                            what="apt-cache madison")
        found: list[Offer] = []
        for line in proc.stdout.splitlines():
            cols = [c.strip() for c in line.split("|")]
            if len(cols) < 3 or not cols[2].split()[1:]:
                continue
            offer = Offer(cols[0], cols[1], cols[2].split()[1].split("/", 1)[0])
            if offer not in found:
                found.append(offer)
        return found

    def versions(self, name: str) -> list[str]:
        """Every version of `name` the archive holds (newest first)."""
        return list(dict.fromkeys(o.version for o in self.offers([name])))

    def serves_arch(self, suite: str, arch: str) -> bool:
        """Whether the suite's index (as last updated) has packages of `arch` at all (Debian's
        security archive, for one, serves no s390x for bookworm)."""
        lists = self.root / "lists"
        return any(lists.glob(f"*_dists_{suite}_*_binary-{arch}_Packages*"))

    # -- download --------------------------------------------------------------------------
    def download(self, records: list[PackageRecord], dest: Path,
                 progress: Progress = silent) -> list[Path]:
        """Download the packages into dest (shared deb cache), verified against their SHA256.

        A cached deb whose hash does not match (truncated, altered) is fetched again.
        """
        dest.mkdir(parents=True, exist_ok=True)
        wanted = [r for r in records if not _deb_ok(dest / r.deb_name, r)]
        if wanted:
            sweep_stale_temps(dest)
            tmp = dest / temp_name("download")
            tmp.mkdir()
            try:
                specs = [f"{r.name}={r.version}" for r in wanted]
                total = sum(r.size for r in wanted)

                def sample() -> None:  # apt-get download writes straight into its cwd
                    done = sum(p.stat().st_size for p in tmp.iterdir())
                    progress(f"download {total / 1e6:.0f} MB", done, total)

                with Poller(sample):
                    try:
                        self._run(["apt-get", "-q", "download", *specs], cwd=tmp, timeout=3600)
                    except FetchError as exc:
                        raise _explain_missing_file(exc, wanted) from exc
                for record in wanted:
                    got = tmp / record.deb_name
                    _undo_epoch_name(tmp, record, got)
                    if not _deb_ok(got, record):
                        raise FetchError(f"downloaded {record.name} {record.version} does not "
                                         "match the archive's size and SHA256")
                    got.rename(dest / record.deb_name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        return [dest / r.deb_name for r in records]


@dataclass(frozen=True)
class HostSource:
    """One `deb` entry of the host's apt configuration."""

    uri: str
    suites: tuple[str, ...]
    signed_by: str | None


def host_sources(host_apt_dir: Path = HOST_APT_DIR) -> list[HostSource]:
    """The host's `deb` entries, from sources.list(.d) in both one-line and deb822 formats."""
    found: list[HostSource] = []
    files = [host_apt_dir / "sources.list"]
    if (host_apt_dir / "sources.list.d").is_dir():
        files += sorted((host_apt_dir / "sources.list.d").iterdir())
    for path in files:
        if not path.is_file():
            continue
        if path.suffix == ".sources":
            found += _parse_deb822(path.read_text())
        elif path.suffix == ".list":
            found += _parse_one_line(path.read_text())
    return found


def _parse_deb822(text: str) -> list[HostSource]:
    """deb822 entries (python-debian: continuation lines, comments, `Enabled: no`)."""
    out: list[HostSource] = []
    for fields in stanzas(text):
        if "deb" not in fields.get("Types", "").split() or not enabled(fields):
            continue
        signed_by = fields.get("Signed-By", "").strip()
        if "\n" in signed_by:  # an embedded key, not a keyring path: apt's trust store decides
            signed_by = ""
        for uri in fields.get("URIs", "").split():
            out.append(HostSource(uri, tuple(fields.get("Suites", "").split()), signed_by or None))
    return out


def _parse_one_line(text: str) -> list[HostSource]:
    out: list[HostSource] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) < 3 or words[0] != "deb":
            continue
        signed_by = None
        if words[1].startswith("["):
            options = []
            while words and not words[1].endswith("]"):
                options.append(words.pop(1))
            options.append(words.pop(1))
            for option in " ".join(options).strip("[]").split():
                if option.startswith("signed-by="):
                    signed_by = option.split("=", 1)[1]
        out.append(HostSource(words[1], (words[2],), signed_by))
    return out


def archive_mirrors(sources: list[HostSource]) -> tuple[HostSource | None, HostSource | None]:
    """The host's main archive mirror and its security mirror (either may be missing)."""
    main = next((s for s in sources if any(not x.endswith("-security") for x in s.suites)), None)
    security = next((s for s in sources if any(x.endswith("-security") for x in s.suites)), None)
    return main, security


def mirror_lines(sources: list[HostSource], suites: tuple[str, ...]) -> list[str]:
    """One-line entries for `suites` on the host's own mirrors: security suites on the host's
    security mirror, all others on its main archive mirror."""
    main, security = archive_mirrors(sources)
    if main is None:
        raise FetchError("the host's apt sources name no Debian archive mirror to fetch "
                         f"{', '.join(suites)} from")
    lines = []
    for suite in suites:
        source = security if suite.endswith("-security") and security else main
        option = f"[signed-by={source.signed_by}] " if source.signed_by else ""
        lines.append(f"deb {option}{source.uri} {suite} main")
    return lines


def _undo_epoch_name(where: Path, record: PackageRecord, wanted: Path) -> None:
    """apt-get download names a file by the version with its epoch (busybox-static_1%3a1.35.0
    ..._arm64.deb) where the pool has none: give it the pool's name."""
    if ":" not in record.version or wanted.exists():
        return
    base, _, rest = record.deb_name.partition("_")
    epoch = record.version.split(":", 1)[0]
    named = where / f"{base}_{epoch}%3a{rest}"
    if named.exists():
        named.rename(wanted)


def _native_arch() -> str:
    proc = children.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                        timeout=60)
    return str(proc.stdout).strip() or "amd64"


def _fresh(stamp: Path) -> bool:
    return stamp.exists() and time.time() - stamp.stat().st_mtime < LISTS_MAX_AGE_S


def _deb_ok(path: Path, record: PackageRecord) -> bool:
    if not path.is_file() or path.stat().st_size != record.size:
        return False
    return not record.sha256 or hash_file(path) == record.sha256


def _root_name(suites: tuple[str, ...], name: str | None) -> str:
    """apt, apt-trixie+trixie-security, or for the whole archive a short stable name."""
    if name:
        return f"apt-{name}"
    if len(suites) > 3:
        return "apt-" + hashlib.sha256("+".join(suites).encode()).hexdigest()[:12]
    return "apt-" + "+".join(suites) if suites else "apt"


def _has_entries(text: str) -> bool:
    return any(line.strip().startswith(("deb ", "deb-src ")) for line in text.splitlines())


def _explain_missing_file(exc: FetchError, wanted: list[PackageRecord]) -> FetchError:
    """A 404 on a pool file: the index lists the package but the mirror lacks the file."""
    text = str(exc)
    if "404" not in text:
        return exc
    missing = [r for r in wanted if r.deb_name.replace("~", "%7e") in text
               or r.deb_name in text] or wanted
    names = ", ".join(f"{r.name} {r.version}" for r in missing)
    return FetchError(f"the archive's index lists {names} but the mirror does not serve the file "
                      "(404 Not Found): this kernel cannot be fetched from this mirror")


def _last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip().startswith(("E:", "Err"))]
    text = lines[-1] if lines else (stderr.strip().splitlines() or ["unknown error"])[-1]
    return text[:300]
