"""Commit the student edition to its own branch, for the student site's Binder and Colab buttons.

    python tools/student_branch.py [--branch student] [--repo .]

The branch's tree is the commit ``HEAD``'s, with every notebook the book lists replaced by its student
version (solutions removed, outputs cleared: ``tools/student_edition.py``) and every other notebook (the
drafts) left out, so nothing on the branch holds a solution. It is built with git's plumbing in a private
index: the working tree and the checked-out branch are not touched. Each run adds one commit on top of the
branch (created on the first run), naming the commit it was made from; pushing it is the caller's job
(``.github/workflows/pages.yml``). The student site's launch buttons open this branch
(``tools/sphinx/student_edition.py`` sets the theme's ``repository_branch``).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from student_edition import SolutionBlockError, student_version, toc_notebooks  # noqa: E402

DEFAULT_BRANCH = "student"


def git(repo: Path, *args: str, env: dict | None = None, data: bytes | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=repo, input=data, capture_output=True, check=False,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode().strip()


def student_tree(repo: Path, index: Path) -> str:
    """The id of HEAD's tree with the toc notebooks replaced by student versions and other notebooks gone."""
    env = {"GIT_INDEX_FILE": str(index)}
    git(repo, "read-tree", "HEAD", env=env)
    listed = {relative.as_posix() for relative in toc_notebooks(repo)}
    for path in git(repo, "ls-files", "--", "*.ipynb", env=env).splitlines():
        if path not in listed:
            git(repo, "rm", "--cached", "--quiet", "--", path, env=env)
            continue
        committed = nbformat.reads(git(repo, "show", f"HEAD:{path}"), as_version=4)   # not the working tree's
        student = student_version(committed, path)   # solutions and outputs removed, timing checks printed
        nbformat.validate(student)
        blob = git(repo, "hash-object", "-w", "--stdin", data=nbformat.writes(student).encode() + b"\n")
        git(repo, "update-index", "--cacheinfo", f"100644,{blob},{path}", env=env)
    return git(repo, "write-tree", env=env)


def commit_student_branch(repo: Path, branch: str = DEFAULT_BRANCH) -> str:
    """Add the student edition of HEAD as a commit on ``branch``; its id."""
    source = git(repo, "rev-parse", "HEAD")
    with tempfile.TemporaryDirectory() as folder:
        tree = student_tree(repo, Path(folder) / "index")
    parent = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}"], cwd=repo,
                            capture_output=True, text=True).stdout.strip()
    identity = {"GIT_AUTHOR_NAME": "student edition", "GIT_AUTHOR_EMAIL": "student-edition@localhost",
                "GIT_COMMITTER_NAME": "student edition", "GIT_COMMITTER_EMAIL": "student-edition@localhost"}
    commit = git(repo, "commit-tree", tree, *(["-p", parent] if parent else []),
                 "-m", f"Student edition of {source}: solutions removed, outputs cleared, drafts left out",
                 env=identity)
    git(repo, "update-ref", f"refs/heads/{branch}", commit)
    return commit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--branch", default=DEFAULT_BRANCH, help="the branch to commit to (default: student)")
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1], help="the repository")
    args = parser.parse_args(argv)
    try:
        commit = commit_student_branch(args.repo.resolve(), args.branch)
    except (SolutionBlockError, RuntimeError) as error:
        print(f"student_branch: error: {error}", file=sys.stderr)
        return 1
    print(f"{args.branch}: {commit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
