"""The documentation keeps true: every relative link of README.md, docs/*.md and
module_src/README.md names a file that exists, every #anchor a heading of its page (GitHub's
slugs), every http(s) link is well-formed (nothing is fetched), every page of docs/ is linked from
the README, and the README stays a door: at most 12 KiB.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_LIMIT = 12 * 1024  # bytes, as `wc -c README.md` counts them

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
# [text](target "title") and ![alt](target); the text may hold one level of brackets
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def doc_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), ROOT / "module_src" / "README.md"]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks; indented code blocks are prose-free too
    only by convention, so they are read like prose (a link there must hold as well)."""
    lines, fence = [], ""
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if match:
            marker = match.group(1)
            if not fence:
                fence = marker[0] * len(marker)
            elif marker.startswith(fence):
                fence = ""
            continue
        if not fence:
            lines.append((number, line))
    return lines


def links(path: Path) -> list[tuple[int, str]]:
    """Every link target of a page, with its line: inline, reference-style and autolinks, code
    spans and fenced blocks left out."""
    found = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        if match := _REFERENCE.match(line):
            found.append((number, match.group(1)))
            continue
        bare = _CODE_SPAN.sub("", line)
        found += [(number, m.group(1)) for m in _INLINE.finditer(bare)]
        found += [(number, m.group(1)) for m in _AUTOLINK.finditer(bare)]
    return found


def heading_text(raw: str) -> str:
    """A heading as GitHub renders its text: links to their text, code spans to their content,
    emphasis markers and inline HTML dropped."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", raw)
    text = re.sub(r"(`+)(.+?)\1", lambda m: m.group(2), text)
    text = re.sub(r"<[^>]+>", "", text)
    return re.sub(r"(\*{1,3}|(?<!\w)_{1,3}|_{1,3}(?!\w))", "", text)


def slug(text: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (letters, digits, `_`, `-`
    and spaces kept), each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading_text(text).strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a page: its headings' slugs (a repeated one numbered -1, -2, ... as GitHub
    does) and explicit <a name/id> anchors."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        found.update(_HTML_ANCHOR.findall(line))
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """What is wrong with the links of one page, one line each (empty: nothing)."""
    problems = []
    for number, target in links(path):
        where = f"{path.relative_to(root)}:{number}: {target}"
        parts = urlsplit(target)
        scheme = parts.scheme
        if scheme in ("http", "https"):
            host = parts.hostname or ""
            if "." not in host or any(c in target for c in " <>\"") or host.startswith("."):
                problems.append(f"{where}: not a well-formed URL")
            continue
        if scheme == "mailto":
            continue
        if scheme:
            problems.append(f"{where}: a {scheme}: link (only relative paths and http(s))")
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not linked.exists():
            problems.append(f"{where}: no such file")
            continue
        if root not in linked.parents and linked != root:
            problems.append(f"{where}: outside the repository")
            continue
        if anchor:
            if linked.suffix != ".md" or linked.is_dir():
                problems.append(f"{where}: an anchor into something that is not a page")
            elif unquote(anchor) not in anchors(linked):
                problems.append(f"{where}: no heading with the anchor #{anchor} in "
                                f"{linked.relative_to(root)}")
    return problems


@pytest.mark.parametrize("page", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_resolves(page: Path) -> None:
    assert page.is_file()
    assert broken_links(page) == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(README.parent / t.partition("#")[0]).resolve() for _, t in links(README)
              if not urlsplit(t).scheme and t.partition("#")[0]}
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert missing == [], f"docs pages not linked from README.md: {missing}"


def test_the_json_page_is_made_from_the_schemas() -> None:
    """docs/json.md is what tests/jsondocs.py makes of the schemas (`python -m tests.jsondocs`
    rewrites it), and each kind's section names every key its schema allows."""
    from smcpatch.data import SCHEMAS
    from tests import jsondocs
    from tests.outputs.test_schemas import walk

    page = (ROOT / "docs" / "json.md").read_text(encoding="utf-8")
    assert page == jsondocs.render(), "docs/json.md is stale: run `python -m tests.jsondocs`"
    sections = re.split(r"^## ", page, flags=re.M)
    for kind, path in SCHEMAS.items():
        [section] = [s for s in sections if s.startswith(f"{kind}\n")]
        assert f"]({'../' + str(path.relative_to(ROOT))})" in section
        # with the tables of another kind it links to (a definition both share is shown once)
        linked = [s for other in SCHEMAS if other != kind and f"-{slug(other)})" in section
                  for s in sections if s.startswith(f"{other}\n")]
        schema = json.loads(path.read_text(encoding="utf-8"))
        keys = {key for _, node in walk(schema) for key in node.get("properties", {})}
        missing = sorted(key for key in keys
                         if not any(f"| `{key}` |" in s for s in (section, *linked)))
        assert not missing, f"{kind}: keys not on docs/json.md: {missing}"


def test_readme_is_a_door() -> None:
    size = len(README.read_bytes())
    assert size <= README_LIMIT, (f"README.md is {size} bytes, more than {README_LIMIT}: move "
                                  "the detail into docs/")


# -- the checker itself --------------------------------------------------------------------------
def test_slugs_are_githubs() -> None:
    assert slug("Exit codes") == "exit-codes"
    assert slug("JSON report (schema smcpatch-report/1)") == "json-report-schema-smcpatch-report1"
    assert slug("module_src/: the verified fixed sources (the default)") == \
        "module_src-the-verified-fixed-sources-the-default"
    assert slug("Benchmark: what the fix costs (`inv bench`)") == \
        "benchmark-what-the-fix-costs-inv-bench"
    assert slug("**Bold** and [a link](x.md)") == "bold-and-a-link"


def test_the_checker_finds_broken_links(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "a.md").write_text("# A page\n\n## Second part\n## Second part\n")
    (tmp_path / "outside.md").write_text("# Not ours\n")
    page = root / "README.md"
    page.write_text(
        "# Door\n\n"
        "[ok](docs/a.md) [ok](docs/a.md#second-part) [ok](docs/a.md#second-part-1) [ok](#door)\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#third-part) [here](#nowhere)\n"
        "[url](https://example.org/x) [bad url](https://nohost) [ftp](ftp://example.org/f)\n"
        "`[in code](docs/c.md)`\n"
        "```\n[in a fence](docs/d.md)\n```\n"
        "[up](../outside.md) [up and gone](../../gone.md)\n")
    problems = broken_links(page, root)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "docs/b.md: no such file",
        "docs/a.md#third-part: no heading with the anchor #third-part in docs/a.md",
        "#nowhere: no heading with the anchor #nowhere in README.md",
        "https://nohost: not a well-formed URL",
        "ftp://example.org/f: a ftp: link (only relative paths and http(s))",
        "../outside.md: outside the repository",
        "../../gone.md: no such file",
    ]
