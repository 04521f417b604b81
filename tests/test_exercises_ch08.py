"""The chapter 08 checks: right answers pass, wrong ones are caught (strict mode) with a reason, and an
unattempted exercise never raises. Each build check runs the answer with the real engine in a scratch
repository: the deploy rules through gitlab-ci-local's job listing, the cost step through act on two pull
requests, the pre-receive hook through git pushes to a bare origin."""
from pathlib import Path

import pytest

from mlops_lab import cicd
from mlops_lab.checks import WrongAnswer
from mlops_lab.exercises import ch08

pytestmark = pytest.mark.skipif(not (cicd.act() and cicd.gitlab_ci_local()), reason="needs act and gitlab-ci-local")


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_STRICT_CHECKS", "1")


# ---- ex-08-1 -----------------------------------------------------------------------------------------------
ON_MAIN_MANUAL = [{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", "when": "manual"}]


def test_deploy_rules_check_asks_gitlab_ci_local(capsys):
    ch08.check_deploy_rules(ON_MAIN_MANUAL)
    assert "correct" in capsys.readouterr().out
    table = ch08.deploy_jobs(ON_MAIN_MANUAL)
    assert table["deploy listed"].tolist() == [True, False, False]
    assert table.loc["push to main", "when"] == "manual" and table["jobs"].str.contains("build").all()
    with pytest.raises(WrongAnswer, match=r"run on its own \(when: on_success\) after every push to main"):
        ch08.check_deploy_rules([{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"}])      # no approval
    with pytest.raises(WrongAnswer, match="feature branches .*merge request pipelines"):
        ch08.check_deploy_rules([{"when": "manual"}])                                     # every pipeline
    with pytest.raises(WrongAnswer, match="does not accept these rules"):
        ch08.check_deploy_rules([{"if": "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", "when": "manualy"}])
    with pytest.raises(WrongAnswer, match="wrap your rule"):
        ch08.check_deploy_rules(ON_MAIN_MANUAL[0])


def test_merge_request_pipelines_have_no_commit_branch():
    """As on GitLab, CI_COMMIT_BRANCH is unset in a merge request pipeline: a rule on it alone stays out."""
    table = ch08.deploy_jobs([{"if": "$CI_COMMIT_BRANCH", "when": "manual"}])
    assert table["deploy listed"].tolist() == [True, True, False]
    with pytest.raises(WrongAnswer, match="deploy appears in merge request pipelines"):
        ch08.check_deploy_rules([{"if": '$CI_PIPELINE_SOURCE == "merge_request_event"', "when": "manual"},
                                 {"if": "$CI_COMMIT_BRANCH == 'main'", "when": "manual"}])


# ---- ex-08-2 -----------------------------------------------------------------------------------------------
COST_STEP = {"name": "Cost must not rise", "run": """python - <<'EOF'
import json, subprocess, sys
base = json.loads(subprocess.check_output(["git", "show", "origin/${{ github.base_ref }}:metrics.json"]))
head = json.load(open("metrics.json"))
print(f"cost per application: {base['cost_per_application']} on main, {head['cost_per_application']} here")
sys.exit(head["cost_per_application"] > base["cost_per_application"])
EOF"""}


def test_cost_step_check_runs_act_on_two_pull_requests(capsys):
    ch08.check_cost_step(COST_STEP)
    out = capsys.readouterr().out
    assert "correct" in out and "0.4 on main, 0.43 here" in out          # the step's own log line
    returncode, log = ch08.run_step(COST_STEP, "better")
    assert returncode == 0 and "0.4 on main, 0.38 here" in log
    inverted = {**COST_STEP, "run": COST_STEP["run"].replace("] > base", "] < base")}
    with pytest.raises(WrongAnswer, match=r"(?s)on `worse` .* passed, it should have failed.*on `better`"):
        ch08.check_cost_step(inverted)
    printed = {**COST_STEP, "run": COST_STEP["run"].replace("sys.exit(", "print(")}      # no exit code
    with pytest.raises(WrongAnswer, match=r"(?s)on `worse`.*0.4 on main, 0.43 here"):
        ch08.check_cost_step(printed)
    itself = {**COST_STEP, "run": COST_STEP["run"].replace("github.base_ref", "github.head_ref")}
    with pytest.raises(WrongAnswer, match="on `worse`"):
        ch08.check_cost_step(itself)                                      # compares the branch with itself
    with pytest.raises(WrongAnswer, match="`uses:` an action"):
        ch08.check_cost_step({"uses": "iterative/setup-cml@v2", "run": "cml comment create report.md"})
    with pytest.raises(WrongAnswer, match="dict with a `run` key"):
        ch08.check_cost_step("python compare.py")


# ---- ex-08-3 -----------------------------------------------------------------------------------------------
REPORT = """\
### Batch `2024-03.csv`: 2000 rows, **fails the contract**: 1 problem(s)

| check            | column   |   rows | examples           | expected                                                                                               | row_index                 |
|:-----------------|:---------|-------:|:-------------------|:-------------------------------------------------------------------------------------------------------|:--------------------------|
| unknown category | purpose  |     60 | debt consolidation | one of ['debt_consolidation', 'credit_card', 'home_improvement', 'car', 'small_business', 'education'] | 71, 92, 109, 119, 140 ... |"""


def _gitlab_log() -> str:
    """The data-test job's log as gitlab-ci-local prints it (the format of a real run, trimmed)."""
    failure = "\n".join(f"data-test  > E       {'AssertionError: ' if i == 0 else '  '}{line}"
                        for i, line in enumerate(REPORT.splitlines()))
    failed = "FAILED tests/test_data.py::test_export_meets_the_contract[2024-03] - AssertionError: "
    summary = "\n".join(f"data-test  > {failed if i == 0 else '  '}{line}"
                        for i, line in enumerate(REPORT.splitlines()))
    return f"""lint       starting shell (test)
data-test  starting shell (test)
unit       starting shell (test)
data-test  $ make data-test
data-test  > python -m pytest -q -p no:cacheprovider tests/test_data.py
data-test  > ......F....                                                              [100%]
data-test  > ___________________ test_export_meets_the_contract[2024-03] ____________________
{failure}
data-test  > E       assert False
data-test  > =========================== short test summary info ============================
{summary}
data-test  > assert False
data-test  > 1 failed, 10 passed in 3.69s
unit       > 12 passed in 4.25s

 PASS  lint
 PASS  unit
 FAIL  data-test
data-test  > make: *** [Makefile:22: data-test] Error 1
"""


def _act_log() -> str:
    """The same failure in act's log: the job `checks`, its step `Data tests`."""
    failure = "\n".join(f"[ci/checks ]   | E       {line}" for line in REPORT.splitlines())
    return f"""[ci/checks ] ⭐ Run Main Lint
[ci/checks ]   ✅  Success - Main Lint [12.7ms]
[ci/checks ] ⭐ Run Main Data tests
{failure}
[ci/checks ]   | 1 failed, 10 passed in 3.36s
[ci/checks ]   ❌  Failure - Main Data tests [5.77s]
[ci/checks ] 🏁  Job failed
"""


def failed_run(log: str, engine: str, parse) -> cicd.PipelineRun:
    return cicd.PipelineRun(engine, "bad-batch", "merge_request_event", 2, 8.0, log, parse(log), Path("."))


def test_contract_failures_are_read_from_both_engines_logs():
    for log in (_gitlab_log(), _act_log()):
        table = ch08.contract_failures(log)
        assert table[["export", "column", "rows"]].values.tolist() == [["2024-03.csv", "purpose", 60]]
    real = Path("/tmp/exp/r5.log")              # a real gitlab-ci-local log of this case, where one was kept
    if real.exists():
        assert ch08.contract_failures(real.read_text())["rows"].tolist() == [60]


def test_failed_job_check_reads_the_run(capsys):
    run = failed_run(_gitlab_log(), "GitLab CI (gitlab-ci-local)", cicd._gitlab_jobs)
    assert run.failed == ["data-test"]
    right = {"job": "data-test", "export": "2024-03.csv", "column": "purpose", "rows": 60}
    ch08.check_failed_job(right, run)
    assert "correct" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match="`unit` passed in this run"):
        ch08.check_failed_job({**right, "job": "unit"}, run)
    with pytest.raises(WrongAnswer, match="`pipeline` is not a job of this pipeline"):
        ch08.check_failed_job({**right, "job": "pipeline"}, run)           # never started: not in the table
    with pytest.raises(WrongAnswer, match="that is the whole batch"):
        ch08.check_failed_job({**right, "rows": 2000}, run)
    with pytest.raises(WrongAnswer, match="did not flag the column `amount`"):
        ch08.check_failed_job({**right, "column": "amount"}, run)
    with pytest.raises(WrongAnswer, match="`2024-02.csv` is not the export"):
        ch08.check_failed_job({**right, "export": "2024-02.csv"}, run)
    with pytest.raises(WrongAnswer, match="fill in: rows"):
        ch08.check_failed_job({**right, "rows": ...}, run)
    github = failed_run(_act_log(), "GitHub Actions (act)", cicd._act_jobs)
    ch08.check_failed_job({**right, "job": "Data tests", "export": "2024-03"}, github)   # act names steps
    assert "correct" in capsys.readouterr().out


def test_failed_job_check_wants_a_failed_run():
    passed = failed_run(" PASS  lint\n PASS  data-test\n", "GitLab CI (gitlab-ci-local)", cicd._gitlab_jobs)
    with pytest.raises(ValueError, match="did not fail at the data contract"):
        ch08.check_failed_job({"job": "data-test", "export": "2024-03.csv", "column": "purpose", "rows": 60}, passed)


# ---- ex-08-4 -----------------------------------------------------------------------------------------------
REFERENCE_HOOK = cicd.PRE_RECEIVE.format(status="ci-status")


def test_pre_receive_check_pushes_to_a_bare_origin(capsys):
    ch08.check_pre_receive(REFERENCE_HOOK)
    assert "correct" in capsys.readouterr().out
    trials = ch08.hook_trials(REFERENCE_HOOK)
    assert (trials["outcome"] == trials["expected"]).all() and len(trials) == len(ch08.HOOK_TRIALS)
    assert trials["the hook said"].str.contains("has no passing pipeline").sum() == 2
    with pytest.raises(WrongAnswer, match="no pipeline recorded: accepted, should be refused"):
        ch08.check_pre_receive("#!/bin/sh\nexit 0\n")
    every_branch = '#!/bin/sh\nwhile read old new ref; do\n  [ -f "ci-status/$new" ] || exit 1\ndone\n'
    with pytest.raises(WrongAnswer, match="feature branch, no pipeline recorded: refused, should be accepted"):
        ch08.check_pre_receive(every_branch)
    any_status = ('#!/bin/sh\nwhile read old new ref; do\n  [ "$ref" = refs/heads/main ] || continue\n'
                  '  [ -n "$(ls ci-status)" ] || exit 1\ndone\n')                  # some commit passed, not this one
    with pytest.raises(WrongAnswer, match="its parent passed, it has no pipeline: accepted"):
        ch08.check_pre_receive(any_status)
    unclosed_if = "#!/bin/sh\nwhile read old new ref; do\n  if [ -f ci-status/$new ]; then exit 0\ndone\n"
    with pytest.raises(WrongAnswer, match="cannot parse the hook.*expecting"):
        ch08.check_pre_receive(unclosed_if)


def test_a_hook_file_that_is_not_executable_is_named(tmp_path, capsys):
    hook = tmp_path / "pre-receive"
    hook.write_text(REFERENCE_HOOK)
    with pytest.raises(WrongAnswer, match="not executable"):
        ch08.check_pre_receive(hook)
    hook.chmod(0o755)
    ch08.check_pre_receive(hook)
    assert "correct" in capsys.readouterr().out


# ---- every exercise --------------------------------------------------------------------------------------
def test_unattempted_exercises_never_raise(capsys):
    run = failed_run(_gitlab_log(), "GitLab CI (gitlab-ci-local)", cicd._gitlab_jobs)
    ch08.check_deploy_rules(...)
    ch08.check_cost_step(...)
    ch08.check_failed_job(..., run)
    ch08.check_failed_job({"job": ..., "export": ..., "column": ..., "rows": ...}, run)
    ch08.check_pre_receive(...)
    out = capsys.readouterr().out
    assert out.count("not attempted yet") == 5 and "not quite" not in out


def test_wrong_answers_only_print_outside_strict_mode(monkeypatch, capsys):
    monkeypatch.delenv("MLOPS_LAB_STRICT_CHECKS")
    ch08.check_pre_receive("#!/bin/sh\nexit 1\n")
    assert "not quite" in capsys.readouterr().out
