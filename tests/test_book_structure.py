"""The book's sources keep the design's conventions (fast; no build, no kernel).

Every check is a function returning a list of problems, so a failure says what is wrong and where;
``test_checks_catch_bad_input`` proves each chapter check can fail, on a small synthetic chapter.
"""
from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from conftest import ROOT, load_tool

edition = load_tool("student_edition")

SKIP_DIRS = {".git", ".venv", "_build", "workspace", ".pytest_cache", ".ipynb_checkpoints", ".jupyter_cache",
             "node_modules", "__pycache__", "mlops_lab.egg-info"}
CHAPTER_NAME = re.compile(r"^\d{2}_[a-z0-9]+(?:_[a-z0-9]+)*\.ipynb$")
MACHINE_PATH = re.compile(r"(?<![\w.~-])(?:/root/|/home/[\w.-]+/|/tmp/[\w.-]+/|/Users/[\w.-]+/)|\b[A-Z]:\\")
CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]*)`")
PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:\[[\w,.-]+\])?==[^\s=<>!~;,]+$")


def repo_files(suffix: str) -> list[Path]:
    """Files under the repository with ``suffix``, skipping environments, builds and caches."""
    found = []
    for path in sorted(ROOT.rglob(f"*{suffix}")):
        if not SKIP_DIRS.intersection(path.relative_to(ROOT).parts[:-1]):
            found.append(path)
    return found


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


TOC = yaml.safe_load((ROOT / "_toc.yml").read_text())
TOC_ENTRIES = edition.toc_entries(TOC)
NOTEBOOKS = repo_files(".ipynb")
MARKDOWN = repo_files(".md")
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


# ---- chapter checks: each takes a notebook and returns its problems ------------------------------------
def markdown_of(nb) -> str:
    return "\n\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown") + "\n"


def directives(text: str, name: str) -> list[tuple[str, str]]:
    """(argument, option lines) of every ```{name} directive in ``text``."""
    pattern = re.compile(rf"^(?:`{{3,}}|:{{3,}})\{{{re.escape(name)}\}}[ \t]*([^\n]*)\n((?:[ \t]*:[\w-]+:[^\n]*\n)*)",
                         re.M)
    return [(arg.strip(), options) for arg, options in pattern.findall(text)]


def option(options: str, name: str) -> str | None:
    match = re.search(rf"^[ \t]*:{name}:[ \t]*(.*)$", options, re.M)
    return match.group(1).strip() if match else None


def section(text: str, title: str) -> str | None:
    """The body of the first heading matching ``title`` (up to the next heading of its level or higher)."""
    match = re.search(rf"^(#{{1,6}})[ \t]+{title}[^\n]*\n", text, re.M | re.I)
    if not match:
        return None
    level = len(match.group(1))
    end = re.search(rf"^#{{1,{level}}}[ \t]", text[match.end():], re.M)
    return text[match.end(): match.end() + end.start()] if end else text[match.end():]


def check_overview(nb) -> list[str]:
    text = markdown_of(nb)
    problems = [] if section(text, "Overview") is not None else ["no '## Overview' section"]
    if "learning objectives" not in text.lower():
        problems.append("no learning objectives")
    return problems


def check_prerequisites(nb) -> list[str]:
    found = re.search(r"^(?:#{1,6}[ \t]+|\*\*)Prerequisites", markdown_of(nb), re.M | re.I)
    return [] if found else ["no prerequisites section ('## Prerequisites' or '**Prerequisites.**')"]


def check_sagemaker_admonition(nb) -> list[str]:
    text = markdown_of(nb)
    titles = [arg for name in ("admonition", "note", "tip", "important", "seealso") for arg, _ in directives(text, name)]
    return [] if any("sagemaker" in title.lower() for title in titles) else [
        "no {admonition}/{note}/{tip} whose title mentions SageMaker"]


def check_production_note(nb) -> list[str]:
    """Every chapter after the first says what production uses, beside its SageMaker box."""
    first = next((cell.source for cell in nb.cells if cell.cell_type == "code"), "")
    if re.search(r"start_chapter\(\s*['\"]01_", first):
        return []
    titles = [arg for name in ("admonition", "note") for arg, _ in directives(markdown_of(nb), name)]
    return [] if any(title.strip() == "What production uses" for title in titles) else [
        "no {admonition} What production uses (the tools that do at scale what the chapter did by hand)"]


def check_exercises(nb) -> list[str]:
    text = markdown_of(nb)
    starts, ends = directives(text, "exercise-start"), directives(text, "exercise-end")
    problems = [] if len(starts) >= 3 else [f"{len(starts)} exercise-start blocks; at least 3 expected"]
    if len(starts) != len(ends):
        problems.append(f"{len(starts)} exercise-start but {len(ends)} exercise-end")
    problems += [f"exercise {i + 1} has no :label:" for i, (_, opts) in enumerate(starts) if not option(opts, "label")]
    return problems


def check_gated_solutions(nb) -> list[str]:
    text = markdown_of(nb)
    labels = [option(opts, "label") for _, opts in directives(text, "exercise-start")]
    solutions = {}
    for arg, opts in directives(text, "solution-start"):
        solutions.setdefault(arg, []).append(opts)
    problems = [f"no solution-start for exercise {label}" for label in labels if label and label not in solutions]
    for arg, options in solutions.items():
        if arg not in labels:
            problems.append(f"solution-start {arg!r} matches no exercise label")
        if len(options) > 1:
            problems.append(f"{len(options)} solutions for {arg}")
        if any("dropdown" not in (option(opts, "class") or "").split() for opts in options):
            problems.append(f"solution {arg} lacks ':class: dropdown'")
    if directives(text, "solution"):
        problems.append("an ungated {solution} directive; use solution-start/solution-end")
    return problems


def check_solution_blocks(nb) -> list[str]:
    try:
        edition.strip_solutions(copy.deepcopy(nb), "notebook")
    except edition.SolutionBlockError as error:
        return [str(error)]
    return []


def check_summary(nb) -> list[str]:
    return [] if section(markdown_of(nb), "Summary") is not None else ["no '## Summary' section"]


def check_further_reading(nb) -> list[str]:
    body = section(markdown_of(nb), "Further reading")
    if body is None:
        return ["no '## Further reading' section"]
    return [] if "{cite:" in body else ["the further reading section cites nothing with {cite:...}"]


def check_first_code_cell(nb) -> list[str]:
    """The first code cell starts the chapter, and its input (the Colab bootstrap) folds away in the HTML."""
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if not code or "start_chapter(" not in code[0].source:
        return ["the first code cell does not call start_chapter("]
    tags = code[0].get("metadata", {}).get("tags", [])
    return [] if "hide-input" in tags else ["the first code cell (the bootstrap) is not tagged hide-input"]


def check_no_outputs(nb) -> list[str]:
    return [f"cell {i} has committed outputs or an execution count" for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None)]


TRAINS = re.compile(r"(?<!\w)(?:train|promote_if_better|build_credit_project|retrain|simulate_year|"
                    r"compare_policies)\(|\.fit\(|dvc (?:repro|exp run)")
CLOCK_ASSERTED = re.compile(r"check_known\(|assert\b[^\n]*_known\b")


def check_clock(nb) -> list[str]:
    """A chapter that trains or judges models asserts its labels were known then, and links the clock."""
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    if not TRAINS.search(code):
        return []
    problems = [] if CLOCK_ASSERTED.search(code) else [
        "trains a model but never asserts its labels were known then (check_known(...) or assert ..._known)"]
    if "(the-clock)=" not in markdown_of(nb) and "<the-clock>" not in markdown_of(nb):
        problems.append("trains a model but never refers to the book's clock ({ref}`... <the-clock>`)")
    return problems


CHAPTER_CHECKS = {
    "overview": check_overview, "prerequisites": check_prerequisites,
    "sagemaker_admonition": check_sagemaker_admonition, "production_note": check_production_note,
    "exercises": check_exercises,
    "gated_solutions": check_gated_solutions, "solution_blocks": check_solution_blocks,
    "summary": check_summary, "further_reading": check_further_reading,
    "first_code_cell": check_first_code_cell, "no_outputs": check_no_outputs, "clock": check_clock,
}


# ---- the table of contents and file names -------------------------------------------------------------
def test_toc_is_a_book_with_chapters():
    assert TOC.get("format") == "jb-book" and TOC.get("root"), "_toc.yml must be format jb-book with a root"
    assert any(entry.startswith("chapters/") for entry in TOC_ENTRIES), "_toc.yml lists no chapter"


@pytest.mark.parametrize("entry", TOC_ENTRIES)
def test_toc_entry_exists(entry):
    assert edition.resolve_entry(ROOT, entry) is not None, f"_toc.yml lists {entry}, but no {entry}.md/.ipynb exists"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_in_toc(notebook):
    entry = rel(notebook.with_suffix(""))
    assert entry in TOC_ENTRIES, f"{rel(notebook)} is not listed in _toc.yml"


@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_file_name(notebook):
    assert CHAPTER_NAME.match(notebook.name), f"{rel(notebook)}: chapter files are named NN_short_name.ipynb"


# ---- every chapter, every convention --------------------------------------------------------------------
@pytest.mark.parametrize("check", CHAPTER_CHECKS)
@pytest.mark.parametrize("notebook", CHAPTERS, ids=lambda p: p.stem)
def test_chapter(notebook, check):
    problems = CHAPTER_CHECKS[check](nbformat.read(notebook, as_version=4))
    assert not problems, f"{rel(notebook)}: " + "; ".join(problems)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=rel)
def test_no_committed_outputs(notebook):
    problems = check_no_outputs(nbformat.read(notebook, as_version=4))
    assert not problems, f"{rel(notebook)}: " + "; ".join(problems) + " (clear outputs before committing)"


def machine_paths(text: str) -> list[str]:
    return sorted({match.group(0) for match in MACHINE_PATH.finditer(text)})


@pytest.mark.parametrize("path", NOTEBOOKS + MARKDOWN, ids=rel)
def test_no_machine_paths(path):
    found = machine_paths(path.read_text(encoding="utf-8"))
    assert not found, f"{rel(path)} contains absolute paths of a machine: {found}"


# ---- the bibliography ---------------------------------------------------------------------------------
def bib_keys(text: str) -> set[str]:
    return set(re.findall(r"^\s*@\w+\s*\{\s*([^,\s]+)\s*,", text, re.M))


def cited_keys(text: str) -> set[str]:
    keys = set()
    for group in CITE.findall(text):
        keys.update(key.strip() for key in re.sub(r"\{[^}]*\}", "", group).split(",") if key.strip())
    return keys


BIB = bib_keys((ROOT / "assets" / "references.bib").read_text(encoding="utf-8"))


def source_text(path: Path) -> str:
    if path.suffix == ".ipynb":
        return "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
    return path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", NOTEBOOKS + MARKDOWN, ids=rel)
def test_citations_exist(path):
    missing = cited_keys(source_text(path)) - BIB
    assert not missing, f"{rel(path)} cites keys missing from assets/references.bib: {sorted(missing)}"


# ---- the environment: one pinned environment for CI, Binder and laptops ------------------------------
def requirement_lines() -> list[str]:
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    return [line for line in lines if line]


def unpinned(lines: list[str]) -> list[str]:
    body = lines[:-1] if lines and lines[-1] == "-e ." else lines
    return [line for line in body if not PIN.match(line)]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_requirements_pinned_exactly():
    lines = requirement_lines()
    assert lines and lines[-1] == "-e .", "requirements.txt must end with '-e .' (the lab package)"
    assert not unpinned(lines), f"requirements.txt lines not pinned with ==: {unpinned(lines)}"


def test_pyproject_dependencies_in_requirements():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {normalise(line.split("==")[0].split("[")[0]) for line in requirement_lines() if "==" in line}
    names = [normalise(re.split(r"[\s<>=!~;\[]", dep, maxsplit=1)[0]) for dep in project["dependencies"]]
    missing = [name for name in names if name not in pinned]
    assert not missing, f"pyproject.toml dependencies missing from requirements.txt: {missing}"


def test_binder_runtime_and_apt():
    assert re.fullmatch(r"python-3\.11(\.\d+)?", (ROOT / "runtime.txt").read_text().strip()), \
        "runtime.txt must say python-3.11"
    packages = [line.strip() for line in (ROOT / "apt.txt").read_text().splitlines()]
    assert "git" in packages, "apt.txt must list git (DVC needs it on Binder)"


# ---- the checks themselves can fail ---------------------------------------------------------------------
def good_chapter():
    """A minimal chapter that passes every chapter check."""
    md, code = new_markdown_cell, new_code_cell
    cells = [md("# 1. T\n\n## Overview\n\n**Learning objectives.** Learn.\n\n**Prerequisites.** None.\n"),
             code('from mlops_lab import start_chapter\nchapter = start_chapter("02_t")',
                  metadata={"tags": ["hide-input"]}),
             md("```{admonition} SageMaker equivalent\n:class: tip\nSageMaker Pipelines.\n```\n\n"
                "```{admonition} What production uses\n:class: note\nAirflow.\n```\n\n## Summary\n\n"
                "Done.\n\n## Exercises")]
    for n in (1, 2, 3):
        cells += [md(f"```{{exercise-start}}\n:label: ex-{n}\n```\nDo {n}.\n```{{exercise-end}}\n```"),
                  code("answer = ...\ncheck(answer)"),
                  md(f"```{{solution-start}} ex-{n}\n:class: dropdown\n```"), code("answer = 1\ncheck(answer)"),
                  md("```{solution-end}\n```")]
    cells.append(md("## Further reading\n\n- {cite:t}`google2020mlops`"))
    return new_notebook(cells=cells)


def replace_in(needle: str, text: str):
    def mutate(nb):
        for cell in nb.cells:
            cell.source = cell.source.replace(needle, text)
        return nb
    return mutate


def drop_cells(predicate):
    def mutate(nb):
        nb.cells = [cell for cell in nb.cells if not predicate(cell)]
        return nb
    return mutate


def add_output(nb):
    nb.cells[1].outputs = [new_output("stream", name="stdout", text="hi\n")]
    return nb


def train_without_the_clock(nb):
    nb.cells.insert(2, new_code_cell("model = train(history, as_of='2024-01-01')"))
    return nb


BREAKAGES = {
    "overview": replace_in("Learning objectives", "Goals"),
    "prerequisites": replace_in("**Prerequisites.**", "Needs:"),
    "sagemaker_admonition": replace_in("SageMaker equivalent", "Elsewhere"),
    "production_note": replace_in("What production uses", "Elsewhere too"),
    "exercises": drop_cells(lambda c: "ex-3\n" in c.source or "ex-3 " in c.source),
    "gated_solutions": replace_in(":class: dropdown", ":class: plain"),
    "solution_blocks": drop_cells(lambda cell: cell.source.startswith("```{solution-end}")),
    "summary": replace_in("## Summary", "## Recap"),
    "further_reading": replace_in("{cite:t}`google2020mlops`", "Google's paper"),
    "first_code_cell": replace_in("start_chapter(", "begin("),
    "no_outputs": add_output,
    "clock": train_without_the_clock,
}


@pytest.mark.parametrize("check", CHAPTER_CHECKS)
def test_checks_catch_bad_input(check):
    assert CHAPTER_CHECKS[check](good_chapter()) == [], f"{check} rejects a good chapter"
    assert CHAPTER_CHECKS[check](BREAKAGES[check](good_chapter())), f"{check} accepts a broken chapter"


def test_other_checks_catch_bad_input():
    assert machine_paths("see /home/alice/book and C:\\Users\\bob") == ["/home/alice/", "C:\\"]
    assert machine_paths("workspace/01_x/ and https://example.org/tmp/x and `~/.cache/`") == []
    assert cited_keys("{cite:p}`a, b` and {cite:t}`{see}c{p. 3}`") == {"a", "b", "c"}
    assert unpinned(["numpy==2.0", "pandas>=2", "-e ."]) == ["pandas>=2"]
    assert not CHAPTER_NAME.match("1_intro.ipynb") and not CHAPTER_NAME.match("01-Intro.ipynb")


# ---- the instructor guide's schedule matches the chapters ------------------------------------------------
GUIDE = ROOT / "instructors" / "guide.md"
SCHEDULE_ROW = re.compile(r"^\| (\d+) \| (.*)$", re.M)
EXERCISE_LABEL = re.compile(r":label: (ex-\d{2}-\d+)")


def exercise_labels(notebook: Path) -> list[str]:
    return EXERCISE_LABEL.findall(markdown_of(nbformat.read(notebook, as_version=4)))


def schedule_problems(guide: str, chapter_files: dict[int, Path]) -> list[str]:
    """Each week's row names exactly its chapter's exercise labels; a chapter in the book is linked, not
    "planned"; a week without a chapter file is "planned" and names no exercise."""
    schedule = guide[guide.index("## Schedule"):]
    schedule = schedule[:schedule.find("\n## ", 1)] if "\n## " in schedule[1:] else schedule
    rows = {int(week): row for week, row in SCHEDULE_ROW.findall(schedule)}
    problems = [f"week {week}: no row in the schedule" for week in chapter_files if week not in rows]
    for week, row in rows.items():
        named, notebook = re.findall(r"ex-\d{2}-\d+", row), chapter_files.get(week)
        if notebook is None:
            if "planned" not in row or named:
                problems.append(f"week {week}: no chapter file, so the row must say planned and name no exercise")
            continue
        expected = exercise_labels(notebook)
        if named != expected:
            problems.append(f"week {week}: the schedule names {named}, {rel(notebook)} has {expected}")
        if notebook.parent.name == "chapters" and ("planned" in row or f"../chapters/{notebook.stem}" not in row):
            problems.append(f"week {week}: {rel(notebook)} is in the book: link it, and do not call it planned")
    return problems


def chapter_files() -> dict[int, Path]:
    files = sorted((ROOT / "drafts").glob("*.ipynb")) + CHAPTERS      # a chapter in the book wins over a draft
    return {int(path.name[:2]): path for path in files}


def test_schedule_names_each_chapters_exercises():
    assert schedule_problems(GUIDE.read_text(), chapter_files()) == []


def test_schedule_check_catches_a_row_out_of_sync():
    files, guide = chapter_files(), GUIDE.read_text()
    first = exercise_labels(files[1])[0]
    assert any("week 1: the schedule names" in p for p in schedule_problems(guide.replace(f"`{first}`", "", 1), files))
    extra = guide.replace("`ex-13-3` Which alias moves?;", "`ex-13-3` Which alias moves?; `ex-13-4` An extra;")
    assert any("week 13" in p for p in schedule_problems(extra, files))
    planned = guide.replace("{doc}`09 Serving models <../chapters/09_serving>`", "09 Serving models (planned)")
    assert any("week 9" in p and "in the book" in p for p in schedule_problems(planned, files))
    assert any("week 2: no row" in p for p in schedule_problems(re.sub(r"^\| 2 \|.*\n", "", guide, flags=re.M), files))
