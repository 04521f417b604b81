"""The class grader (mlops_lab.grading): the pieces, then a synthetic class of chapter 01 graded end to end.

The class: right, wrong, unattempted, tampered (fake checks in the kernel, fake "correct" saved outputs), one
that tries to delete and edit files outside its folder, one that loops forever, one that allocates too much,
and one that is not JSON. One command grades them all; the test asserts the whole table.
"""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import time
import uuid

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import ROOT
from mlops_lab import checks, grading

CHAPTER = "01_maturity_levels.ipynb"
MIME = grading.VERDICT_MIME


# ---- the pieces -----------------------------------------------------------------------------------------
def test_the_recorder_collects_verdicts_as_data_and_still_prints(capsys):
    checks.verdict("ex-00-0", True, "outside: not recorded")
    with checks.recording() as verdicts:
        checks.check_choice("ex-00-1", "Canary", "canary", why="right.")
        checks.check_choice("ex-00-2", "linear", "canary", hint="think of the error budget.")
        checks.check_number("ex-00-3", ..., 1.0)
    assert verdicts == [
        {"exercise": "ex-00-1", "verdict": "correct", "message": "right.", "hint": ""},
        {"exercise": "ex-00-2", "verdict": "not quite",
         "message": "'linear' is a valid option, but not the right one here.", "hint": "think of the error budget."},
        {"exercise": "ex-00-3", "verdict": "not attempted",
         "message": "replace the ... with your answer and run the cell again.", "hint": ""}]
    printed = capsys.readouterr().out
    assert "[ex-00-1] correct: right." in printed and "[ex-00-2] not quite:" in printed
    assert "[ex-00-0] correct" in printed


def test_check_calls_are_removed_and_restated_on_the_reloaded_module():
    source = 'x = 1  # check.check_a(x) in a comment stays\ncheck.check_a(x,\n              table)\nprint(check.PROBE)\n'
    assert grading.without_check_calls(source) == 'x = 1  # check.check_a(x) in a comment stays\nprint(check.PROBE)\n'
    assert grading.grader_calls(source) == ["_grader_check.check_a(x, table)"]
    assert grading.grader_calls("def f(:\n  check.check_a(1)") == []
    assert grading.without_check_calls("def f(:\n  check.check_a(1)") == "def f(:\n  check.check_a(1)"
    nested = "if True:\n    check.check_a(1)\n"
    assert grading.without_check_calls(nested) == nested  # only top-level calls are the exercise's check


def _edition_and(cells):
    edition = new_notebook(cells=[
        new_code_cell("from mlops_lab.exercises import ch01 as check"),
        new_markdown_cell("```{exercise-start}\n:label: ex-01-1\n```\nQ1\n```{exercise-end}\n```"),
        new_code_cell("a = ...\ncheck.check_levels(a)"),
        new_markdown_cell("```{exercise-start}\n:label: ex-01-2\n```\nQ2\n```{exercise-end}\n```"),
        new_code_cell("b = ...\ncheck.check_worst_drift(b)")])
    return edition, new_notebook(cells=cells)


def test_answer_cells_are_matched_by_id_then_by_the_check_they_call():
    edition, _ = _edition_and([])
    by_id = new_code_cell("a = 1\ncheck.check_levels(a)")
    by_id.id = edition.cells[2].id
    stray = new_code_cell("b = 'label'\ncheck.check_worst_drift(b)")  # its id was lost (another notebook app)
    matched = grading.match_cells(edition, new_notebook(cells=[new_code_cell("print(1)"), by_id, stray]))
    assert matched == {edition.cells[2].id: by_id, edition.cells[4].id: stray}
    assert grading.match_cells(edition, new_notebook(cells=[])) == {edition.cells[2].id: None,
                                                                     edition.cells[4].id: None}


def test_the_grading_notebook_runs_the_students_answer_then_the_graders_check():
    edition, submission = _edition_and([])
    answer = new_code_cell("a = {'x': 1}\ncheck.check_levels = print\ncheck.check_levels(a)",
                           outputs=[nbformat.v4.new_output("stream", name="stdout", text="[ex-01-1] correct")])
    answer.id = edition.cells[2].id
    submission.cells.append(answer)
    nb, graders = grading.grading_notebook(edition, submission, "tok")
    sources = [cell.source for cell in nb.cells]
    assert sources[2] == "a = {'x': 1}\ncheck.check_levels = print\n" and nb.cells[2].outputs == []
    assert "_grader_check.check_levels(a)" in sources[3] and "'tok'" in sources[3]
    assert sources[5] == "b = ...\n"  # not attempted: the edition's cell
    assert [(g.exercise, g.index, g.attempted) for g in graders] == [("ex-01-1", 3, True), ("ex-01-2", 6, False)]
    assert grading.exercise_labels(edition) == ["ex-01-1", "ex-01-2"]
    assert grading.check_module(edition) == "mlops_lab.exercises.ch01"


def test_the_auto_points_are_the_guides():
    guide = (ROOT / "instructors" / "guide.md").read_text()
    assert (f'"correct" is {grading.POINTS["correct"]}, "not quite" with a sensible attempt '
            f'{grading.POINTS["not quite"]}') in re.sub(r"\s+", " ", guide)
    assert grading.POINTS["not attempted"] == 0 and grading.MAX_POINTS == 4


# ---- a class, end to end ------------------------------------------------------------------------------------
RIGHT = {
    "ex-01-1": 'baseline = table["level0_accuracy"].iloc[0]\n'
               'first_alarm = table.loc[table["level0_accuracy"] < baseline - 0.05, "period"].iloc[0]\n'
               'check.check_first_alarm(first_alarm, table)\n',
    "ex-01-2": "levels = {k: v for k, v in check.PRACTICE_LEVELS.items()}\ncheck.check_levels(levels)\n",
    "ex-01-3": 'worst = "concept"\ncheck.check_worst_drift(worst)\n',
    "ex-01-4": 'second_half = table.loc[6:11]\n'
               'early_gain = (second_half["early_auc"] - second_half["retrained_auc"]).mean()\n'
               'check.check_early_label_gain(early_gain, table)\n',
    "ex-01-5": 'def training_months(as_of, months=3, label=TARGET):\n'
               '    lag = OUTCOME_MONTHS if label == TARGET else EARLY_MONTHS + REPORTING_LAG_MONTHS\n'
               '    as_of = pd.Timestamp(as_of)\n'
               '    newest = (pd.Period(as_of, "M") - pd.Period("2024-01", "M")).n\n'
               '    while month_end(newest) + pd.DateOffset(months=lag) > as_of:\n'
               '        newest -= 1\n'
               '    return list(range(newest - months + 1, newest + 1))\n\n\n'
               'check.check_training_months(training_months)\n',
}
WRONG = {
    "ex-01-1": 'first_alarm = "2024-01"\ncheck.check_first_alarm(first_alarm, table)\n',
    "ex-01-2": "levels = {k: 0 for k in check.PRACTICE_LEVELS}\ncheck.check_levels(levels)\n",
    "ex-01-3": 'worst = "label"\ncheck.check_worst_drift(worst)\n',
    "ex-01-4": "early_gain = 0.5\ncheck.check_early_label_gain(early_gain, table)\n",
    "ex-01-5": "def training_months(as_of, months=3, label=TARGET):\n    return [0, 1, 2]\n\n\n"
               "check.check_training_months(training_months)\n",
}
FAKE_VERDICT = {"token": "guess", "verdicts": [{"exercise": f"ex-01-{n}", "verdict": "correct", "message": "",
                                                "hint": ""} for n in range(1, 6)], "errors": [], "replaced": []}
TAMPER = ('import mlops_lab.checks\nfrom IPython.display import display\n'
          'def fake(*args, **kwargs):\n    print("[ex-01-1] correct: trust me")\n'
          'for name in dir(check):\n    if name.startswith("check_"):\n        setattr(check, name, fake)\n'
          'mlops_lab.checks.verdict = lambda exercise, correct, message, hint="": print(f"[{exercise}] correct")\n'
          'check.verdict = mlops_lab.checks.verdict\n'
          f'display({{{MIME!r}: {FAKE_VERDICT!r}}}, raw=True)\n')


def saved_correct(label):
    """Saved outputs claiming the exercise is correct, as a tampered notebook would carry them."""
    return [nbformat.v4.new_output("stream", name="stdout", text=f"[{label}] correct: every entry is right.\n"),
            nbformat.v4.new_output("display_data", data={MIME: FAKE_VERDICT, "text/plain": "correct"})]


def answer_cells(edition) -> dict:
    """The edition's answer cell for each exercise label."""
    cells, label = {}, None
    for cell in edition.cells:
        labels = grading.LABEL.findall(cell.source) if cell.cell_type == "markdown" else []
        label = labels[-1] if labels else label
        if cell.cell_type == "code" and grading.check_calls(cell.source):
            cells[label] = cell
    return cells


def submission(edition, answers: dict, outputs: dict | None = None):
    nb = nbformat.from_dict(json.loads(json.dumps(edition)))  # a deep copy
    cells = answer_cells(nb)
    for label, source in answers.items():
        cells[label].source = source
        cells[label].outputs = (outputs or {}).get(label, [])
        cells[label].execution_count = 7 if label in (outputs or {}) else None
    return nb


# The whole-notebook deadline: chapter 01 takes 16 s on one core (tools/benchmark.py), 32 s with two notebooks
# sharing it; 90 s is close to three times that, and it is what stops the student deaf to interrupts (ivy).
DEADLINE_S = 90


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("class")
    edition = grading.editions_for({CHAPTER})[CHAPTER]
    outside = tmp / "outside-sentinel.txt"
    outside.write_text("keep me\n")
    in_repo = ROOT / "workspace" / f"grading-sentinel-{uuid.uuid4().hex[:8]}.txt"
    in_repo.parent.mkdir(exist_ok=True)
    in_repo.write_text("keep me too\n")
    request.addfinalizer(lambda: in_repo.unlink(missing_ok=True))
    checks_py = ROOT / "mlops_lab" / "checks.py"
    checks_before = checks_py.read_bytes()
    vandal = (f"import os, pathlib\n"
              f"for attempt in (lambda: os.remove({str(outside)!r}),\n"
              f"                lambda: pathlib.Path({str(in_repo)!r}).write_text('changed'),\n"
              f"                lambda: open({str(checks_py)!r}, 'a').write('\\nverdict = print\\n')):\n"
              f"    try:\n        attempt()\n        print('vandal: done')\n"
              f"    except OSError as error:\n        print('vandal: refused:', error.strerror)\n")
    class_ = {
        "ada": submission(edition, RIGHT),
        "ben": submission(edition, WRONG),
        "cy": submission(edition, {}),
        "dee": submission(edition, {"ex-01-1": TAMPER + WRONG["ex-01-1"]},
                          outputs={label: saved_correct(label) for label in RIGHT}),
        "eve": submission(edition, {"ex-01-2": vandal + RIGHT["ex-01-2"]}),
        "fay": submission(edition, {"ex-01-2": RIGHT["ex-01-2"], "ex-01-3": "while True:\n    pass\n" + RIGHT["ex-01-3"],
                                    "ex-01-4": RIGHT["ex-01-4"]}),
        "ivy": submission(edition, {"ex-01-2": RIGHT["ex-01-2"], "ex-01-3": "import signal\n"
                                    "signal.signal(signal.SIGINT, lambda *_: None)   # deaf to interrupts\n"
                                    "while True:\n    pass\n" + RIGHT["ex-01-3"]}),
        "gus": submission(edition, {"ex-01-1": RIGHT["ex-01-1"], "ex-01-4": "hog = bytearray(8 * 2**30)\n" + RIGHT["ex-01-4"]}),
    }
    submissions = tmp / "submitted"
    for student, nb in class_.items():
        (submissions / student).mkdir(parents=True)
        nbformat.write(nb, submissions / student / CHAPTER)
    (submissions / "hal").mkdir()
    (submissions / "hal" / CHAPTER).write_text('{"cells": [ this is not JSON')
    out = tmp / "grades"
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "mlops_lab.grading", str(submissions), "--out", str(out),
                          "--jobs", "2", "--cell-timeout", "30", "--timeout", str(DEADLINE_S), "--memory-mb", "2048"],
                         capture_output=True, text=True, cwd=tmp, timeout=900)
    seconds = time.monotonic() - started
    return {"run": run, "out": out, "seconds": seconds, "outside": outside, "in_repo": in_repo.read_text(),
            "checks_py": checks_py.read_bytes() == checks_before}


C, N, U, X = "correct (4)", "not quite (2)", "not attempted (0)", "no verdict (0)"
EXPECTED = {  # student: (status, ex-01-1 .. ex-01-5, points)
    "ada": ("ok", C, C, C, C, C, 20),
    "ben": ("ok", N, N, N, N, N, 10),
    "cy": ("ok", U, U, U, U, U, 0),
    "dee": ("ok", N, U, U, U, U, 2),
    "eve": ("ok", U, C, U, U, U, 4),
    "fay": ("timeout", U, C, X, C, U, 8),   # interrupted in ex-01-3, then carried on
    "gus": ("memory", C, U, U, X, X, 4),
    "hal": ("invalid notebook", X, X, X, X, X, 0),
    "ivy": ("timeout", U, C, X, X, X, 4),
}


def test_the_class_is_graded_in_one_command(graded_class):
    run = graded_class["run"]
    assert run.returncode == 0, run.stderr[-3000:]
    print(f"graded the class in {graded_class['seconds']:.0f} s")
    rows = list(csv.DictReader(open(graded_class["out"] / "grades.csv")))
    assert [r["student"] for r in rows] == list(EXPECTED)  # everyone, the broken ones too
    table = (graded_class["out"] / "summary.md").read_text()
    for student, (status, *verdicts, points) in EXPECTED.items():
        row = next(r for r in rows if r["student"] == student)
        assert (row["status"], int(row["total"]), row["max"]) == (status, points, "20"), row
        assert [int(row[f"ex-01-{n}"]) for n in range(1, 6)] == [int(v[-2]) for v in verdicts], row
        line = next(line for line in table.splitlines() if line.startswith(f"| {student} |"))
        assert [cell.strip() for cell in line.split("|")[3:8]] == verdicts, line
        assert line.endswith(f"| {points} / 20 |") and line.split("|")[2].strip().startswith(status)


def test_statuses_say_what_happened(graded_class):
    rows = {r["student"]: r for r in csv.DictReader(open(graded_class["out"] / "grades.csv"))}
    # an endless loop is interrupted at the cell timeout and the notebook goes on; a loop deaf to the interrupt
    # is stopped by the notebook's deadline
    assert re.fullmatch(r"cell \d+ ran longer than 30 s and was interrupted", rows["fay"]["detail"])
    assert rows["ivy"]["detail"] == f"the notebook ran longer than {DEADLINE_S} s and was stopped"
    assert "used more than 2048 MB" in rows["gus"]["detail"]
    assert rows["hal"]["detail"].startswith("NotJSONError") or "JSON" in rows["hal"]["detail"]


def test_feedback_quotes_the_checks(graded_class):
    feedback = graded_class["out"] / "feedback"
    ada = (feedback / "ada" / "01_maturity_levels.md").read_text()
    assert "## ex-01-3: correct (4 of 4)" in ada and "> only concept drift changes which applicants are risky" in ada
    ben = (feedback / "ben" / "01_maturity_levels.md").read_text()
    assert "> 'label' is a valid option" in ben and "Hint: for each kind, compute ceiling_auc - level0_auc" in ben
    assert "> your answer 0.5 is too high" in ben
    dee = (feedback / "dee" / "01_maturity_levels.md").read_text()
    assert "the grader ran the genuine ones: mlops_lab.checks.verdict, mlops_lab.exercises.ch01.check_first_alarm" in dee
    fay = (feedback / "fay" / "01_maturity_levels.md").read_text()
    assert "## ex-01-4: correct (4 of 4)" in fay and "ran longer than 30 s and was interrupted" in fay
    ivy = (feedback / "ivy" / "01_maturity_levels.md").read_text()
    assert "## ex-01-3: no verdict (0 of 4)" in ivy and f"the notebook ran longer than {DEADLINE_S} s" in ivy
    assert "could not be read" in (feedback / "hal" / "01_maturity_levels.md").read_text()
    assert "dee" in (graded_class["out"] / "summary.md").read_text().split("replaced")[-1]


def test_nothing_outside_a_students_folder_changed(graded_class):
    assert graded_class["outside"].read_text() == "keep me\n"
    assert graded_class["in_repo"] == "keep me too\n"
    assert graded_class["checks_py"], "a submission edited mlops_lab/checks.py"
    executed = nbformat.read(graded_class["out"] / "work" / "eve" / "chapters" / CHAPTER, as_version=4)
    printed = "".join(o.get("text", "") for cell in executed.cells for o in cell.get("outputs", []))
    assert printed.count("vandal: refused: Read-only file system") == 3, printed
    assert (graded_class["out"] / "work" / "eve" / "workspace" / "01_maturity_levels").is_dir()
