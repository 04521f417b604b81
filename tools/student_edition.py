"""Write the student notebooks: every gated solution removed, every output cleared.

    python tools/student_edition.py [--out _build/student]

For each notebook listed in ``_toc.yml`` this writes ``OUT/<same relative path>``, without the cells from
a markdown cell that opens ```` ```{solution-start} <label> ```` up to the markdown cell holding
```` ```{solution-end} ```` (both included), and with no outputs or execution counts. Markdown that shares
one of those two cells but lies outside the block (an exercise right after a ``solution-end``, say) is kept.
An unclosed, nested or stray block, or an ungated ``{solution}`` directive, stops the script with an error
naming the notebook and the cell: a solution must never slip through silently. (Cell tags with nbconvert's
TagRemovePreprocessor would silently keep any solution cell someone forgot to tag.)

A measurement is not a property: an ``assert`` whose first line ends with the comment ``# timing-check``
(a latency, a speed-up, a share of random draws that a busy core or a student's knob can push past its
bound) stays an assertion in the instructor notebook, and becomes a printed check in the student's:
``if not (X): print("check ...:", msg)``, so a slow shared core (Binder's one CPU) never stops a student's
"run all". A mark on a line that starts no assert, or in a cell that is not plain Python, is an error.

It also copies ``_toc.yml`` (chapters find the book root by looking for it upward from their cwd, so their
workspaces land under ``OUT/workspace``) and ``assets/`` (figures and shipped data a chapter may read).
"""
from __future__ import annotations

import argparse
import ast
import re
import shutil
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
TIMING_MARK = "# timing-check"
DIRECTIVE = re.compile(r"^\s*(?P<fence>`{3,}|:{3,})\{(?P<name>solution-start|solution-end|solution)\}")


class SolutionBlockError(ValueError):
    """A solution block that cannot be removed safely; the message names the notebook and the cell."""


class TimingCheckError(ValueError):
    """A ``# timing-check`` mark that marks no assert; the message names the notebook and the cell."""


# ---- the table of contents ---------------------------------------------------------------------------
def toc_entries(toc: dict) -> list[str]:
    """Every ``file:`` of a jb-book/jb-article ``_toc.yml`` (root, parts, chapters, sections), in order."""
    entries = [toc["root"]] if toc.get("root") else []

    def walk(items):
        for item in items or []:
            if item.get("file"):
                entries.append(item["file"])
            walk(item.get("sections"))

    for part in toc.get("parts") or []:
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    walk(toc.get("sections"))
    return entries


def resolve_entry(root: Path, entry: str) -> Path | None:
    """The file a toc entry names (``chapters/01_x`` -> ``chapters/01_x.ipynb``), or None if none exists."""
    for suffix in ("", ".ipynb", ".md"):
        path = root / f"{entry}{suffix}"
        if path.is_file():
            return path
    return None


def toc_notebooks(root: Path = ROOT) -> list[Path]:
    """The notebooks listed in ``root/_toc.yml``, as paths relative to ``root``."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    paths = [resolve_entry(root, entry) for entry in toc_entries(toc)]
    return [path.relative_to(root) for path in paths if path is not None and path.suffix == ".ipynb"]


# ---- removing solutions -------------------------------------------------------------------------------
def split_directives(source: str) -> list[tuple[str, str]]:
    """A markdown cell as pieces: ("text", text) and ("solution-start" | "solution-end" | "solution", "")."""
    lines, pieces, text, i = source.splitlines(keepends=True), [], [], 0
    while i < len(lines):
        match = DIRECTIVE.match(lines[i])
        if not match:
            text.append(lines[i])
            i += 1
            continue
        pieces.append(("text", "".join(text)))
        text, fence = [], match["fence"].strip()
        closing = re.compile(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        i += 1
        while i < len(lines) and not closing.match(lines[i]):
            i += 1
        pieces.append((match["name"], ""))
        i += 1  # past the closing fence (an unclosed fence runs to the end of the cell, as in MyST)
    pieces.append(("text", "".join(text)))
    return pieces


def check_marker(kind: str, open_at: int | None, where: str) -> None:
    """Raise unless a ``kind`` marker may appear here (``open_at``: the cell of the open block, if any)."""
    if kind == "solution":
        raise SolutionBlockError(f"{where}: an ungated {{solution}} directive; use solution-start/-end around "
                                 f"the solution's cells so the student edition can remove it")
    if kind == "solution-start" and open_at is not None:
        raise SolutionBlockError(f"{where}: solution-start inside the block opened in cell {open_at} (nested)")
    if kind == "solution-end" and open_at is None:
        raise SolutionBlockError(f"{where}: solution-end without a solution-start before it (stray)")


def text_outside(source: str, open_at: int | None, index: int, where: str) -> tuple[str, int | None]:
    """The part of markdown cell ``index`` outside solution blocks, and the block still open after it."""
    kept = []
    for kind, piece in split_directives(source):
        if kind == "text":
            kept.append(piece if open_at is None else "")
            continue
        check_marker(kind, open_at, where)
        open_at = index if kind == "solution-start" else None
    return "".join(kept).strip("\n"), open_at


def strip_solutions(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """Drop every gated solution block from ``nb`` in place; ``name`` labels errors."""
    kept, open_at = [], None
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            cell.source, open_at = text_outside(cell.source, open_at, index, f"{name}: cell {index}")
            if cell.source.strip():
                kept.append(cell)
        elif open_at is None:
            kept.append(cell)
    if open_at is not None:
        raise SolutionBlockError(f"{name}: cell {open_at}: solution-start is never closed by a solution-end")
    nb.cells = kept
    return nb


# ---- timing checks: printed, not asserted, in the student edition ---------------------------------------------
def printed_check(source: str, node: ast.Assert, indent: str) -> str:
    """``assert X, msg`` as ``if not (X): print(...)``: a student's run reports a missed measurement, and goes on."""
    test = ast.get_source_segment(source, node.test)
    message = ast.get_source_segment(source, node.msg) if node.msg else repr(test)
    return (f"{indent}if not ({test}):\n"
            f"{indent}    print(\"check (a measurement: a busy machine can miss it):\", {message})\n")


def printed_checks(source: str, where: str) -> str:
    """``source`` with every assert marked ``# timing-check`` on its first line turned into a printed check."""
    lines = source.splitlines(keepends=True)
    marked = [number for number, line in enumerate(lines, 1) if line.rstrip().endswith(TIMING_MARK)]
    if not marked:
        return source
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise TimingCheckError(f"{where}: a {TIMING_MARK} mark in a cell that is not Python ({error.msg})") from None
    asserts = {node.lineno: node for node in ast.walk(tree) if isinstance(node, ast.Assert)}
    for number in reversed(marked):  # bottom up, so the line numbers above stay valid
        node = asserts.get(number)
        if node is None:
            raise TimingCheckError(f"{where}: line {number}: {TIMING_MARK} on a line where no assert starts")
        indent = lines[number - 1][:len(lines[number - 1]) - len(lines[number - 1].lstrip())]
        lines[number - 1:node.end_lineno] = [printed_check(source, node, indent)]
    student = "".join(lines)
    return student if source.endswith("\n") else student.rstrip("\n")


def with_printed_checks(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """Every code cell of ``nb`` with its marked asserts printed instead (in place); ``name`` labels errors."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.source = printed_checks(cell.source, f"{name}: cell {index}")
    return nb


def clear_outputs(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    return nb


def student_notebook(path: Path, name: str | None = None) -> nbformat.NotebookNode:
    """The student version of the notebook at ``path``."""
    nb = nbformat.read(path, as_version=4)
    return student_version(nb, name or str(path))


def student_version(nb: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The student version of ``nb``: its timing checks printed, its solutions and outputs removed."""
    return clear_outputs(strip_solutions(with_printed_checks(nb, name), name))


# ---- the command line ---------------------------------------------------------------------------------
def check_out(root: Path, out: Path, notebooks: list[Path]) -> None:
    """Refuse an output folder that holds the book's own notebooks: they would be overwritten or deleted."""
    if not notebooks:
        raise SolutionBlockError(f"{root / '_toc.yml'} lists no notebooks")
    if out == root or any((root / relative).is_relative_to(out) for relative in notebooks):
        raise SolutionBlockError(f"--out {out} holds the instructor notebooks; choose a folder such as _build/student")


def write_edition(root: Path, out: Path) -> list[Path]:
    """Write every toc notebook's student version under ``out``; return the paths written."""
    notebooks = toc_notebooks(root)
    check_out(root, out, notebooks)
    students = {relative: student_notebook(root / relative, name=str(relative)) for relative in notebooks}
    for stale in out.rglob("*.ipynb"):  # a chapter removed from the toc must not be tested again
        if "workspace" not in stale.relative_to(out).parts:
            stale.unlink()
    for relative, nb in students.items():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        nbformat.validate(nb)
        nbformat.write(nb, out / relative)
    shutil.copy2(root / "_toc.yml", out / "_toc.yml")
    if (root / "assets").is_dir():
        shutil.copytree(root / "assets", out / "assets", dirs_exist_ok=True)
    return [out / relative for relative in notebooks]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("_build/student"),
                        help="folder for the student edition (default: _build/student)")
    parser.add_argument("--root", type=Path, default=ROOT, help="the book's root, holding _toc.yml")
    args = parser.parse_args(argv)
    try:
        written = write_edition(args.root.resolve(), args.out.resolve())
    except (SolutionBlockError, TimingCheckError) as error:
        print(f"student_edition: error: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
