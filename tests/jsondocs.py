"""docs/json.md, made from the JSON Schemas the package ships (src/smcpatch/data/schemas/): one
section per document kind, a table of its keys, then one table per object inside it, each key
with its type and the schema's own description. The schemas are the one place the keys are
described; tests/test_docs.py checks the page is what this makes.

    python -m tests.jsondocs        # after changing a schema: rewrite docs/json.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from smcpatch.data import SCHEMAS  # noqa: E402

PAGE = ROOT / "docs" / "json.md"

HEADER = """\
# JSON for machines: the documents and their keys

Every JSON document smcpatch writes for machines names its kind and shape in `schema`
(`smcpatch-report/1`, ...) and the smcpatch that wrote it in `tool_version`. Each kind has a JSON
Schema (draft 2020-12) in the package, `src/smcpatch/data/schemas/<kind>.schema.json`
(`smcpatch.data.SCHEMAS` maps each `schema` value to its file). The schemas are exact for the
smcpatch that ships them: every key it writes is described there, `required` lists the keys
always present, and no other key is allowed (`additionalProperties: false`) except in maps (a
file name to an exit status, a stage to its seconds). The tests validate every document the test
suite writes (unit and integration runs, the CLI in subprocesses included) against its schema.
A key added in a later smcpatch comes with its schema; a key removed, renamed or given another
meaning changes the kind's version (`/2`).

This page is made from the schemas (`python -m tests.jsondocs`); the descriptions are theirs.

To check a document:

```
python - report.json <<'EOF'
import json, sys
from jsonschema import Draft202012Validator
from smcpatch.data import SCHEMAS
doc = json.load(open(sys.argv[1]))
Draft202012Validator(json.loads(SCHEMAS[doc["schema"]].read_text())).validate(doc)
EOF
```

| kind | written by |
|---|---|
{kinds}

Not described here: the VEX documents (OpenVEX, CSAF 2.0, CycloneDX 1.6: their own standards'
schemas, [vex.md](vex.md)), `smcpatch matrix --format github|json` (a GitHub Actions
`strategy.matrix` and its job list, [usage.md](usage.md)), and smcpatch's private files in its
cache and in the directories it marks as its own ([cache.md](cache.md)).
"""

WRITERS = {
    "smcpatch-report/1": "`verify --json PATH`, `report --merge DIR --json PATH`",
    "smcpatch-inspect/1": "`inspect --module M --json` (stdout)",
    "smcpatch-dkms/1": "`dkms --kernel K --json` (stdout)",
    "smcpatch-scan/1": "`scan --json PATH`",
    "smcpatch-race/1": "`race --json PATH`",
    "smcpatch-host/1": "`host --json PATH`",
    "smcpatch-bench/1": "`bench`: `stats.json` in its results directory",
    "smcpatch-audit/1": "`audit --json PATH`",
    "smcpatch-livepatch/1": "`livepatch --kernel K --json PATH` (also `.smcpatch-livepatch.json` "
                            "beside the module)",
}
SCALAR_DEFS = {"tool_version": "string", "generated": "string (UTC time)",
               "strings": "array of strings"}


def slug(heading: str) -> str:
    """GitHub's anchor of a heading (tests/test_docs.py's rule)."""
    text = re.sub(r"(`+)(.+?)\1", lambda m: m.group(2), heading)
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


class Page:
    """One kind's section: its tables, each object type once, in the order first met; a
    definition an earlier kind has too (the same `$defs` entry) is linked to, not repeated."""

    def __init__(self, kind: str, schema: dict[str, Any],
                 shown: dict[tuple[str, str], str]) -> None:
        self.kind, self.schema, self.shown = kind, schema, shown
        self.tables: list[tuple[str, str, dict[str, Any]]] = []  # (name, heading, object schema)
        self.headings: dict[str, str] = {}

    def table_of(self, name: str, node: dict[str, Any]) -> str:
        """A link to the table of an object type (queued when first met)."""
        same = (name, json.dumps(node, sort_keys=True))
        if name not in self.headings:
            if same in self.shown:
                self.headings[name] = self.shown[same]
            else:
                self.headings[name] = f"`{name}` ({self.kind})"
                self.tables.append((name, self.headings[name], node))
                self.shown[same] = self.headings[name]
        return f"[{name}](#{slug(self.headings[name])})"

    def type_of(self, key: str, node: dict[str, Any]) -> str:
        if "$ref" in node:
            name = node["$ref"].removeprefix("#/$defs/")
            target = self.schema["$defs"][name]
            if name in SCALAR_DEFS:
                return SCALAR_DEFS[name]
            if "enum" in target:
                return self.values(target["enum"])
            return self.type_of(name, target) if "properties" not in target else \
                self.table_of(name, target)
        if "const" in node:
            return self.values([node["const"]])
        if "enum" in node:
            return self.values(node["enum"])
        if "oneOf" in node:
            return " or ".join(self.type_of(key, n) for n in node["oneOf"])
        kinds = node.get("type")
        if isinstance(kinds, list):
            return " or ".join(self.type_of(key, {**node, "type": k}) for k in kinds)
        if kinds == "array":
            items = node.get("items", {})
            inner = self.type_of(f"{key}[]", items)  # an object inline: the table `fixes[]`
            return f"array of {inner}" if "properties" in items or "$ref" in items \
                else f"array of {inner}s" if inner in ("string", "integer", "number") \
                else f"array of {inner}"
        if kinds == "object" and "properties" in node:
            return self.table_of(key, node)
        if kinds == "object":
            value = node.get("additionalProperties", {})
            return f"object: name → {self.type_of(key, value)}"
        return str(kinds)

    @staticmethod
    def values(values: list[Any]) -> str:
        return " \\| ".join(f"`{json.dumps(v, ensure_ascii=False)}`" for v in values)

    def rows(self, node: dict[str, Any]) -> list[str]:
        required = set(node.get("required", ()))
        lines = ["| key | type | meaning |", "|---|---|---|"]
        for key, sub in node["properties"].items():
            text = sub.get("description") or self.described(sub)
            kind = self.type_of(key, sub) + ("" if key in required else " (may be absent)")
            lines.append(f"| `{key}` | {kind} | {cell(text)} |")
        return lines

    def described(self, node: dict[str, Any]) -> str:
        name = node.get("$ref", "").removeprefix("#/$defs/")
        return str(self.schema["$defs"].get(name, {}).get("description", ""))

    def render(self) -> list[str]:
        path = SCHEMAS[self.kind].relative_to(ROOT)
        out = [f"## {self.kind}", "",
               f"Written by {WRITERS[self.kind]}. Schema: [{path.name}](../{path}).", "",
               cell(self.schema["description"]), "", *self.rows(self.schema)]
        done = 0
        while done < len(self.tables):  # tables met while rendering join the queue
            name, heading, node = self.tables[done]
            done += 1
            out += ["", f"### {heading}", ""]
            if node.get("description"):
                out += [cell(node["description"]), ""]
            out += self.rows(node)
        return out


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    schemas = {kind: json.loads(path.read_text(encoding="utf-8"))
               for kind, path in SCHEMAS.items()}
    kinds = "\n".join(f"| [{kind}](#{slug(kind)}) | {WRITERS[kind]} |" for kind in schemas)
    lines = [HEADER.replace("{kinds}", kinds)]
    shown: dict[tuple[str, str], str] = {}
    for kind, schema in schemas.items():
        lines += Page(kind, schema, shown).render() + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def main() -> None:
    PAGE.write_text(render(), encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
