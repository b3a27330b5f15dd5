"""Reports: the ok decision, JSON round trip, merging CI jobs' reports, the CI job matrix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smcpatch.commands import kernels as kernels_cmd
from smcpatch.commands import report as report_cmd
from smcpatch.errors import BadInput
from smcpatch.kernels.matrix import load_matrix
from smcpatch.outputs import jsonreport
from smcpatch.pipeline.report import ModuleReport, TargetReport


def _evidence(verdict: str) -> dict[str, object]:
    """evidence_json's shape: a fixed function takes the RCU read lock, a vulnerable one a dst
    reference."""
    def site(offset: int, target: str) -> dict[str, object]:
        return {"fragment": "smc_clc_prfx_match", "offset": offset, "target": target}

    fixed = verdict == "fixed"
    return {"function": "smc_clc_prfx_match", "fragments": {"smc_clc_prfx_match": 412},
            "call_targets": ["__rcu_read_lock", "__rcu_read_unlock", "smc_clc_prfx_match_ipv4"]
            if fixed else ["__rcu_read_lock", "__rcu_read_unlock", "dst_release"],
            "rcu_read_lock_sites": [site(0x2a, "__rcu_read_lock")],
            "rcu_read_unlock_sites": [site(0x9c, "__rcu_read_unlock")],
            "dst_reference_sites": [] if fixed else [site(0xb4, "dst_release")],
            "dwarf_inlined": ["__sk_dst_get", "dst_dev_rcu"] if fixed else ["sk_dst_get"]}


def _module(verdict: str) -> ModuleReport:
    return ModuleReport(path="smc.ko", verdict=verdict, reasons=[], vermagic="6.1.0-50-amd64 ",
                        has_dwarf=True, evidence=_evidence(verdict))


def _report(version: str = "6.1.176", **changes: object) -> TargetReport:
    target = next(t for t in load_matrix() if t.version == version)
    r = TargetReport.for_target(target)
    r.source_state = target.expect or "vulnerable"
    r.before, r.after = _module("vulnerable"), _module("fixed")
    r.vermagic_ok = r.modversions_ok = True
    r.changed_functions = r.expected_changed_functions = ["smc_clc_prfx_match"]
    for key, value in changes.items():
        setattr(r, key, value)
    r.finish()
    return r


def test_ok_needs_every_check() -> None:
    assert _report().ok
    assert not _report(after=_module("unknown")).ok
    assert not _report(vermagic_ok=False).ok
    assert not _report(changed_functions=["smc_clc_prfx_match", "smc_clc_send_proposal"]).ok
    assert _report(changed_functions=["smc_clc_prfx_match", "smc_clc_prfx_match.cold"]).ok
    assert not _report(source_state="fixed").ok  # kernels.toml says 6.1.176 is vulnerable
    compile_only = _report(compile_only=True, vermagic_ok=False, modversions_ok=False)
    assert compile_only.ok  # a compile-and-inspect target is not judged on loading


def test_merge_joins_ci_jobs_reports(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    for version in ("6.1.176", "6.12.117"):
        jsonreport.write_json(jobs / f"report-{version}.json",
                              jsonreport.document([_report(version)]))
    merged_result = report_cmd.merge(jobs, tmp_path / "merged.json")
    reports, code = merged_result.reports, merged_result.exit_code
    assert code == 0
    assert sorted(r.version for r in reports) == ["6.1.176", "6.12.117"]
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["ok"] and len(merged["targets"]) == 2
    failing = _report("6.1.192", after=_module("vulnerable"))
    jsonreport.write_json(jobs / "report-6.1.192.json", jsonreport.document([failing]))
    assert report_cmd.merge(jobs, None).exit_code == 1


@pytest.mark.malformed_documents("x.json")
@pytest.mark.parametrize("content", ["not json", '{"schema": "other"}', '{"schema": '
                                     '"smcpatch-report/1", "targets": [{"bogus": 1}]}'])
def test_merge_refuses_what_is_not_a_report(tmp_path: Path, content: str) -> None:
    (tmp_path / "x.json").write_text(content)
    with pytest.raises(BadInput):
        report_cmd.merge(tmp_path, None)


def test_github_matrix_has_one_job_per_target() -> None:
    jobs = json.loads(kernels_cmd.matrix_text("github", "all"))["include"]
    assert len(jobs) == 12  # 4 default kernels x 3 flavours
    assert {"kernel": "6.1.176", "arch": "amd64", "flavour": "rt-amd64",
            "package_version": "6.1.176-1", "release": "6.1.0-50-rt-amd64"} in jobs
    with pytest.raises(BadInput):
        kernels_cmd.matrix_text("yaml", "amd64")
    every = json.loads(kernels_cmd.matrix_text("github", "", arches=["all"]))["include"]
    # 4 kernels x (amd64, arm64), plain flavours, and s390x only where served (6.1.176 of
    # bookworm: bookworm-security has no s390x)
    assert len(every) == 9
    assert [j["kernel"] for j in every if j["arch"] == "s390x"] == ["6.1.176"]
    assert {"kernel": "6.12.107", "arch": "arm64", "flavour": "arm64",
            "package_version": "6.12.107-1~deb12u1", "release": "6.12.107+deb12-arm64"} in every
    text = kernels_cmd.matrix_text("text", "cloud", arches=["arm64"])
    assert "smcpatch verify --kernel 6.1.176 --arch arm64 --flavour cloud-arm64 " in text


def test_interrupted_report_write_keeps_the_previous_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from smcpatch.plumbing import files

    path = tmp_path / "r.json"
    jsonreport.write_json(path, {"schema": "old"})

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(files.os, "replace", interrupted)  # the new report written, not placed
    with pytest.raises(KeyboardInterrupt):
        jsonreport.write_json(path, {"schema": "new"})
    assert json.loads(path.read_text()) == {"schema": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
