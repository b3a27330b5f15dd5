"""The CI files for packagers, `.github/workflows/verify.yml` and `.gitlab-ci.yml`: valid by
check-jsonschema's vendored schemas (and a broken copy is not), and in step with the tool itself:
the matrix keys and kernels it prints, the options its `verify` and `report` tasks take.

Offline and fast: the schemas ship inside check-jsonschema, and `inv matrix` / `inv <task> --help`
read only the package's own kernels.toml.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.faults import ROOT, inv

WORKFLOW = ROOT / ".github" / "workflows" / "verify.yml"
GITLAB_CI = ROOT / ".gitlab-ci.yml"
GITHUB_SCHEMA = "vendor.github-workflows"
GITLAB_SCHEMA = "vendor.gitlab-ci"
DEBIAN_IMAGE = "debian:bookworm"
DISPATCH_ARCHES = ["amd64", "arm64", "s390x", "all"]

OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
MATRIX_REF = re.compile(r"\$\{\{\s*matrix\.([A-Za-z_][\w-]*)\s*\}\}")


# -- helpers --------------------------------------------------------------------------------------
def load_yaml(path: Path) -> Any:
    """PyYAML when installed, else ruamel.yaml (check-jsonschema's own parser)."""
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is absent
        from ruamel.yaml import YAML

        return YAML(typ="safe").load(path.read_text())
    return yaml.safe_load(path.read_text())


@functools.cache
def workflow() -> dict[str, Any]:
    data = load_yaml(WORKFLOW)
    assert isinstance(data, dict), WORKFLOW
    return data


@functools.cache
def gitlab_ci() -> dict[str, Any]:
    data = load_yaml(GITLAB_CI)
    assert isinstance(data, dict), GITLAB_CI
    return data


def job(name: str) -> dict[str, Any]:
    jobs: dict[str, Any] = workflow()["jobs"]
    assert name in jobs, sorted(jobs)
    return jobs[name]


def triggers() -> dict[str, Any]:
    """The `on:` mapping (YAML 1.1, i.e. PyYAML, reads the key `on` as True)."""
    data = workflow()
    on = data.get("on", data.get(True))
    assert isinstance(on, dict), on
    return on


def validate(path: Path, schema: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema,
                           str(path)], capture_output=True, text=True, timeout=120, check=False)


def steps(job_name: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = job(job_name)["steps"]
    return found


def step_using(job_name: str, action: str) -> dict[str, Any]:
    """The one step of a job that uses `action` (owner/name, without @version)."""
    found = [s for s in steps(job_name) if str(s.get("uses", "")).split("@")[0] == action]
    assert len(found) == 1, (job_name, action, found)
    return found[0]


def flat(text: str) -> str:
    """Whitespace (and line continuations) collapsed: `${{ a }}` and `${{a}}` compare equal."""
    return re.sub(r"\s+", "", text)


def command_lines(script: str) -> list[str]:
    """A shell script's commands, one per line, backslash continuations joined."""
    return [" ".join(line.split()) for line in script.replace("\\\n", " ").splitlines()]


def smcpatch_command(script: str, task: str) -> str:
    """The one `smcpatch <task> ...` command line of a script."""
    found = [line for line in command_lines(script) if f"smcpatch {task} " in f"{line} "]
    assert len(found) == 1, (task, script)
    return found[0]


def github_script(job_name: str) -> str:
    return "\n".join(str(s["run"]) for s in steps(job_name) if "run" in s)


def gitlab_script(job_name: str) -> str:
    return "\n".join(str(line) for line in gitlab_ci()[job_name]["script"])


def options_of(command: str) -> list[str]:
    return sorted(set(OPTION.findall(command)))


def strings_in(node: Any) -> list[str]:
    """Every string anywhere inside a loaded YAML node (keys and values)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in strings_in(k) + strings_in(v)]
    if isinstance(node, list):
        return [s for item in node for s in strings_in(item)]
    return []


@functools.cache
def help_options(task: str) -> frozenset[str]:
    """The long options `inv <task> --help` lists."""
    proc = inv(task, "--help")
    assert proc.returncode == 0, proc.stderr
    return frozenset(OPTION.findall(proc.stdout))


@functools.cache
def printed_matrix(fmt: str, *args: str) -> Any:
    proc = inv("matrix", "--format", fmt, *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def github_entries(*args: str) -> list[dict[str, str]]:
    entries: list[dict[str, str]] = printed_matrix("github", *args)["include"]
    assert entries, "the matrix printed no job"
    return entries


def ci_commands() -> dict[tuple[str, str], str]:
    """(ci, task) -> the command line of that task in that CI file."""
    return {
        ("github", "matrix"): smcpatch_command(github_script("plan"), "matrix"),
        ("github", "verify"): smcpatch_command(github_script("verify"), "verify"),
        ("github", "report"): smcpatch_command(github_script("report"), "report"),
        ("gitlab", "verify"): smcpatch_command(gitlab_script("verify"), "verify"),
        ("gitlab", "report"): smcpatch_command(gitlab_script("report"), "report"),
    }


CI_OPTIONS = [(ci, task, option) for (ci, task), command in ci_commands().items()
              for option in options_of(command)]


# -- both files: valid by the vendored schemas, and the check can fail ---------------------------
@pytest.mark.parametrize(("path", "schema"),
                         [(WORKFLOW, GITHUB_SCHEMA), (GITLAB_CI, GITLAB_SCHEMA)],
                         ids=["github", "gitlab"])
def test_schema_accepts(path: Path, schema: str) -> None:
    proc = validate(path, schema)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("path", "schema", "old", "new"), [
    (WORKFLOW, GITHUB_SCHEMA, "runs-on:", "run-on:"),
    (WORKFLOW, GITHUB_SCHEMA, "needs: plan", "need: plan"),
    (GITLAB_CI, GITLAB_SCHEMA, "when: always", "when: sometimes"),
], ids=["github-run-on", "github-need", "gitlab-when"])
def test_schema_rejects_a_broken_copy(path: Path, schema: str, old: str, new: str,
                                      tmp_path: Path) -> None:
    text = path.read_text()
    assert old in text
    broken = tmp_path / path.name
    broken.write_text(text.replace(old, new, 1))
    proc = validate(broken, schema)
    assert proc.returncode != 0, proc.stdout
    assert "validation done" not in proc.stdout


@pytest.mark.parametrize(("ci", "task", "option"), CI_OPTIONS,
                         ids=[f"{ci}-{task}{option}" for ci, task, option in CI_OPTIONS])
def test_ci_option_is_an_option_of_the_task(ci: str, task: str, option: str) -> None:
    assert option in help_options(task), f"{ci}: `{task} {option}` is not in `inv {task} --help`"


# -- GitHub Actions -------------------------------------------------------------------------------
def test_github_triggers() -> None:
    on = triggers()
    assert on["push"]["branches"] == ["main"]
    assert all(entry["cron"].split() for entry in on["schedule"])
    arch = on["workflow_dispatch"]["inputs"]["arch"]
    assert arch["type"] == "choice"
    assert arch["default"] == "amd64"
    assert arch["options"] == DISPATCH_ARCHES


@pytest.mark.parametrize("arch", DISPATCH_ARCHES)
def test_every_dispatch_arch_plans_jobs(arch: str) -> None:
    entries = github_entries("--arch", arch)
    arches = {e["arch"] for e in entries}
    assert arches == ({"amd64", "arm64", "s390x"} if arch == "all" else {arch})


def test_every_job_installs_the_tool_in_a_debian_container() -> None:
    for name, spec in workflow()["jobs"].items():
        assert spec["container"] == DEBIAN_IMAGE, name
        script = github_script(name)
        install = next(line for line in command_lines(script) if "apt-get install" in line)
        for package in ("python3", "python3-pip", "python3-venv", "git", "ca-certificates"):
            assert package in install.split(), (name, package)
        assert "apt-get update" in script, name
        assert any(re.search(r"\bpip install \.$", line) for line in command_lines(script)), name
        step_using(name, "actions/checkout")


def test_actions_are_pinned_to_a_major_version() -> None:
    for name in workflow()["jobs"]:
        for step in steps(name):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), (name, step["uses"])


def test_plan_writes_the_matrix_the_tool_prints() -> None:
    plan = job("plan")
    [matrix_step] = [s for s in steps("plan") if "matrix --format github" in s.get("run", "")]
    command = smcpatch_command(matrix_step["run"], "matrix")
    assert "--format github" in command
    assert "--arch" in options_of(command)
    assert "inputs.arch" in str(matrix_step.get("env", {})) + command
    assert "GITHUB_OUTPUT" in matrix_step["run"]
    assert "matrix=" in matrix_step["run"]
    assert flat(plan["outputs"]["matrix"]) == flat(
        f"${{{{ steps.{matrix_step['id']}.outputs.matrix }}}}")


def test_verify_matrix_comes_from_plan() -> None:
    verify = job("verify")
    assert verify["needs"] in ("plan", ["plan"])
    assert flat(verify["strategy"]["matrix"]) == flat("${{ fromJSON(needs.plan.outputs.matrix) }}")
    assert verify["strategy"]["fail-fast"] is False


def test_verify_uses_only_keys_the_matrix_has() -> None:
    used = {key for text in strings_in(job("verify")) for key in MATRIX_REF.findall(text)}
    assert {"kernel", "arch", "flavour", "package_version"} <= used
    for entry in github_entries():
        assert used <= set(entry), (sorted(used - set(entry)), entry)


def test_verify_command_writes_one_set_of_reports_per_job() -> None:
    command = smcpatch_command(github_script("verify"), "verify")
    for option in ("--kernel", "--arch", "--flavour"):
        key = option.removeprefix("--")
        assert flat(f"{option} ${{{{ matrix.{key} }}}}") in flat(command), option
    for option, stem, ext in (("--json", "report", "json"), ("--junit", "junit", "xml"),
                              ("--vex", "vex", "json")):
        path = flat(f"{option} reports/{stem}-${{{{ matrix.kernel }}}}-${{{{ matrix.flavour }}}}"
                    f".{ext}")
        assert path in flat(command), option


def test_verify_caches_each_target() -> None:
    cache = step_using("verify", "actions/cache")["with"]
    assert cache["path"] == "~/.cache/smcpatch"
    assert {"package_version", "flavour"} <= set(MATRIX_REF.findall(cache["key"]))


def test_verify_uploads_its_reports_always() -> None:
    upload = step_using("verify", "actions/upload-artifact")
    assert upload["if"] == "always()"
    assert upload["with"]["path"].rstrip("/") == "reports"
    assert {"kernel", "flavour"} <= set(MATRIX_REF.findall(upload["with"]["name"]))


def test_report_merges_every_verify_job() -> None:
    report = job("report")
    needs = [report["needs"]] if isinstance(report["needs"], str) else report["needs"]
    assert "verify" in needs
    assert "always()" in report["if"]
    download = step_using("report", "actions/download-artifact")["with"]
    assert download["merge-multiple"] is True
    assert download["path"] == "reports"
    upload_name = step_using("verify", "actions/upload-artifact")["with"]["name"]
    assert upload_name.startswith(download["pattern"].rstrip("*"))
    command = smcpatch_command(github_script("report"), "report")
    assert "--merge reports" in command
    assert "--json merged.json" in command
    uploads = [s for s in steps("report") if s.get("uses", "").startswith("actions/upload-artif")]
    assert any("merged.json" in str(s["with"]["path"]) for s in uploads)


def test_report_publishes_the_junit_files() -> None:
    junit = step_using("report", "mikepenz/action-junit-report")
    assert junit["if"] == "always()"
    assert junit["with"]["report_paths"] == "reports/junit-*.xml"
    assert job("report")["permissions"]["checks"] == "write"


# -- GitLab CI ------------------------------------------------------------------------------------
def gitlab_matrix() -> list[dict[str, list[str]]]:
    entries: list[dict[str, list[str]]] = gitlab_ci()["verify"]["parallel"]["matrix"]
    return entries


def test_gitlab_kernels_are_kernels_of_the_matrix() -> None:
    printed = printed_matrix("json")
    kernels = {entry["kernel"] for entry in printed}
    arches = {entry["arch"] for entry in printed}
    for entry in gitlab_matrix():
        assert entry["KERNEL"] and set(entry["KERNEL"]) <= kernels, (entry["KERNEL"], kernels)
        assert entry["ARCH"] and set(entry["ARCH"]) <= arches, (entry["ARCH"], arches)


def test_gitlab_verify_job() -> None:
    ci = gitlab_ci()
    verify = ci["verify"]
    assert verify.get("image", ci.get("default", {}).get("image")) == DEBIAN_IMAGE
    command = smcpatch_command(gitlab_script("verify"), "verify")
    for option, variable in (("--kernel", "$KERNEL"), ("--arch", "$ARCH")):
        assert f"{option} {variable}" in command
    for option in ("--json", "--junit", "--vex"):
        assert re.search(rf"{option} reports/\S*\$KERNEL-\$ARCH\.", command), option
    artifacts = verify["artifacts"]
    assert artifacts["when"] == "always"
    assert [p.rstrip("/") for p in artifacts["paths"]] == ["reports"]
    assert artifacts["reports"]["junit"] == "reports/junit-*.xml"


def test_gitlab_install_steps() -> None:
    ci = gitlab_ci()
    for name in ("verify", "report"):
        template = ci[ci[name]["extends"]]
        script = "\n".join(template["before_script"])
        install = next(line for line in command_lines(script) if "apt-get install" in line)
        for package in ("python3", "python3-pip", "python3-venv", "git", "ca-certificates"):
            assert package in install.split(), (name, package)
        assert re.search(r"\bpip install \.$", script, re.MULTILINE), name


def test_gitlab_report_job() -> None:
    ci = gitlab_ci()
    report = ci["report"]
    assert ci["stages"].index(report["stage"]) > ci["stages"].index(ci["verify"]["stage"])
    assert report["when"] == "always"
    assert {"job": "verify", "artifacts": True} in report["needs"]
    command = smcpatch_command(gitlab_script("report"), "report")
    assert "--merge reports" in command
    assert "--json merged.json" in command
    assert "merged.json" in report["artifacts"]["paths"]
