"""The numbers a chapter's text states (its myst-nb glue values), to compare two versions of the book.

    python tools/glued_numbers.py chapters/01_maturity_levels.ipynb [...] [--json FILE]
    python tools/glued_numbers.py --executed _build/jupyter_execute/chapters/*.ipynb --json AFTER.json
    python tools/glued_numbers.py --compare BEFORE.json AFTER.json

Executes each notebook in a fresh kernel started in its folder (as the book does) and reads every value it
glued (myst-nb records it in the output's metadata). ``--compare`` prints a Markdown table of each chapter's
numbers before and after a change: what a closing note reports when a change moves what the book says.
``--executed`` reads notebooks that were already run instead of running them; the book build moves their
glued values into ``<name>.glue.json`` beside each executed notebook, which is read when it exists.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def _value(output: dict) -> str:
    data = output.get("data", {})   # display=False keeps the value under papermill's record type
    return data.get("text/plain") or data.get("application/papermill.record/text/plain", "")


def glued(notebook: Path, timeout: int = 900, execute: bool = True) -> dict[str, str]:
    kept = notebook.with_suffix(".glue.json")
    if not execute and kept.exists():
        return {name: _value(output) for name, output in json.loads(kept.read_text()).items()}
    nb = nbformat.read(notebook, as_version=4)
    if execute:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(notebook.parent.resolve())}}).execute()
    values = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            name = output.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                values[name] = _value(output)
    return values


def compare(before: dict, after: dict) -> str:
    lines = ["| chapter | number | before | after |", "|---|---|---|---|"]
    for chapter in sorted(set(before) | set(after)):
        old, new = before.get(chapter, {}), after.get(chapter, {})
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                lines.append(f"| {chapter} | {name} | {old.get(name, '(none)')} | {new.get(name, '(none)')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--executed", action="store_true", help="read already executed notebooks as they are")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args(argv)
    if args.compare:
        print(compare(*(json.loads(p.read_text()) for p in args.compare)))
        return 0
    result = {}
    for notebook in args.notebooks:
        result[notebook.stem] = glued(notebook, execute=not args.executed)
        print(f"{notebook.stem}: {len(result[notebook.stem])} numbers", file=sys.stderr)
    text = json.dumps(result, indent=1, sort_keys=True)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
