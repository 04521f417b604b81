"""The CI workflow files are valid (offline, with check-jsonschema's bundled schemas) and do their job."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

WORKFLOWS = {
    ".github/workflows/test.yml": "vendor.github-workflows",
    ".github/workflows/pages.yml": "vendor.github-workflows",
    ".gitlab-ci.yml": "vendor.gitlab-ci",
}


def check_jsonschema(path: Path, schema: str) -> subprocess.CompletedProcess:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")
    assert exe, "check-jsonschema is not installed (it is pinned in requirements.txt)"
    return subprocess.run([exe, "--builtin-schema", schema, str(path)], capture_output=True, text=True,
                          timeout=60)


def load(relative: str) -> dict:
    # PyYAML reads the key `on:` as True (YAML 1.1); map it back.
    data = yaml.safe_load((ROOT / relative).read_text())
    if True in data:
        data["on"] = data.pop(True)
    return data


def steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


@pytest.mark.parametrize("relative", WORKFLOWS)
def test_workflow_is_valid(relative):
    path = ROOT / relative
    if relative == ".gitlab-ci.yml" and not path.exists():
        pytest.skip("no GitLab mirror in this repository")
    result = check_jsonschema(path, WORKFLOWS[relative])
    assert result.returncode == 0, f"{relative} does not validate:\n{result.stdout}{result.stderr}"


def test_the_validator_can_fail(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n    step:\n      - run: make test\n")
    assert check_jsonschema(broken, "vendor.github-workflows").returncode != 0


def test_test_workflow_runs_make_test_under_ci():
    workflow = load(".github/workflows/test.yml")
    assert "pull_request" in workflow["on"] and workflow["on"]["push"]["branches"] == ["main"]
    job_env = {key: str(value) for job in workflow["jobs"].values() for key, value in job.get("env", {}).items()}
    assert job_env.get("CI") == "true", "make test must run with CI=true, so book checks fail instead of skipping"
    runs = [step.get("run", "") for step in steps(workflow)]
    assert any(line.strip() == "make test" for run in runs for line in run.splitlines()), "no `make test` step"
    setup = [step for step in steps(workflow) if step.get("uses", "").startswith("actions/setup-python")]
    assert setup and str(setup[0]["with"]["python-version"]) == "3.11"
    uploads = [step for step in steps(workflow) if step.get("uses", "").startswith("actions/upload-artifact")]
    assert uploads and uploads[0]["with"]["path"] == "_build/html"


def test_pages_workflow_deploys_the_student_edition():
    workflow = load(".github/workflows/pages.yml")
    assert workflow["on"]["push"]["branches"] == ["main"]
    assert workflow["permissions"].get("pages") == "write" and workflow["permissions"].get("id-token") == "write"
    assert workflow["concurrency"]["group"] == "pages"
    runs = [line.strip() for step in steps(workflow) for line in step.get("run", "").splitlines()]
    # the instructor edition is built (every solution checked), but the public site is the student edition,
    # and its launch buttons' branch is pushed by the same job
    assert runs.index("make book") < runs.index("make student-book") < runs.index(".venv/bin/python tools/student_branch.py")
    assert "git push --force origin student" in runs and workflow["permissions"].get("contents") == "write"
    uses = {step.get("uses", "").split("@")[0]: step for step in steps(workflow)}
    assert uses["actions/upload-pages-artifact"]["with"]["path"] == "_build/student-book/_build/html"
    assert "actions/deploy-pages" in uses


def test_gitlab_mirror_runs_the_same_suite():
    if not (ROOT / ".gitlab-ci.yml").exists():
        pytest.skip("no GitLab mirror in this repository")
    pipeline = yaml.safe_load((ROOT / ".gitlab-ci.yml").read_text())
    assert ".ci/run" in pipeline["test"]["script"], "the GitLab test job must run .ci/run (which runs make test)"
    assert "_build/html" in pipeline["test"]["artifacts"]["paths"]
    assert pipeline["pages"]["artifacts"]["paths"] == ["public"]
    assert any("_build/html public" in line for line in pipeline["pages"]["script"])


@pytest.mark.parametrize("relative", [".github/workflows/test.yml", ".github/workflows/pages.yml"])
def test_workflows_install_the_monitoring_packages_binder_gets(relative):
    """Chapters 07, 11 and 12 start Prometheus, Alertmanager and the Pushgateway: the forge's runner needs the
    same system packages apt.txt gives Binder, or make book stops at those chapters."""
    wanted = {line.strip() for line in (ROOT / "apt.txt").read_text().splitlines() if line.startswith("prometheus")}
    installed = {word for step in steps(load(relative)) for word in step.get("run", "").split()}
    assert wanted == {"prometheus", "prometheus-alertmanager", "prometheus-pushgateway"} and wanted <= installed
