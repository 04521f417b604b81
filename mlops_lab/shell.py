"""Run a command a student should see: echo it, show its output clean, raise if it fails.

``!git status`` in a notebook ignores failures, so CI would never notice a broken step; ``sh`` raises
:class:`CommandFailed` (with the command's output) on a non-zero exit instead.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from .chapter import QUIET_ENV, book_root

ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")


class CommandFailed(RuntimeError):
    def __init__(self, command: str, returncode: int, output: str):
        self.command, self.returncode, self.output = command, returncode, output
        super().__init__(f"`{command}` exited with status {returncode}:\n{output.strip()}")


def clean(text: str, cwd: Path | None = None) -> str:
    """Strip colour codes and carriage-return progress lines, and hide absolute machine paths."""
    text = ANSI.sub("", text).replace("\r\n", "\n")
    # A progress bar redraws its line with "\r": keep what the line finally showed.
    text = "\n".join(line.rstrip("\r").split("\r")[-1] for line in text.split("\n"))
    for path, shown in ((cwd, "."), (book_root(), "<book>"), (Path.home(), "~")):
        if path is not None and str(path) not in ("", "/"):
            text = text.replace(str(Path(path).resolve()), shown)
    return text


def sh(command: str | list[str], cwd: str | Path | None = None, echo: bool = True, check: bool = True,
       timeout: float = 300, env: dict | None = None) -> str:
    """Run ``command`` in ``cwd``; print ``$ command`` and its output; return the output.

    ``command`` is a string (split like a shell would, without running a shell) or a list of arguments.
    Raises :class:`CommandFailed` on a non-zero exit unless ``check=False``.
    """
    args = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    shown = command if isinstance(command, str) else shlex.join(args)
    folder = Path(cwd).resolve() if cwd is not None else Path.cwd()
    full_env = {**os.environ, **QUIET_ENV, "NO_COLOR": "1", "TERM": "dumb", "GIT_PAGER": "cat",
                "PAGER": "cat", **(env or {})}
    try:
        result = subprocess.run(args, cwd=folder, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, timeout=timeout)
    except FileNotFoundError:
        raise CommandFailed(shown, 127, f"{args[0]}: command not found (is it installed and on PATH?)")
    except subprocess.TimeoutExpired as exc:
        output = exc.output.decode() if isinstance(exc.output, bytes) else (exc.output or "")
        raise CommandFailed(shown, -1, f"timed out after {timeout} s\n{clean(output, folder)}")
    output = clean(result.stdout, folder)
    if echo:  # one write, so a notebook shows the command and its output as one block, not four
        echoed = f"$ {clean(shown, folder)}"  # no machine paths in the echoed command either
        sys.stdout.write(echoed + (f"\n{output.rstrip()}" if output.strip() else "") + "\n")
        sys.stdout.flush()
    if check and result.returncode != 0:
        raise CommandFailed(shown, result.returncode, output)
    return output
