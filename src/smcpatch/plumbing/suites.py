"""Which suites the host's mirrors serve: the host's own, and every release the same mirrors hold.

Nothing here lists Debian releases: the mirror's own alias suites (stable, oldstable, testing,
unstable, ...) say which codenames it holds, in their Release files, and each codename's
companion suites (-updates, -backports, -security) are probed the same way. The answer is cached
for a day in the cache; a mirror that can't be probed leaves just the host's own suites.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

from .apt import HOST_APT_DIR, HostSource, archive_mirrors, host_sources
from .cache import Cache
from .debmeta import release_head_fields

# The archive's alias suites and a release's companion suites: Debian's layout, not a release list.
ALIASES = ("oldoldstable", "oldstable", "stable", "testing", "unstable", "experimental")
COMPANIONS = ("", "-updates", "-security", "-backports")
MAX_AGE_S = 24 * 3600
PROBE_TIMEOUT_S = 15


def served_suites(cache: Cache, host_apt_dir: Path = HOST_APT_DIR) -> list[str]:
    """Every suite the host's mirrors serve, oldest release first (host suites always)."""
    memo = cache.dir("suites.json")
    try:
        saved = json.loads(memo.read_text())
        if time.time() - saved["time"] < MAX_AGE_S and isinstance(saved["suites"], list):
            return [str(s) for s in saved["suites"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    sources = host_sources(host_apt_dir)
    suites = discover(sources)
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_suffix(".tmp")
    tmp.write_text(json.dumps({"time": time.time(), "suites": suites}))
    tmp.replace(memo)
    return suites


def discover(sources: list[HostSource]) -> list[str]:
    own = [suite for source in sources for suite in source.suites]
    main, security = archive_mirrors(sources)
    if main is None:
        return own
    codenames: list[str] = []
    for alias in ALIASES:
        release = _release_fields(main.uri, alias)
        name = release.get("Codename")
        if name and not _release_fields(main.uri, name):  # experimental's codename is rc-buggy
            name = alias
        if name and name not in codenames:
            codenames.append(name)
    found: list[str] = []
    for name in codenames:
        for companion in COMPANIONS:
            suite = name + companion
            source = security if companion == "-security" and security else main
            if suite in own or _release_fields(source.uri, suite):
                found.append(suite)
    return found + [s for s in own if s not in found]


def _release_fields(uri: str, suite: str) -> dict[str, str]:
    """The first fields of dists/<suite>/Release, or {} when the mirror doesn't serve it."""
    for name in ("Release", "InRelease"):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/dists/{suite}/{name}",
                                        timeout=PROBE_TIMEOUT_S) as response:
                head = response.read(4096).decode("utf-8", "replace")
        except (urllib.error.URLError, OSError, ValueError):
            continue
        fields = release_head_fields(head)
        if fields.get("Suite") or fields.get("Codename"):
            return fields
    return {}


def host_releases(host_apt_dir: Path = HOST_APT_DIR) -> set[str]:
    """The releases the host's own sources name (bookworm for bookworm-security too)."""
    return {release_of(s) for source in host_sources(host_apt_dir) for s in source.suites}


def release_of(suite: str) -> str:
    """The release a suite belongs to: bookworm-security -> bookworm."""
    for companion in COMPANIONS[1:]:
        if suite.endswith(companion):
            return suite.removesuffix(companion)
    return suite
