"""Checks for chapter 02: data versioning with DVC. Each expected answer is measured on the student's repo."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path, PurePosixPath

import yaml

from ..checks import check_mapping, check_number, not_attempted, verdict

CACHE = PurePosixPath(".dvc/cache/files/md5")
GIT_TRACKED_QUESTION = ["data/raw.dvc", "data/raw/2024-01.csv", "data/.gitignore", ".dvc/config", ".dvc/cache"]


def cache_path(md5: str) -> PurePosixPath:
    """Where DVC 3 keeps the object whose MD5 is ``md5``: the first two hex digits are a folder."""
    return CACHE / md5[:2] / md5[2:]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _dir_md5(repo: Path, rev: str) -> str:
    """The .dir hash that ``data/raw.dvc`` records at ``rev``."""
    return yaml.safe_load(_git(repo, "show", f"{rev}:data/raw.dvc"))["outs"][0]["md5"]


def _manifest(repo: Path, rev: str) -> dict[str, str]:
    """File name -> MD5 of every file in data/raw at ``rev``, from the .dir object in the cache."""
    entries = json.loads((repo / cache_path(_dir_md5(repo, rev))).read_text())
    return {e["relpath"]: e["md5"] for e in entries}


def check_cache_path(answer, repo: Path, name: str = "2024-03.csv") -> None:
    if not_attempted(answer):
        return verdict("ex-02-1", None, "replace the ... with a path like '.dvc/cache/files/md5/ab/cdef...'.")
    expected = cache_path(hashlib.md5((repo / "data" / "raw" / name).read_bytes()).hexdigest())
    given = PurePosixPath(str(answer).replace("\\", "/"))
    if given == expected:
        return verdict("ex-02-1", True, f"{expected} is the MD5 of the file's bytes, split after two hex digits: "
                                        "the content decides where it is stored (content addressing).")
    hint = "hash the file's bytes with hashlib.md5, then split the hex digest after two characters."
    digest = expected.parent.name + expected.name
    if given.name == digest or (given.parent.name + given.name == digest and given.parent.parent != CACHE):
        hint = "right hash; the first two hex digits are a folder under .dvc/cache/files/md5/: <2 digits>/<the rest>."
    return verdict("ex-02-1", False, f"{str(answer)!r} is not where DVC keeps data/raw/{name}.", hint)


def rows_in_version(repo: Path, rev: str = "data-v2") -> int:
    """Rows in every CSV of data/raw as it was at ``rev`` (read through dvc.api, whatever is checked out)."""
    import dvc.api

    fs = dvc.api.DVCFileSystem(str(repo), rev=rev)
    files = [f for f in fs.find("data/raw") if f.endswith(".csv")]
    return sum(fs.read_text(f).count("\n") - 1 for f in files)


def check_rows_in_version(answer, repo: Path, rev: str = "data-v2") -> None:
    if not_attempted(answer):
        return verdict("ex-02-2", None, "replace the ... with a number of rows.")
    check_number("ex-02-2", answer, rows_in_version(repo, rev),
                 why=f"the data version tagged {rev} holds that many applications, read without checking it out.",
                 hint="list data/raw at that rev with dvc.api.DVCFileSystem(repo, rev=...) and count every "
                      "file's rows (or dvc.api.read each CSV); a header line is not a row.")


def check_tracked_by_git(answer, repo: Path) -> None:
    tracked = _git(repo, "ls-files").split()
    expected = {path: any(t == path or t.startswith(path + "/") for t in tracked) for path in GIT_TRACKED_QUESTION}
    why = {path: ("git tracks it: it is small and describes the data or the setup." if is_tracked else
                  "git does not track it: DVC keeps the bytes (in its cache and the remote) and git-ignores them.")
           for path, is_tracked in expected.items()}
    check_mapping("ex-02-3", answer, expected, why=why,
                  hint="run `git ls-files` in the repository, and read data/.gitignore and .dvc/.gitignore.")


def new_cache_objects(repo: Path, before: str = "data-v3", after: str = "data-v4") -> int:
    """How many cache objects the data version ``after`` added to the ones ``before`` already had."""
    old, new = _manifest(repo, before), _manifest(repo, after)
    return len(set(new.values()) - set(old.values())) + 1  # the new files, plus the new .dir listing


def check_new_cache_objects(answer, repo: Path) -> None:
    if not_attempted(answer):
        return verdict("ex-02-4", None, "replace the ... with a whole number.")
    check_number("ex-02-4", answer, new_cache_objects(repo),
                 why="one object for each file whose bytes no earlier version had (the month that just ended, and "
                     "every month whose outcomes changed), and one for the new .dir listing; files that did not "
                     "change (complete months, months too young for any outcome) are already in the cache under "
                     "the same hash, so they are stored once.",
                 hint="compare the .dir listings of data-v3 and data-v4: which MD5s are new? And is the listing "
                      "itself an object?")


def labels_arrived(repo: Path, path: str, old: str, new: str) -> set[int]:
    """Application ids whose ``default`` is missing in ``path`` at ``old`` and present at ``new`` (via dvc.api)."""
    import dvc.api
    import pandas as pd

    def read(rev):
        with dvc.api.open(path, repo=str(repo), rev=rev) as f:
            return pd.read_csv(f).set_index("application_id")["default"]

    before, after = read(old), read(new)
    before = before.reindex(after.index)
    return {int(i) for i in after.index[before.isna() & after.notna()]}


# (file, old, new): a month that matures between the versions, one that gains only its early defaults, and a
# complete month that never changes again (the answer is an empty set).
ARRIVAL_CASES = [("data/raw/2023-04.csv", "data-v1", "data-v4"), ("data/raw/2023-09.csv", "data-v2", "data-v3"),
                 ("data/raw/2023-01.csv", "data-v1", "data-v4")]


def check_labels_arrived(function, repo: Path, cases=ARRIVAL_CASES) -> None:
    if not_attempted(function):
        return verdict("ex-02-5", None, "replace the ... with your function labels_arrived(repo, path, old, new).")
    if not callable(function):
        return verdict("ex-02-5", False, f"expected a function, got {type(function).__name__}.",
                       "define it with def labels_arrived(repo, path, old, new): ... and pass the function itself.")
    for path, old, new in cases:
        expected = labels_arrived(repo, path, old, new)
        try:
            given = function(repo, path, old, new)
        except Exception as error:  # the student's code: report it, never crash the check
            return verdict("ex-02-5", False, f"labels_arrived(repo, {path!r}, {old!r}, {new!r}) raised "
                                             f"{type(error).__name__}: {error}",
                           "read each revision with dvc.api.open(path, repo=str(repo), rev=rev) and pandas.")
        try:
            given = {int(i) for i in given}
        except (TypeError, ValueError):
            return verdict("ex-02-5", False, f"expected a set of application ids, got {type(given).__name__}.")
        if given != expected:
            extra, missing = len(given - expected), len(expected - given)
            return verdict("ex-02-5", False, f"for {path} from {old} to {new}: {len(expected)} outcomes arrived; "
                                             f"yours has {extra} id(s) too many and misses {missing}.",
                           "an outcome arrived if default is empty (NaN) in the old version and filled in the new "
                           "one; declined applicants stay empty in both.")
    return verdict("ex-02-5", True, f"your function agrees on {len(cases)} cases, including a complete month where "
                                    "nothing arrives: every label it finds was unknown in the old export.")
