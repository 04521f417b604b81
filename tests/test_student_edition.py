"""The student edition: notebooks without solutions or outputs, and HTML without solutions."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output
from sphinx.cmd.build import build_main

from conftest import ROOT, TOOLS, load_tool

edition = load_tool("student_edition")
NOTEBOOKS = edition.toc_notebooks(ROOT)
SOLUTION_TEXT = "THE-SECRET-SOLUTION-42"


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOLS / "student_edition.py"), *args],
                          capture_output=True, text=True, timeout=120)


def solution_cells(nb) -> list:
    """The cells inside gated solution blocks (start and end cells excluded), found independently."""
    inside, found = False, []
    for cell in nb.cells:
        if cell.cell_type == "markdown" and "{solution-start}" in cell.source:
            inside = True
        elif cell.cell_type == "markdown" and "{solution-end}" in cell.source:
            inside = False
        elif inside:
            found.append(cell)
    return found


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student")
    result = run_tool("--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


def test_writes_every_toc_notebook_and_the_toc(student_dir):
    assert NOTEBOOKS, "_toc.yml lists no notebooks"
    assert (student_dir / "_toc.yml").read_text() == (ROOT / "_toc.yml").read_text()
    for relative in NOTEBOOKS:
        assert (student_dir / relative).is_file(), f"no student copy of {relative}"


@pytest.mark.parametrize("relative", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_notebook(student_dir, relative):
    full = nbformat.read(ROOT / relative, as_version=4)
    student = nbformat.read(student_dir / relative, as_version=4)
    nbformat.validate(student)
    text = "\n".join(cell.source for cell in student.cells)
    assert "{solution-start}" not in text and "{solution-end}" not in text
    assert all(not cell.get("outputs") and cell.get("execution_count") is None
               for cell in student.cells if cell.cell_type == "code"), "outputs left in a student notebook"
    student_code = [cell.source for cell in student.cells if cell.cell_type == "code"]
    hidden = [cell.source for cell in solution_cells(full) if cell.cell_type == "code"]
    assert hidden, f"{relative} has no solution code cells to remove"
    assert not [source for source in hidden if source in student_code], "a solution cell survived"
    kept = [edition.printed_checks(cell.source, str(relative)) for cell in full.cells
            if cell.cell_type == "code" and cell.source not in hidden]
    assert student_code == kept, "a cell outside the solutions was lost (or its timing checks not printed)"
    exercises = text.count("{exercise-start}")
    assert exercises == markdown_count(full, "{exercise-start}") and exercises >= 1, "an exercise was lost"
    checks = [source for source in student_code if "check" in source and "..." in source]
    assert len(checks) >= exercises, "each exercise keeps its answer cell with its auto-check"


def markdown_count(nb, needle: str) -> int:
    return sum(cell.source.count(needle) for cell in nb.cells if cell.cell_type == "markdown")


# ---- the remover on small notebooks ---------------------------------------------------------------------
def md(text):
    return new_markdown_cell(text)


START, END = "```{solution-start} ex-1\n:class: dropdown\n```", "```{solution-end}\n```"
EXERCISE = "```{exercise-start}\n:label: ex-1\n```\nDo it.\n```{exercise-end}\n```"


def test_keeps_text_sharing_a_cell_with_a_block_marker():
    answer = new_code_cell("answer = ...\ncheck(answer)")
    answer.outputs, answer.execution_count = [new_output("stream", name="stdout", text="x\n")], 1
    nb = new_notebook(cells=[md(EXERCISE), answer, md("Before.\n\n" + START), new_code_cell(SOLUTION_TEXT),
                             md(END + "\n\nNext exercise."), md("## Further reading")])
    student = edition.clear_outputs(edition.strip_solutions(nb, "t.ipynb"))
    sources = [cell.source for cell in student.cells]
    assert sources == [EXERCISE, "answer = ...\ncheck(answer)", "Before.", "Next exercise.", "## Further reading"]
    assert student.cells[1].outputs == [] and student.cells[1].execution_count is None


BAD_NOTEBOOKS = {
    "unclosed": ([md(EXERCISE), md(START), new_code_cell("x = 1")], "never closed"),
    "nested": ([md(START), md(START), new_code_cell("x = 1"), md(END), md(END)], "nested"),
    "stray": ([md(EXERCISE), new_code_cell("x = 1"), md(END)], "stray"),
    "ungated": ([md("```{solution} ex-1\n:class: dropdown\nx = 1\n```")], "ungated"),
}


@pytest.mark.parametrize("case", BAD_NOTEBOOKS)
def test_bad_blocks_fail_loudly_naming_the_notebook(tmp_path, case):
    cells, reason = BAD_NOTEBOOKS[case]
    (tmp_path / "chapters").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapters/99_bad\n")
    (tmp_path / "intro.md").write_text("# Intro\n")
    nbformat.write(new_notebook(cells=cells), tmp_path / "chapters" / "99_bad.ipynb")
    result = run_tool("--root", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode != 0, f"a {case} solution block was accepted"
    assert "chapters/99_bad.ipynb" in result.stderr and "cell" in result.stderr and reason in result.stderr, \
        result.stderr
    assert not (tmp_path / "out" / "chapters" / "99_bad.ipynb").exists()



# ---- timing checks: a measurement prints in the student edition, and stops only the instructor's run ------------
TIMED_CELL = """x = 1
assert x == 1, "a property: it stays an assertion"
assert x > 2, "a measurement"  # timing-check
for i in range(2):
    assert (i >  # timing-check
            5), f"loop {i}"
assert x > 3  # timing-check
"""


def test_timing_checks_print_in_the_student_edition(capsys):
    with pytest.raises(AssertionError, match="a measurement"):
        exec(TIMED_CELL, {})
    student = edition.printed_checks(TIMED_CELL, "t.ipynb: cell 0")
    assert 'assert x == 1, "a property: it stays an assertion"' in student, "only marked asserts change"
    exec(student, {})
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and all(line.startswith("check") for line in printed), printed
    assert "a measurement" in printed[0] and "loop 1" in printed[2] and "x > 3" in printed[3]
    assert edition.printed_checks("x = 1\n%time x\n", "t") == "x = 1\n%time x\n", "unmarked cells untouched"
    nb = new_notebook(cells=[new_code_cell(TIMED_CELL), md("x > 2  # timing-check")])
    assert edition.with_printed_checks(nb, "t.ipynb").cells[0].source == student


@pytest.mark.parametrize("source, reason", [("x = 1  # timing-check\n", "no assert"),
                                            ("assert (x >\n        2)  # timing-check\n", "no assert"),
                                            ("%time x\nassert x  # timing-check\n", "not Python")])
def test_misplaced_timing_marks_fail_loudly_naming_the_notebook(tmp_path, source, reason):
    (tmp_path / "chapters").mkdir()
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapters/99_bad\n")
    (tmp_path / "intro.md").write_text("# Intro\n")
    nbformat.write(new_notebook(cells=[md(EXERCISE), new_code_cell(source)]), tmp_path / "chapters" / "99_bad.ipynb")
    result = run_tool("--root", str(tmp_path), "--out", str(tmp_path / "out"))
    assert result.returncode != 0, "a timing mark that converts nothing was accepted"
    assert "chapters/99_bad.ipynb: cell 1" in result.stderr and reason in result.stderr, result.stderr

# ---- the Sphinx extension ---------------------------------------------------------------------------------
PAGE = f"""# Page

```{{exercise-start}}
:label: ex-1
```
Compute the answer.
```{{exercise-end}}
```

```{{solution-start}} ex-1
:class: dropdown
```
The answer is {SOLUTION_TEXT}.
```{{solution-end}}
```

Text after the solution.
"""


def build(tmp_path, student_edition: bool):
    src, out = tmp_path / "src", tmp_path / "html"
    src.mkdir()
    (src / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(TOOLS / 'sphinx')!r})\n"
        "extensions = ['myst_parser', 'sphinx_exercise', 'student_edition']\n"
        f"student_edition = {student_edition}\nexercise_style = 'solution_follow_exercise'\n")
    (src / "index.md").write_text(PAGE)
    assert build_main(["-W", "-q", "-b", "html", str(src), str(out)]) == 0, "the tiny Sphinx build failed"
    return out


@pytest.mark.parametrize("config, env, removed", [(False, None, False), (True, None, True), (False, "1", True)],
                         ids=["full", "config-flag", "env-flag"])
def test_sphinx_extension(tmp_path, monkeypatch, config, env, removed):
    if env:
        monkeypatch.setenv("MLOPS_LAB_STUDENT_EDITION", env)
    else:
        monkeypatch.delenv("MLOPS_LAB_STUDENT_EDITION", raising=False)
    html = (build(tmp_path, config) / "index.html").read_text()
    assert "Compute the answer." in html and "Text after the solution." in html
    assert (SOLUTION_TEXT in html) is not removed
    assert ('class="solution' in html) is not removed
    assert (tmp_path / "html" / "_sources").exists() is not removed, "student HTML must not copy sources"


def test_refuses_to_write_over_the_instructor_notebooks():
    for out in (ROOT, ROOT / "chapters"):
        result = run_tool("--out", str(out))
        assert result.returncode != 0 and "instructor notebooks" in result.stderr, result.stderr


def test_removes_stale_student_notebooks(tmp_path):
    stale = tmp_path / "chapters" / "99_removed_chapter.ipynb"
    stale.parent.mkdir()
    nbformat.write(new_notebook(), stale)
    assert run_tool("--out", str(tmp_path)).returncode == 0
    assert not stale.exists(), "a chapter no longer in _toc.yml would still be tested"


# ---- the student branch the student site's launch buttons open ----------------------------------------------
def test_student_branch_holds_no_solution_and_changes_nothing_else(tmp_path):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    git = lambda *args: subprocess.run(["git", *args], cwd=clone, check=True, capture_output=True,  # noqa: E731
                                       text=True).stdout.strip()
    head, status = git("rev-parse", "HEAD"), git("status", "--porcelain")
    for run in (1, 2):
        result = subprocess.run([sys.executable, str(TOOLS / "student_branch.py"), "--repo", str(clone)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert git("rev-parse", "HEAD") == head and git("status", "--porcelain") == status, "the checkout is untouched"
    assert git("rev-list", "--count", "student") == "2" and head in git("log", "-1", "--format=%s", "student")
    main_files = dict(line.split("\t")[::-1] for line in git("ls-tree", "-r", "HEAD").splitlines())
    student_files = dict(line.split("\t")[::-1] for line in git("ls-tree", "-r", "student").splitlines())
    notebooks = {path for path in main_files if path.endswith(".ipynb")}
    listed = {relative.as_posix() for relative in NOTEBOOKS}
    assert set(student_files) == set(main_files) - (notebooks - listed), "only the unlisted notebooks are left out"
    assert notebooks - listed, "the drafts exist, and are left out"
    for path in set(main_files) - notebooks:
        assert student_files[path] == main_files[path], f"{path} changed on the student branch"
    for path in listed:
        full = nbformat.reads(git("show", f"HEAD:{path}"), as_version=4)
        student = nbformat.reads(git("show", f"student:{path}"), as_version=4)
        hidden = {cell.source for cell in solution_cells(full) if cell.cell_type == "code"}
        text = "\n".join(cell.source for cell in student.cells)
        assert "{solution-start}" not in text and not hidden & {cell.source for cell in student.cells}, path
        expected = [cell.source for cell in edition.student_version(full, path).cells]
        assert [cell.source for cell in student.cells] == expected, f"{path}: not the student edition (timing checks?)"


def test_student_site_launch_buttons_open_the_student_branch(monkeypatch):
    sys.path.insert(0, str(TOOLS / "sphinx"))
    import student_edition as extension

    class Config:
        student_edition, html_theme, html_copy_source = True, "sphinx_book_theme", True
        html_theme_options = {"repository_branch": "main", "use_download_button": True}

    monkeypatch.delenv(extension.BRANCH_ENV, raising=False)
    config = Config()
    extension.configure(None, config)
    assert config.html_theme_options == {"repository_branch": "student", "use_download_button": False}
    monkeypatch.setenv(extension.BRANCH_ENV, "student-2026")
    extension.configure(None, config)
    assert config.html_theme_options["repository_branch"] == "student-2026" and not config.html_copy_source


# ---- the real student HTML (after `make book` and `make student-book`) --------------------------------------
def page_text(html_file) -> str:
    """A page's visible text: tags dropped, entities decoded, whitespace collapsed (code is highlighted
    token by token, so its text is compared, not its markup)."""
    import html
    import re

    raw = re.sub(r"<(script|style)\b.*?</\1>", " ", html_file.read_text(), flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", raw)).split())


def solution_lines(notebook) -> list[str]:
    """The longest line of each solution code cell that no other cell holds (the answer cell repeats the
    check's call): text that only the solution shows."""
    nb = nbformat.read(notebook, 4)
    hidden = [cell for cell in solution_cells(nb) if cell.cell_type == "code" and cell.source.strip()]
    shown = {" ".join(line.split()) for cell in nb.cells if cell.cell_type == "code" and cell not in hidden
             for line in cell.source.splitlines()}
    lines = []
    for cell in hidden:
        own = [" ".join(line.split()) for line in cell.source.splitlines()]
        own = [line for line in own if len(line) > 20 and line not in shown]
        if own:
            lines.append(max(own, key=len))
    return lines


@pytest.mark.book
@pytest.mark.parametrize("relative", NOTEBOOKS, ids=lambda p: p.stem)
def test_student_html_holds_no_solution(built_html, student_html, relative):
    page = relative.with_suffix(".html")
    lines = solution_lines(ROOT / relative)
    assert lines, f"{relative}: no solution code to look for"
    instructor, student = page_text(built_html / page), page_text(student_html / page)
    assert all(line in instructor for line in lines), "the instructor page shows the solutions (the probe works)"
    leaked = [line for line in lines if line in student]
    assert not leaked, f"{page} in the student HTML shows solution code: {leaked[:3]}"
    assert 'class="solution' not in (student_html / page).read_text()
    assert not (student_html / "_sources").exists(), "the student site serves no notebook sources"
    assert "/blob/student/" in (student_html / page).read_text(), "Colab opens the student branch"


# ---- the busy core `make student` runs the student notebooks on --------------------------------------------
BUSY_CORE = TOOLS / "busy_core.sh"
needs_taskset = pytest.mark.skipif(shutil.which("taskset") is None, reason="no taskset (macOS): runs unpinned")
REPORT = 'echo "$BUSY_CORE_PID"; taskset -pc $$; taskset -pc "$BUSY_CORE_PID"'


def gone(pid: int) -> bool:
    """True once ``pid`` has exited and been reaped (a zombie still answers signal 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@needs_taskset
@pytest.mark.parametrize("status", [0, 3], ids=["passes", "fails"])
def test_busy_core_shares_one_core_with_a_busy_process_and_stops_it(status):
    result = subprocess.run([str(BUSY_CORE), "sh", "-c", f"{REPORT}; exit {status}"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == status, result.stderr
    pid, own, busy = result.stdout.splitlines()
    own_cores, busy_cores = own.rsplit(": ", 1)[1], busy.rsplit(": ", 1)[1]
    assert own_cores == busy_cores and own_cores.isdigit(), "the command and the busy process share one core"
    assert gone(int(pid)), "the busy process outlived the command"


@needs_taskset
def test_busy_core_stops_its_busy_process_when_interrupted():
    runner = subprocess.Popen([str(BUSY_CORE), "sh", "-c", 'echo "$BUSY_CORE_PID"; exec sleep 30'],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    pid = int(runner.stdout.readline())
    assert not gone(pid), "no busy process while the command runs"
    os.killpg(runner.pid, signal.SIGINT)  # Ctrl-C in a terminal signals the whole foreground group
    assert runner.wait(timeout=10) != 0 and gone(pid), "the busy process outlived an interrupted run"
