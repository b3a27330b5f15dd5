"""Any kernel Debian ships: the kernels of every suite the host's mirrors serve, and the
resolution of what a user types (upstream version, Debian version, or `uname -r`) to one target.

One private apt configuration covers every served suite (plumbing.suites); its package lists are
refreshed once a day, so a resolution with warm lists is a few apt-cache calls.
"""

from __future__ import annotations

import re

from ..errors import BadInput, FetchError
from ..plumbing import proc as children
from ..plumbing.apt import Apt, Offer
from ..plumbing.cache import Cache
from ..plumbing.suites import host_releases, release_of, served_suites
from .targets import ALL_FLAVOURS, Target
from .versions import KernelSpec, parse, series_of, upstream_of

_IMAGE = re.compile(rf"^linux-image-(?P<abi>\d+\.\d+[^\s]*?)-"
                    rf"(?P<flavour>{'|'.join(ALL_FLAVOURS)})$")


def _matches(spec: KernelSpec, version: str) -> bool:
    """A package version is the kernel the user named (a Debian version exactly, an upstream
    version whatever its Debian revision)."""
    if spec.kind == "debian":
        return version == spec.text
    return upstream_of(version).split("~", 1)[0] == spec.upstream


class Archive:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache
        self.suites = tuple(served_suites(cache))
        self.apt = Apt(cache, suites=self.suites)  # the same lists as the fetch of its targets
        self.host_releases = host_releases()

    def update(self) -> None:
        self.apt.update()

    # -- what the archive holds ------------------------------------------------------------
    def offers(self, names: list[str]) -> list[Offer]:
        """Every (version, suite) of these packages, newest version first."""
        return self.apt.offers(names)

    def names(self, prefix: str) -> list[str]:
        done = children.run(self.apt.cache_command("pkgnames", prefix), env=self.apt.env(),
                            capture_output=True, text=True, timeout=300, error=FetchError,
                            what="apt-cache pkgnames")
        return sorted(set(str(done.stdout).split()))

    def kernel_sources(self) -> list[Offer]:
        """Every linux-source-<series> version of every suite."""
        return self.offers(self.names("linux-source-"))

    # -- resolution ------------------------------------------------------------------------
    def resolve(self, kernel: KernelSpec | str, flavour: str,
                suite: str | None = None) -> Target:
        """A kernel by upstream version, Debian package version or kernel release, answered by
        every package that can answer for it: its sources, its headers, its image. A kernel
        whose image is served but not its sources or headers can only be judged (judge_only)."""
        spec = kernel if isinstance(kernel, KernelSpec) else parse(kernel)
        if spec.kind == "release":
            offers = self.offers([f"linux-headers-{spec.text}"])
            images = [] if offers else self.offers([f"linux-image-{spec.text}"])
            if not offers and not images:
                raise FetchError(f"the archive has no linux-headers-{spec.text} or "
                                 f"linux-image-{spec.text} (kernel release {spec.text}) in "
                                 f"{', '.join(self.suites)}")
            chosen, notes = self._choose(offers or images, spec.text, suite)
            if not offers:
                return self._judge_only(chosen, spec.flavour, notes, spec.abi)
            return self._target(chosen.version, chosen.suite, spec.flavour, notes, abi=spec.abi)
        sources = self.offers([f"linux-source-{spec.series}"])
        wanted = [o for o in sources if _matches(spec, o.version)]
        images = [o for o in self.images(spec.series, flavour) if _matches(spec, o.version)]
        if not wanted and not images:
            listing = ", ".join(f"{o.version} ({o.suite})" for o in sources[:12])
            raise FetchError(f"kernel {spec.text} is not in the archive (no sources, headers or "
                             f"image of it); linux-source-{spec.series} versions available: "
                             f"{listing or 'none'}")
        chosen, notes = self._choose([*wanted, *images], spec.text, suite)
        built = [o for o in wanted if o.version == chosen.version]
        if chosen.name.startswith("linux-image-") and not built:
            return self._judge_only(chosen, flavour, notes)
        source = next((o for o in built if o.suite == chosen.suite), built[0] if built else chosen)
        return self._target(source.version, source.suite, flavour, notes)

    def images(self, series: str = "", flavour: str = "") -> list[Offer]:
        """Every linux-image-<abi>-<flavour> of a series (or all) in every served suite: the
        signed images (their -unsigned twins carry the same modules), no metapackages."""
        found = []
        for name in self.names(f"linux-image-{series}." if series else "linux-image-"):
            match = _IMAGE.match(name)
            if not match or (flavour and match["flavour"] != flavour):
                continue
            abi = match["abi"]
            if abi == series_of(abi) and int(abi.split(".")[0]) < 7:
                continue  # 6.x and older: a bare major.minor names a metapackage (6.1-amd64)
            found.append(name)
        return self.offers(found)

    def _judge_only(self, image: Offer, flavour: str, notes: list[str],
                    abi: str | None = None) -> Target:
        """A kernel the mirrors serve the image of, but not its sources or headers: Debian's
        module and changelog can be judged, nothing built."""
        match = _IMAGE.match(image.name)
        assert match is not None
        upstream = upstream_of(image.version)
        return Target(version=upstream, package_version=image.version,
                      abi=abi or match["abi"], series=series_of(upstream), suite=image.suite,
                      flavour=match["flavour"],
                      apt_suites=self.suites, judge_only=True,
                      notes="; ".join([f"resolved from the archive ({image.suite}): its image "
                                       "is served but not its sources or headers", *notes]))

    def _choose(self, offers: list[Offer], text: str,
                suite: str | None) -> tuple[Offer, list[str]]:
        """One offer: the --suite asked for, else the host's release first, newest version."""
        if suite is not None:
            picked = [o for o in offers if o.suite == suite]
            if not picked:
                where = ", ".join(sorted({o.suite for o in offers}))
                raise BadInput(f"kernel {text} is not in suite {suite}; it is in {where}")
            return picked[0], []
        ranked = sorted(offers, key=lambda o: (release_of(o.suite) not in self.host_releases,
                                               self.suites.index(o.suite)
                                               if o.suite in self.suites else 99))
        chosen = ranked[0]
        others = sorted({f"{o.suite} ({o.version})" for o in offers
                         if (o.suite, o.version) != (chosen.suite, chosen.version)})
        notes = []
        if others:
            notes.append(f"{text} is also in {', '.join(others)}: chose {chosen.suite} "
                         f"({chosen.version}), the host's release first; --suite picks another")
        return chosen, notes

    def _target(self, package_version: str, suite: str, flavour: str, notes: list[str],
                abi: str | None = None) -> Target:
        upstream = upstream_of(package_version)
        series = series_of(upstream)
        abi = abi or self._abi(series, package_version)
        kbuild = f"linux-kbuild-{abi}"
        if not any(o.version == package_version for o in self.offers([kbuild])):
            kbuild = f"linux-kbuild-{series}"
        return Target(version=upstream, package_version=package_version, abi=abi, series=series,
                      suite=suite, flavour=flavour, kbuild_package=kbuild,
                      apt_suites=self.suites, auto_build_env=True,
                      notes="; ".join([f"resolved from the archive ({suite}), not pinned in "
                                       "kernels.toml", *notes]))

    def abis(self, series: str) -> dict[str, str]:
        """{package version: ABI} of every kernel of a series (one apt-cache call)."""
        commons = [n for n in self.names(f"linux-headers-{series}")
                   if n.endswith("-common") and not n.endswith("-common-rt")]
        return {o.version: o.name.removeprefix("linux-headers-").removesuffix("-common")
                for o in reversed(self.offers(commons))}

    def _abi(self, series: str, package_version: str) -> str:
        # 6.1.0-50, 6.1.0-0.deb11.52, 6.12.107+deb12, 6.12.115+deb13.1, 7.3
        commons = [n for n in self.names(f"linux-headers-{series}")
                   if n.endswith("-common") and not n.endswith("-common-rt")]
        for offer in self.offers(commons):
            if offer.version == package_version:
                return offer.name.removeprefix("linux-headers-").removesuffix("-common")
        raise FetchError(f"no linux-headers-*-common package of version {package_version} in the "
                         "archive")
