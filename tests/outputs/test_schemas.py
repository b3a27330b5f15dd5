"""The JSON Schemas of smcpatch's documents (src/smcpatch/data/schemas/, smcpatch.data.SCHEMAS):
each is a valid draft 2020-12 schema that documents every key it allows; a real document of each
kind, made in-process from synthetic data, matches its schema; a broken copy (an unknown key, a
wrong type) does not. That every document the suite writes matches is tests/conftest.py's autouse
fixture; docs/json.md naming every key is tests/test_docs.py's.
"""

from __future__ import annotations

import copy
import json
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from smcpatch.commands import audit as audit_cmd
from smcpatch.commands import dkms as dkms_cmd
from smcpatch.commands import host as host_cmd
from smcpatch.commands import inspect as inspect_cmd
from smcpatch.commands import livepatch as livepatch_cmd
from smcpatch.commands import race as race_cmd
from smcpatch.commands import report as report_cmd
from smcpatch.data import SCHEMAS
from smcpatch.guest import latency
from smcpatch.guest import race as race_guest
from smcpatch.guest.loadcheck import LoadResult
from smcpatch.inspection.judge import Judgement
from smcpatch.inspection.model import Verdict
from smcpatch.installed.advice import Advice
from smcpatch.kernels.targets import ARCH_FLAVOURS
from smcpatch.outputs import jsonreport
from smcpatch.pipeline import report as report_stage
from smcpatch.pipeline.scan import ScanRow
from tests.guest.test_race import _run as race_run
from tests.installed.machine import FakeAdvisor, Machine
from tests.installed.test_host import host as host_run
from tests.outputs.test_vex_junit import ROWS
from tests.packaging.test_signing import fake_signed
from tests.pipeline.test_report import _module, _report
from tests.schemas import problems, schema, tree_problems

ROOT = Path(__file__).resolve().parents[2]
KINDS = sorted(SCHEMAS)


def walk(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema (an object) of a schema, with its JSON pointer."""
    if isinstance(node, dict):
        yield where, node
        for key, value in node.items():
            yield from walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for n, value in enumerate(node):
            yield from walk(value, f"{where}/{n}")


def described(root: dict[str, Any], node: dict[str, Any]) -> bool:
    """The subschema has a description of its own or through the definition it refers to."""
    if "description" in node:
        return True
    if "$ref" in node:
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        return described(root, target)
    return False


# -- the schemas themselves --------------------------------------------------------------------
def test_every_document_kind_of_the_code_has_its_schema() -> None:
    written = {report_stage.SCHEMA, jsonreport.SCHEMA, jsonreport.SCAN_SCHEMA, inspect_cmd.SCHEMA,
               dkms_cmd.SCHEMA, race_cmd.SCHEMA, host_cmd.SCHEMA, latency.STATS_SCHEMA,
               audit_cmd.SCHEMA, livepatch_cmd.SCHEMA}
    assert written == set(SCHEMAS)
    for kind, path in SCHEMAS.items():
        assert path.is_file() and path.parent == ROOT / "src" / "smcpatch" / "data" / "schemas"
        assert path.name == f"{kind.split('/')[0].removeprefix('smcpatch-')}.schema.json"
    package_data = (ROOT / "pyproject.toml").read_text()
    assert '"schemas/*"' in package_data  # shipped in the wheel with the rest of smcpatch.data


@pytest.mark.parametrize("kind", KINDS)
def test_the_schema_is_valid_and_names_its_kind(kind: str) -> None:
    s = schema(kind)
    Draft202012Validator.check_schema(s)
    assert s["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert s["title"] == kind and s["description"]
    assert s["properties"]["schema"]["const"] == kind
    assert {"schema", "tool_version"} <= set(s["required"])  # every document says both


@pytest.mark.parametrize("kind", KINDS)
def test_every_key_is_described_and_no_other_key_is_allowed(kind: str) -> None:
    s = schema(kind)
    for where, node in walk(s):
        if "properties" not in node:
            continue
        assert node.get("additionalProperties") is False, f"{kind} {where}: open to any key"
        assert set(node.get("required", ())) <= set(node["properties"]), f"{kind} {where}"
        for name, sub in node["properties"].items():
            assert described(s, sub), f"{kind} {where}/properties/{name}: no description"
    for name, definition in s["$defs"].items():
        assert described(s, definition) or name == "strings", f"{kind} $defs/{name}"
    refs = {node["$ref"] for _, node in walk(s) if "$ref" in node}
    assert {f"#/$defs/{name}" for name in s["$defs"]} <= refs  # no definition left unused


def test_a_shared_definition_is_the_same_in_every_schema() -> None:
    seen: dict[str, tuple[str, Any]] = {}
    for kind in KINDS:
        for name, definition in schema(kind)["$defs"].items():
            first = seen.setdefault(name, (kind, definition))
            assert first[1] == definition, f"$defs/{name} differs in {first[0]} and {kind}"


def test_enumerations_are_the_codes_own() -> None:
    report_defs = schema("smcpatch-report/1")["$defs"]
    assert set(report_defs["verdict"]["enum"]) == set(typing.get_args(Verdict))
    target = report_defs["target"]["properties"]
    assert set(target["arch"]["enum"]) == set(ARCH_FLAVOURS)
    assert set(schema("smcpatch-scan/1")["properties"]["arches"]["items"]["enum"]) == \
        set(ARCH_FLAVOURS)
    assert set(schema("smcpatch-bench/1")["$defs"]["mode"]["enum"]) == set(latency.MODES)
    # every field of a report target, and what to_json adds
    fields = set(report_stage.TargetReport.__dataclass_fields__)
    assert set(target) == fields | {"changed_functions_ok", "shipped_state", "answer"}
    assert set(report_defs["module"]["properties"]) == \
        set(report_stage.ModuleReport.__dataclass_fields__)
    assert set(report_defs["load"]["properties"]) == set(LoadResult.__dataclass_fields__)
    assert set(schema("smcpatch-race/1")["$defs"]["run"]["properties"]) == \
        set(race_guest.VariantRun.__dataclass_fields__)
    assert set(schema("smcpatch-scan/1")["$defs"]["image"]["properties"]) == \
        set(ScanRow.__dataclass_fields__) | {"purl"}
    assert set(schema("smcpatch-inspect/1")["properties"]) == \
        set(Judgement.__dataclass_fields__) | {"schema", "tool_version"}
    assert set(schema("smcpatch-host/1")["$defs"]["advice"]["properties"]) == \
        set(Advice.__dataclass_fields__)
    bench = schema("smcpatch-bench/1")
    assert set(bench["properties"]["config"]["properties"]) == \
        set(latency.BenchConfig.__dataclass_fields__)
    assert set(bench["$defs"]["stat"]["properties"]) == set(latency.ModeStats.__dataclass_fields__)


# -- one real document of each kind ------------------------------------------------------------
def report_document() -> dict[str, Any]:
    load = LoadResult(arch="amd64", release="6.1.0-50-amd64", module="smc.ko", loaded=True,
                      insmod={"ib_core.ko": 0, "smc.ko": 0},
                      proc_modules=["smc 245760 0 - Live 0x0000000000000000"],
                      kernel_lines=["smc: loading out-of-tree module taints kernel."],
                      tainted=4096, seconds=31.4, detail="smc.ko loaded into 6.1.0-50-amd64")
    reports = [
        _report(shipped=_module("vulnerable"), load=load.to_json(), compiler="gcc-12",
                image_package="linux-image-6.1.0-50-amd64", image_sha256="ab" * 32,
                image_module_path="lib/modules/6.1.0-50-amd64/kernel/net/smc/smc.ko",
                timings={"fetch": 5.1, "classify": 0.2, "variants": 0.4, "build": 30.0,
                         "inspect": 0.8, "total": 36.5},
                timings_detail={"download": 4.0, "extract": 1.0, "build_before": 27.0,
                                "build_after": 3.0},
                from_cache={"fetch": False, "build": False, "inspect": False},
                patch="applied", before_variant="as-shipped", shipped_same_as_before=True,
                vermagic_detail="vermagic '6.1.0-50-amd64 SMP' matches 6.1.0-50-amd64",
                recompiled_for_after=["smc_clc.o"], notes=["a note"]),
        _report("6.12.117", layout_only_functions=["smc_clc_send_accept"],
                inlined_patched_functions=["smc_clc_prfx_match_rcu"],
                sibling_verdicts=[{"fix": "CVE-2025-00000", "function": "smc_x",
                                   "before": "vulnerable", "after": "fixed"}],
                load={"loaded": False, "detail": "the guest did not finish"}),
        _report("6.1.192", error="build failed", error_detail="make: *** [smc_clc.o] Error 1",
                before=None, after=None, vermagic_ok=None, modversions_ok=None),
        _report("6.12.107", source_state="not-served", shipped=_module("vulnerable"),
                before=None, after=None, expect_from="Debian's changelog", compile_only=True),
    ]
    reports[0].fixes = [{"id": "CVE-2025-40168", "state": "vulnerable", "variant": "main",
                         "functions": "smc_clc_prfx_match", "detail": ""}]
    for r in reports:
        r.finish()
    return jsonreport.document(reports)


def inspect_document(objs: dict[str, Path], keys: tuple[Path, Path], tmp: Path) -> dict[str, Any]:
    signed = tmp / "signed.o"
    signed.write_bytes(fake_signed(tmp, *keys, content=objs["modinfo"].read_bytes()))
    symvers = tmp / "Module.symvers"
    symvers.write_text("0x1d24c881\t__rcu_read_lock\tvmlinux\tEXPORT_SYMBOL\t\n")
    result = inspect_cmd.run(signed, "6.1.0-50-amd64", symvers)
    assert result.judgement.signature is not None and result.judgement.modversions_ok is False
    return result.to_json()


def dkms_document(objs: dict[str, Path]) -> dict[str, Any]:
    from smcpatch import inspection

    judgement = inspection.judge(objs["modinfo"], "6.1.0-50-amd64", {"__rcu_read_lock": 1})
    check = dkms_cmd.DkmsCheck(release="6.1.0-50-amd64", dkms="3.0.10", seconds=41.27,
                               patches_applied=["0001-smc-clc-prfx-match-rcu.patch"],
                               judgement=judgement, changed_vs_shipped=["smc_clc_prfx_match"])
    result = dkms_cmd.DkmsResult(
        package=Path("/tmp/pkg"), version="6.1.176-1", kernel="6.1.176-1",
        release_regex="^6\\.1\\.0-50-",
        fixes=[{"id": "CVE-2025-40168", "state": "vulnerable", "variant": "main",
                "patch": "0001-smc-clc-prfx-match-rcu.patch"}], check=check)
    return result.to_json()


def scan_document() -> dict[str, Any]:
    return jsonreport.scan_document(ROWS, ("bookworm", "bookworm-security"), ("amd64",),
                                    jsonreport.now())


def race_document() -> dict[str, Any]:
    runs = [race_run("before", splats=["BUG: KFENCE: use-after-free read in smc_clc_prfx_match"],
                     splat_context=["BUG: KFENCE: ...", " smc_clc_prfx_match+0x4c/0x1a0 [smc]"],
                     reproduced=True, returns={"0": 90, "-19": 10}, attempts=12, seconds=12.0,
                     handshakes=300, declined=290, boot_s=8.5,
                     instrumented="race-widen-vulnerable.patch"),
            race_run("after", outcome="timed out", error="QEMU timed out", boot_s=None)]
    result = race_cmd.RaceResult(kernel="6.12.107-1~deb12u1", release="6.12.107+deb12-amd64",
                                 runs=runs, cmdline="ignore_loglevel slub_debug=P",
                                 checkers=["slub_debug=P: slab poisoning"],
                                 widening={"before": "race-widen-vulnerable.patch"})
    return result.to_json()


def host_document(where: Path) -> dict[str, Any]:
    machine = Machine.make(where)
    release = machine.kernel("6.1.176-1")
    machine.kernel("6.12.117-1~deb12u1")
    machine.kernel_without_smc("7.2.13-amd64", "7.2.13-1")
    machine.modprobe("/etc/modprobe.d/no-smc.conf", "blacklist smc\n")
    result = host_run(machine, release, FakeAdvisor(), action="mitigate", loaded={"smc"})
    data = result.to_json()
    assert data["mitigation"] and any(k["advice"] for k in data["kernels"])
    return data


def bench_document() -> dict[str, Any]:
    stat = latency.ModeStats(mode="clcv1", variant="after", before_median_s=0.00121,
                             after_median_s=0.00119, ratio=0.983, ci_low=0.95, ci_high=1.01,
                             n_before=200, n_after=200, significant=False)
    result = latency.BenchResult(results_dir=Path("."), release="6.12.107+deb12-amd64",
                                 variants=["before", "after"], modes=["clcv1"], values={},
                                 stats=[stat], boot_s=9.1, wall_s=612.0,
                                 timings={"setup_s": 20.1, "validation_s": 9.0, "timed_s": 500.2,
                                          "pyperf_write_s": 0.3, "rmmod_s": [0.01, 0.012],
                                          "insmod_s": [0.2, 0.21], "ueid_s": [0.001, 0.001],
                                          "qemu_wall_s": 580.0, "guest_uptime_at_script_s": 7.9,
                                          "guest_total_s": 560.0})
    return latency.stats_document(result, latency.BenchConfig(modes=("clcv1",)))


def audit_document() -> dict[str, Any]:
    from tests.commands.test_audit import audit_result

    return audit_result().to_json()


def livepatch_document(objs: dict[str, Path]) -> dict[str, Any]:
    from smcpatch.inspection import evidence_json, inspect_module
    from smcpatch.inspection.livepatch import KlpObject, LivepatchJudgement, Replacement

    info = inspect_module(objs["modinfo"])
    replacement = Replacement("smc_clc_prfx_match", "livepatch_smc_clc_prfx_match", "fixed",
                              list(info.evidence.reasons), evidence_json(info))
    judgement = LivepatchJudgement(
        module="/tmp/lp/livepatch_smc_cve_2025_40168.ko", name="livepatch_smc_cve_2025_40168",
        livepatch=True, vermagic="6.12.107+deb12-amd64 SMP preempt mod_unload modversions ",
        objects=[KlpObject("smc", [replacement])], verdict="fixed", reasons=["fixed"],
        vermagic_ok=True, modversions_ok=True)
    result = livepatch_cmd.LivepatchResult(
        kernel="6.12.107-1~deb12u1", release="6.12.107+deb12-amd64", state="vulnerable",
        built=True, message="built", out_dir=Path("/tmp/lp"),
        module=Path("/tmp/lp/livepatch_smc_cve_2025_40168.ko"),
        source=Path("/tmp/lp/livepatch_smc_cve_2025_40168.c"),
        undefined=["__fentry__", "klp_enable_patch"], build_seconds=8.97, total_seconds=115.6,
        judgement=judgement)
    return result.to_json()


@pytest.fixture
def documents(objs: dict[str, Path], keys: tuple[Path, Path],
              tmp_path: Path) -> dict[str, Callable[[], dict[str, Any]]]:
    (tmp_path / "sign").mkdir()
    return {"smcpatch-report/1": report_document,
            "smcpatch-inspect/1": lambda: inspect_document(objs, keys, tmp_path / "sign"),
            "smcpatch-dkms/1": lambda: dkms_document(objs),
            "smcpatch-scan/1": scan_document,
            "smcpatch-race/1": race_document,
            "smcpatch-host/1": lambda: host_document(tmp_path / "machine"),
            "smcpatch-bench/1": bench_document,
            "smcpatch-audit/1": audit_document,
            "smcpatch-livepatch/1": lambda: livepatch_document(objs)}


@pytest.mark.parametrize("kind", KINDS)
def test_a_real_document_matches_and_a_broken_one_does_not(
        kind: str, documents: dict[str, Callable[[], dict[str, Any]]]) -> None:
    document = json.loads(json.dumps(documents[kind]()))  # as written: a tuple is a list
    assert document["schema"] == kind and document["tool_version"]
    assert problems(document) == []

    unknown = {**document, "undocumented": 1}
    assert any("'undocumented' was unexpected" in p for p in problems(unknown))
    wrong = {**document, "tool_version": 2}
    assert any("/tool_version: 2 is not of type 'string'" in p for p in problems(wrong))
    missing = {k: v for k, v in document.items() if k != "tool_version"}
    assert any("'tool_version' is a required property" in p for p in problems(missing))
    for path, value in nested_key(document):  # one level down too
        broken = copy.deepcopy(document)
        node = broken
        for part in path:
            node = node[part]
        node["undocumented"] = value
        assert problems(broken), path  # (under a oneOf, jsonschema says "not valid under any")


def nested_key(document: dict[str, Any]) -> list[tuple[list[Any], Any]]:
    """A path to the first object inside each top-level list or object of the document."""
    found: list[tuple[list[Any], Any]] = []
    for key, value in document.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            found.append(([key, 0], "x"))
        elif isinstance(value, dict) and key not in ("widening",):  # a map: any key is allowed
            found.append(([key], "x"))
    return found


def test_the_merge_of_reports_is_a_report(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    jsonreport.write_json(jobs / "a.json", report_document())
    report_cmd.merge(jobs, tmp_path / "merged.json")
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert problems(merged) == [] and len(merged["targets"]) == 4


def test_wrong_values_are_refused() -> None:
    document = report_document()
    target = document["targets"][0]
    for key, value in (("source_state", "half-fixed"), ("arch", "i386"), ("image_sha256", "AB"),
                       ("before", {"verdict": "fixed"}), ("timings", {"nap": 1.0}),
                       ("load", {"loaded": True})):
        broken = copy.deepcopy(document)
        broken["targets"][0][key] = value
        assert problems(broken), (key, value)
    assert target["ok"] and problems({**document, "generated": "yesterday"})


# -- what the conftest fixture runs ------------------------------------------------------------
@pytest.mark.malformed_documents("broken*.json")
def test_the_tree_check_finds_what_is_wrong(tmp_path: Path) -> None:
    (tmp_path / "ok.json").write_text(json.dumps(scan_document()))
    (tmp_path / "broken-kind.json").write_text('{"schema": "smcpatch-nope/1"}')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "broken-key.json").write_text(
        json.dumps({**scan_document(), "undocumented": 1}))
    (tmp_path / "other.json").write_text('{"schema": "someone else\'s"}')
    (tmp_path / "garbage.json").write_text("not json, smcpatch-report/1")
    found = tree_problems([tmp_path])
    assert len(found) == 2, found
    assert any("broken-kind.json: schema 'smcpatch-nope/1': no such" in p for p in found)
    assert any("broken-key.json" in p and "'undocumented' was unexpected" in p for p in found)
    assert tree_problems([tmp_path]) == []  # each unchanged file judged once
    (tmp_path / "ok.json").write_text(json.dumps({**scan_document(), "suites": "bookworm"}))
    assert any("ok.json" in p for p in tree_problems([tmp_path]))  # changed: judged again
    (tmp_path / "ok.json").write_text(json.dumps(scan_document()))
    assert tree_problems([tmp_path]) == []
    assert problems({"no": "schema"}) and problems([1, 2])
