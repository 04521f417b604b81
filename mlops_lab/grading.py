"""Grade a class's chapter notebooks in one command: every check run by the grader, in a sandbox per student.

    python -m mlops_lab.grading SUBMISSIONS --out GRADES [--jobs N] [--cell-timeout S] [--timeout S]
                                [--memory-mb M] [--no-sandbox]

SUBMISSIONS holds ``<student>/<chapter notebook>.ipynb`` (one folder per student, as nbgrader collects them).
For each submission the grader builds the notebook it runs from the *student edition* of the book's chapter
(tools/student_edition.py): every cell is the edition's, except each exercise's answer cell (a code cell
calling ``check.<name>(...)``), which is the student's cell with the same cell id, with every top-level
``check.*`` call removed. After each answer cell comes a grader cell the student never saw: it reloads
:mod:`mlops_lab.checks` and the chapter's check module from disk (undoing a monkeypatch), calls the genuine
check on the student's objects, and publishes the verdicts as data (MIME type :data:`VERDICT_MIME`). Only the
grader cells' outputs are read: what a student's cell prints or displays, and what the submitted notebook's
saved outputs say, count for nothing.

Each notebook runs in ``GRADES/work/<student>/`` (its own ``_toc.yml``, ``assets/`` and ``chapters/``, so the
chapter's workspace lands there too), with a per-cell timeout, a deadline for the whole notebook, and, as
root with Linux namespaces, a sandbox: a mount namespace where everything but the student's folder is
read-only, a PID namespace (nothing outlives the kernel), no capabilities, and a memory cgroup limiting the
kernel and every process it starts. Without root or namespaces the command stops and says so, unless
``--no-sandbox`` is given (then only the timeouts and an address-space limit per process apply).

It writes GRADES/grades.csv (a row per student and chapter: points per exercise, total, status),
GRADES/summary.md (a readable table and counts) and GRADES/feedback/<student>/<chapter>.md (each check's
message and hint). One student's failure never stops the class.
"""
from __future__ import annotations

import argparse
import ast
import concurrent.futures
import csv
import dataclasses
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
VERDICT_MIME = "application/vnd.mlops-lab.verdicts+json"
# The auto-checked part of a weekly exercise (instructors/guide.md, "Weekly exercises: points and a marking
# key"): "correct" 4, "not quite" 2 (the guide's "sensible attempt"; mark it down by hand if it was not).
POINTS = {"correct": 4, "not quite": 2, "not attempted": 0}
MAX_POINTS = max(POINTS.values())
STATUSES = ("ok", "timeout", "memory", "invalid notebook", "error")
CHECK_ALIAS = "check"
LABEL = re.compile(r"```\{exercise-start\}[^\n]*\n(?:[^\n]*\n)*?:label:\s*(?P<label>[\w.-]+)")
QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1",
             "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
             "MKL_NUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
# Set by the test suite or a class server: never inside a student's grading kernel.
DROPPED_ENV = ("MLOPS_LAB_STRICT_CHECKS", "MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME",
               "MLFLOW_TRACKING_PASSWORD", "JPY_SESSION_NAME", "PYTHONPATH")


def _edition_tool():
    """tools/student_edition.py as a module (tools/ is not a package)."""
    name = "tools_student_edition"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "student_edition.py")
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


# ---- reading notebooks ----------------------------------------------------------------------------------
def check_calls(source: str, alias: str = CHECK_ALIAS) -> list[ast.Expr]:
    """The top-level statements of ``source`` that are a call ``alias.<name>(...)``; [] if it is not Python."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [node for node in tree.body if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute) and isinstance(node.value.func.value, ast.Name)
            and node.value.func.value.id == alias]


def without_check_calls(source: str, alias: str = CHECK_ALIAS) -> str:
    """``source`` without its top-level ``alias.*(...)`` calls (a cell that does not parse is kept as is)."""
    lines = source.splitlines(keepends=True)
    for node in reversed(check_calls(source, alias)):
        del lines[node.lineno - 1:node.end_lineno]
    return "".join(lines)


def grader_calls(source: str, alias: str = CHECK_ALIAS) -> list[str]:
    """The edition's check calls as expressions on ``_grader_check`` (the reloaded module), same arguments."""
    calls = []
    for node in check_calls(source, alias):
        call = node.value
        func = ast.Attribute(value=ast.Name(id="_grader_check", ctx=ast.Load()), attr=call.func.attr, ctx=ast.Load())
        calls.append(ast.unparse(ast.Call(func=func, args=call.args, keywords=call.keywords)))
    return calls


def check_module(nb) -> str | None:
    """The module a notebook imports as ``check`` (``from mlops_lab.exercises import ch01 as check``)."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    if alias.asname == CHECK_ALIAS:
                        return f"{node.module}.{alias.name}"
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.asname == CHECK_ALIAS:
                        return alias.name
    return None


def exercise_labels(nb) -> list[str]:
    """The notebook's exercise labels (``{exercise-start}`` directives), in order."""
    return [m["label"] for cell in nb.cells if cell.cell_type == "markdown" for m in LABEL.finditer(cell.source)]


def match_cells(edition, submission) -> dict[str, object]:
    """For each answer cell of the edition (by id), the submission's cell with that id; failing that, the
    first unused submission code cell that makes the same check call (a notebook whose ids were lost)."""
    by_id = {cell.get("id"): cell for cell in submission.cells if cell.cell_type == "code" and cell.get("id")}
    used, matched = set(), {}
    for cell in edition.cells:
        calls = [node.value.func.attr for node in check_calls(cell.source)] if cell.cell_type == "code" else []
        if not calls:
            continue
        found = by_id.get(cell.get("id"))
        if found is None:
            found = next((c for c in submission.cells if c.cell_type == "code" and id(c) not in used
                          and calls[0] in {n.value.func.attr for n in check_calls(c.source)}), None)
        if found is not None:
            used.add(id(found))
        matched[cell.get("id")] = found
    return matched


@dataclasses.dataclass
class GraderCell:
    index: int          # in the grading notebook
    exercise: str       # the exercise it grades (the last exercise-start before the answer cell)
    answer_index: int   # the student's answer cell it follows
    attempted: bool     # the submission had this answer cell


GRADER_CELL = '''\
def _grader_run(_namespace, _calls, _module_name, _mime, _token):
    import importlib, sys
    from IPython.core.display_functions import publish_display_data
    def _where(obj):   # where a function was defined: a reloaded genuine one is defined at the same place
        code = getattr(obj, "__code__", None)
        return None if code is None else (code.co_filename, code.co_firstlineno, code.co_name)
    names = [call.split("(", 1)[0].rsplit(".", 1)[-1] for call in _calls]
    old_module, old_checks = sys.modules.get(_module_name), sys.modules.get("mlops_lab.checks")
    before = {f"{_module_name}.{name}": _where(getattr(old_module, name, None)) for name in names + ["verdict"]}
    before["mlops_lab.checks.verdict"] = _where(getattr(old_checks, "verdict", None))
    for name in ("mlops_lab.checks", _module_name):   # the checks first, then the chapter's module
        module = sys.modules.get(name)
        if module is None or getattr(module, "__spec__", None) is None or getattr(module, "__name__", None) != name:
            sys.modules.pop(name, None)
            importlib.import_module(name)
        else:
            importlib.reload(module)
    fresh, checks = sys.modules[_module_name], sys.modules["mlops_lab.checks"]
    replaced = [] if old_module is None else [
        name for name, where in before.items()
        if _where(getattr(checks if name.startswith("mlops_lab.checks.") else fresh, name.rsplit(".", 1)[1], None))
        != where]
    errors = []
    with checks.recording() as recorded:
        for call in _calls:
            try:
                eval(compile(call, "<grader>", "eval"), _namespace, {"_grader_check": fresh})
            except BaseException as error:
                errors.append({"call": call.replace("_grader_check.", "check."),
                               "error": f"{type(error).__name__}: {error}"})
        verdicts = list(recorded)
    publish_display_data({_mime: {"token": _token, "verdicts": verdicts, "errors": errors,
                                  "replaced": sorted(replaced)}})
'''


def grader_source(calls: list[str], module: str, token: str) -> str:
    return (GRADER_CELL + f"_grader_run(globals(), {calls!r}, {module!r}, {VERDICT_MIME!r}, {token!r})\n"
            "del _grader_run\n")


def grading_notebook(edition, submission, token: str):
    """The notebook the grader runs, and its grader cells: the edition with the student's answer cells
    (check calls removed), each followed by a grader cell."""
    module = check_module(edition)
    if module is None:
        raise ValueError("the chapter imports no check module as `check`")
    matched = match_cells(edition, submission) if submission is not None else {}
    cells, graders, exercise = [], [], None
    for cell in edition.cells:
        if cell.cell_type == "markdown":
            labels = [m["label"] for m in LABEL.finditer(cell.source)]
            exercise = labels[-1] if labels else exercise
        calls = grader_calls(cell.source) if cell.cell_type == "code" else []
        if not calls:
            cells.append(nbformat.from_dict(dict(cell)))
            continue
        student = matched.get(cell.get("id"))
        answer = nbformat.v4.new_code_cell(without_check_calls((student or cell).source))
        answer.metadata["grader"] = {"answer_to": cell.get("id"), "attempted": student is not None}
        cells.append(answer)
        grader = nbformat.v4.new_code_cell(grader_source(calls, module, token))
        grader.metadata["grader"] = {"grades": exercise}
        graders.append(GraderCell(len(cells), exercise, len(cells) - 1, student is not None))
        cells.append(grader)
    nb = nbformat.v4.new_notebook(cells=cells, metadata=dict(edition.metadata))
    return nb, graders


# ---- the sandbox ------------------------------------------------------------------------------------------
STAGE2 = r'''#!/bin/sh
# Inside new mount and PID namespaces: everything read-only except the student's folder, then no capabilities.
set -e
W="$GRADER_WORK"
mount --bind "$W" "$W"
mount -t tmpfs -o size=256m,mode=1777 tmpfs /dev/shm
awk '{print $2}' /proc/self/mounts | sort -u | while read -r m; do
  case "$m" in "$W"|/dev/shm) ;; *) mount -o remount,bind,ro "$m" 2>/dev/null || true ;; esac
done
# a mount point listed twice (a mount on top of another) is judged by the top one, the last listed
writable=$(awk -v w="$W" '{o[$2] = $4} END {for (m in o) if (m != w && m != "/dev/shm" && o[m] !~ /(^|,)ro(,|$)/) print m}' /proc/self/mounts)
if [ -n "$writable" ]; then echo "grader sandbox: could not make read-only: $writable" >&2; exit 70; fi
# Neither exec nor a direct child: the kernel must not be PID 1 of the namespace (PID 1 drops the SIGINT an
# interrupt sends itself), nor PID 1's child (ipykernel takes a parent PID of 1 for an orphan, and exits).
sh -c '"$@"; status=$?; exit $status' sandbox setpriv --bounding-set=-all --inh-caps=-all --no-new-privs "$@"
'''


def _own_cgroup(controller: str) -> Path | None:
    """This process's cgroup v1 folder for ``controller``, if it exists and we may create children in it."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            folder = Path("/sys/fs/cgroup") / controller / path.lstrip("/")
            return folder if os.access(folder, os.W_OK) else None
    return None


def sandbox_problems() -> list[str]:
    """Why the sandbox cannot be built here ([] when it can)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("not root (the mount namespace and the memory cgroup need root)")
    for tool in ("unshare", "setpriv", "mount", "awk"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found")
    if not problems:
        probe = subprocess.run(["unshare", "--mount", "--pid", "--fork", "--propagation", "private", "true"],
                               capture_output=True, text=True)
        if probe.returncode:
            problems.append(f"cannot create mount and PID namespaces: {probe.stderr.strip()}")
    if _own_cgroup("memory") is None:
        problems.append("no writable cgroup v1 memory controller (the memory limit would be per process only)")
    return problems


class Sandbox:
    """The limits for one submission's kernel: cgroups (memory, pids) and the wrapper command."""

    def __init__(self, work: Path, memory_mb: int, enforce: bool, name: str = ""):
        self.work, self.memory_mb, self.enforce = work, memory_mb, enforce
        self.cgroups: dict[str, Path] = {}
        self.name = name or f"mlops-lab-grader-{uuid.uuid4().hex[:12]}"
        if enforce:
            name = self.name
            for controller, limits in (("memory", {"memory.limit_in_bytes": memory_mb * 2**20}),
                                       ("pids", {"pids.max": 512})):
                parent = _own_cgroup(controller)
                if parent is None:
                    continue
                folder = parent / name
                folder.mkdir(exist_ok=True)
                for key, value in limits.items():
                    (folder / key).write_text(str(value))
                self.cgroups[controller] = folder

    def argv(self, kernel: list[str]) -> list[str]:
        if not self.enforce:  # --no-sandbox: an address-space limit per process, if prlimit exists
            limit = ["prlimit", f"--as={self.memory_mb * 2**20}"] if shutil.which("prlimit") else []
            return limit + kernel
        stage2 = self.work / ".grader" / "sandbox.sh"
        stage2.write_text(STAGE2)
        join = " ".join(f"echo $$ > {shlex.quote(str(f / 'cgroup.procs'))};" for f in self.cgroups.values())
        return ["sh", "-c", f'{join} exec unshare --mount --pid --fork --kill-child --mount-proc '
                            f'--propagation private sh {shlex.quote(str(stage2))} "$@"', "sandbox", *kernel]

    @classmethod
    def remove(cls, name: str) -> None:
        """Kill whatever is left in the cgroups called ``name`` and remove them (after a grader was killed)."""
        sandbox = cls.__new__(cls)
        sandbox.cgroups = {c: p / name for c in ("memory", "pids") if (p := _own_cgroup(c)) and (p / name).is_dir()}
        sandbox.close()

    def out_of_memory(self) -> bool:
        folder = self.cgroups.get("memory")
        if folder is None:
            return False
        try:
            control = dict(line.split() for line in (folder / "memory.oom_control").read_text().splitlines())
            return int(control.get("oom_kill", 0)) > 0
        except (OSError, ValueError):
            return False

    def kill_all(self) -> None:
        for folder in self.cgroups.values():
            try:
                for pid in (folder / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except ProcessLookupError:
                        pass
            except OSError:
                pass

    def close(self) -> None:
        self.kill_all()
        for folder in self.cgroups.values():
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)


# ---- grading one submission ---------------------------------------------------------------------------
@dataclasses.dataclass
class Result:
    student: str
    chapter: str
    status: str
    detail: str = ""
    exercises: dict = dataclasses.field(default_factory=dict)  # label -> {"verdict", "points", "message", ...}
    replaced: list = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(e["points"] for e in self.exercises.values())


def _no_verdict(reason: str) -> dict:
    return {"verdict": "no verdict", "points": 0, "message": reason, "hint": ""}


def _combine(verdicts: list[dict]) -> dict:
    """One exercise's verdicts (a check may give several): the one worth fewest points."""
    worst = min(verdicts, key=lambda v: POINTS.get(v["verdict"], 0))
    return {**worst, "points": POINTS.get(worst["verdict"], 0)}


def _kernel_env(work: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    home = work / ".grader" / "home"
    dirs = {"HOME": home, "TMPDIR": work / ".grader" / "tmp", "IPYTHONDIR": home / ".ipython",
            "MPLCONFIGDIR": home / ".matplotlib", "JUPYTER_RUNTIME_DIR": home / ".jupyter" / "runtime",
            "JUPYTER_CONFIG_DIR": home / ".jupyter", "JUPYTER_DATA_DIR": home / ".jupyter" / "data",
            "XDG_CACHE_HOME": home / ".cache", "XDG_CONFIG_HOME": home / ".config",
            "XDG_DATA_HOME": home / ".local" / "share", "XDG_RUNTIME_DIR": home / ".run",
            "PREFECT_HOME": home / ".prefect"}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    env.update({k: str(v) for k, v in dirs.items()})
    env.update(QUIET_ENV)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["GRADER_WORK"] = str(work)
    return env


def _prepare_work(work: Path) -> None:
    if work.exists():
        shutil.rmtree(work)
    (work / "chapters").mkdir(parents=True)
    (work / ".grader").mkdir()
    shutil.copy2(ROOT / "_toc.yml", work / "_toc.yml")
    if (ROOT / "assets").is_dir():
        shutil.copytree(ROOT / "assets", work / "assets")


def _execute(nb, work: Path, chapter: str, options, sandbox: Sandbox) -> tuple[str, str]:
    """Run ``nb`` in ``work``; return (status, detail). Never raises for what the student's code does."""
    from jupyter_client import AsyncKernelManager
    from jupyter_core.utils import run_sync
    from jupyter_client.kernelspec import KernelSpec
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    timed_out: list[int] = []

    class Client(NotebookClient):
        async def _async_handle_timeout(self, timeout, cell=None):
            timed_out.append(self.nb.cells.index(cell) if cell in self.nb.cells else -1)
            return await super()._async_handle_timeout(timeout, cell)   # the interrupt message: SIGINT, as Ctrl-C

    kernel = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    spec = KernelSpec(argv=sandbox.argv(kernel), display_name="grader", language="python",
                      interrupt_mode="message", env={})
    # The async manager, as nbclient's own default: with a blocking one, nbclient's wait for output blocks its
    # event loop, so a cell that prints nothing (an endless loop) never reaches the per-cell timeout.
    km = AsyncKernelManager(connection_file=str(work / ".grader" / "kernel.json"), transport="tcp", ip="127.0.0.1")
    km._kernel_spec = spec  # the spec above, not one looked up by name
    client = Client(nb, km=km, timeout=options.cell_timeout, allow_errors=True, interrupt_on_timeout=True,
                    error_on_timeout={"ename": "CellTimeoutError",
                                      "evalue": f"the cell ran longer than {options.cell_timeout:g} s"},
                    startup_timeout=120, shutdown_kernel="immediate",
                    resources={"metadata": {"path": str(work / "chapters")}})
    deadline_hit = threading.Event()

    def over_deadline():
        deadline_hit.set()
        sandbox.kill_all()
        process = getattr(getattr(km, "provisioner", None), "process", None)
        if process is not None:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                process.kill()

    timer = threading.Timer(options.timeout, over_deadline)
    timer.daemon = True
    timer.start()
    log = open(work / ".grader" / "kernel.log", "wb")  # the kernel's own stdout and stderr, for the instructor
    outcome: list = []

    def run():
        try:
            client.execute(env=_kernel_env(work), stdout=log, stderr=subprocess.STDOUT)
            outcome.append(("ok", ""))
        except DeadKernelError:
            outcome.append(("error", "the kernel died"))
        except Exception as error:  # the kernel did not start, or nbclient gave up: this student only
            outcome.append(("error", f"{type(error).__name__}: {error}".strip()[:500]))

    # nbclient can wait forever for a kernel that was killed (the OOM killer): watch the kernel's process, and
    # grade from the outputs collected so far once it has been dead for 5 s.
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    dead_since = None
    while worker.is_alive():
        worker.join(0.5)
        process = getattr(getattr(km, "provisioner", None), "process", None)
        if process is not None and process.poll() is not None:
            dead_since = dead_since or time.monotonic()
            if time.monotonic() - dead_since > 5:
                outcome.append(("error", "the kernel died"))
                break
        if deadline_hit.is_set() and dead_since is None:
            dead_since = time.monotonic()
    status, detail = outcome[0] if outcome else ("error", "the kernel died")
    timer.cancel()
    log.close()
    try:
        if km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
    except Exception:  # a dead kernel's manager may fail here; the sandbox kills what is left anyway
        pass
    errors = [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    if sandbox.out_of_memory() or any(o.get("ename") == "MemoryError" for _, o in errors):
        cell = next((i for i, o in errors if o.get("ename") == "MemoryError"), None)
        return "memory", (f"MemoryError in cell {cell}" if cell is not None else
                          f"the kernel was killed: it used more than {options.memory_mb} MB")
    if deadline_hit.is_set():
        return "timeout", f"the notebook ran longer than {options.timeout:g} s and was stopped"
    if timed_out:
        return "timeout", f"cell {timed_out[0]} ran longer than {options.cell_timeout:g} s and was interrupted"
    return status, detail


def grade_submission(path: Path, out: Path, options, editions: dict) -> Result:
    """Grade one submitted notebook; any failure becomes this student's status, never an exception."""
    student, chapter = path.parent.name, path.stem
    started = time.monotonic()
    edition = editions.get(path.name)
    if edition is None:
        return Result(student, chapter, "error", f"{path.name} is not a chapter of the book",
                      seconds=time.monotonic() - started)
    labels = exercise_labels(edition)
    try:
        submission = nbformat.read(path, as_version=4)
        nbformat.validate(submission)
    except Exception as error:
        message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:300]
        return Result(student, chapter, "invalid notebook", message,
                      {label: _no_verdict(f"the notebook could not be read ({message})") for label in labels},
                      seconds=time.monotonic() - started)
    token = uuid.uuid4().hex
    nb, graders = grading_notebook(edition, submission, token)
    work = out / "work" / student
    _prepare_work(work)
    nbformat.write(nb, work / "chapters" / path.name)
    sandbox = Sandbox(work, options.memory_mb, not options.no_sandbox, getattr(options, "cgroup", ""))
    try:
        status, detail = _execute(nb, work, chapter, options, sandbox)
    finally:
        sandbox.close()
    nbformat.write(nb, work / "chapters" / path.name)  # the executed copy, for the instructor
    result = Result(student, chapter, status, detail)
    found: dict[str, list] = {}
    notes: dict[str, list] = {}
    for grader in graders:
        cell = nb.cells[grader.index]
        payloads = [o["data"][VERDICT_MIME] for o in cell.get("outputs", [])
                    if o.get("output_type") == "display_data" and VERDICT_MIME in o.get("data", {})]
        payloads = [p for p in payloads if isinstance(p, dict) and p.get("token") == token]
        answer_errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in nb.cells[grader.answer_index].get("outputs", [])
                         if o.get("output_type") == "error"]
        note = notes.setdefault(grader.exercise, [])
        note += [f"your answer cell raised {e}" for e in answer_errors]
        if not payloads:
            ran = nb.cells[grader.index].get("execution_count") is not None or cell.get("outputs")
            errors = [f"{o.get('ename')}: {o.get('evalue')}" for o in cell.get("outputs", [])
                      if o.get("output_type") == "error"]
            reason = (f"the grader's check raised {errors[0]}" if errors else
                      "the check could not run: " + (detail or status) if not ran else "the check gave no verdict")
            note.append(reason)
            continue
        payload = payloads[-1]
        result.replaced += payload.get("replaced", [])
        note += [f"the check {e['call']} could not run: {e['error']}" for e in payload.get("errors", [])]
        for v in payload.get("verdicts", []):
            found.setdefault(v.get("exercise"), []).append(v)
    for label in labels:
        if found.get(label):
            result.exercises[label] = _combine(found[label])
        else:
            reasons = notes.get(label) or [f"no check ran ({status}{': ' + detail if detail else ''})"]
            result.exercises[label] = _no_verdict("; ".join(reasons))
        result.exercises[label]["notes"] = [n for n in notes.get(label, []) if found.get(label)]
    result.replaced = sorted(set(result.replaced))
    result.seconds = time.monotonic() - started
    return result


# ---- the reports ------------------------------------------------------------------------------------------
def write_reports(results: list[Result], out: Path, labels: dict[str, list[str]], enforced: bool) -> None:
    columns = [label for chapter in sorted(labels) for label in labels[chapter]]
    with open(out / "grades.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "chapter", *columns, "total", "max", "status", "detail"])
        for r in results:
            writer.writerow([r.student, r.chapter, *[r.exercises[c]["points"] if c in r.exercises else ""
                                                     for c in columns],
                             r.total, MAX_POINTS * len(labels.get(r.chapter, [])), r.status, r.detail])
    lines = ["# Grades", "", f"Auto-checked points: {', '.join(f'{k} {v}' for k, v in POINTS.items())}; "
             f"no verdict 0. Sandbox: {'enforced' if enforced else 'NOT enforced (--no-sandbox)'}.", ""]
    for chapter in sorted(labels):
        rows = [r for r in results if r.chapter == chapter]
        lines += [f"## {chapter}", "", "| student | status | " + " | ".join(labels[chapter]) + " | points |",
                  "|---|---|" + "---|" * len(labels[chapter]) + "---|"]
        for r in rows:
            cells = [f"{r.exercises[c]['verdict']} ({r.exercises[c]['points']})" for c in labels[chapter]]
            status = r.status + (f": {r.detail}" if r.detail else "")
            lines.append(f"| {r.student} | {status} | " + " | ".join(cells) +
                         f" | {r.total} / {MAX_POINTS * len(labels[chapter])} |")
        lines.append("")
        counts = {label: {} for label in labels[chapter]}
        for r in rows:
            for label in labels[chapter]:
                verdict = r.exercises[label]["verdict"]
                counts[label][verdict] = counts[label].get(verdict, 0) + 1
        lines += [f"- {label}: " + ", ".join(f"{n} {v}" for v, n in sorted(counts[label].items()))
                  for label in labels[chapter]]
        statuses = {}
        for r in rows:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        lines += [f"- submissions: {len(rows)} (" + ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) + ")"]
        flagged = [r.student for r in rows if r.replaced]
        if flagged:
            lines.append(f"- check functions replaced in the kernel (graded with the genuine ones): "
                         f"{', '.join(flagged)}")
        lines.append("")
    (out / "summary.md").write_text("\n".join(lines))
    for r in results:
        folder = out / "feedback" / r.student
        folder.mkdir(parents=True, exist_ok=True)
        text = [f"# {r.chapter}: {r.student}", "", f"Status: {r.status}" + (f" ({r.detail})" if r.detail else ""),
                f"Auto-checked points: {r.total} of {MAX_POINTS * len(r.exercises)}", ""]
        if r.replaced:
            text += ["Your notebook replaced these check functions; the grader ran the genuine ones: "
                     + ", ".join(r.replaced) + ".", ""]
        for label, e in r.exercises.items():
            text += [f"## {label}: {e['verdict']} ({e['points']} of {MAX_POINTS})", ""]
            text += ["> " + line for line in e["message"].splitlines()] + [""]
            if e.get("hint"):
                text += [f"Hint: {e['hint']}", ""]
            text += [f"Note: {n}" for n in e.get("notes", [])] + ([""] if e.get("notes") else [])
        (folder / f"{r.chapter}.md").write_text("\n".join(text))


def grade_in_subprocess(path: Path, out: Path, options, labels: list[str]) -> Result:
    """Grade ``path`` in a grader process of its own, killed (with its kernel) past the notebook's deadline plus
    a minute: whatever a submission does to its kernel, or to the grader's client, the class goes on."""
    started = time.monotonic()
    student, chapter = path.parent.name, path.stem
    name = f"mlops-lab-grader-{uuid.uuid4().hex[:12]}"
    report = out / "work" / f".{student}.{chapter}.json"
    report.unlink(missing_ok=True)
    command = [sys.executable, "-m", "mlops_lab.grading", str(path.parent.parent), "--out", str(out),
               "--one", str(path), "--cgroup", name, "--cell-timeout", str(options.cell_timeout),
               "--timeout", str(options.timeout), "--memory-mb", str(options.memory_mb)]
    command += ["--no-sandbox"] if options.no_sandbox else []
    process = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=open(out / "work" / f".{student}.{chapter}.log", "wb"))
    try:
        process.wait(timeout=options.timeout + 60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        Sandbox.remove(name)
    try:
        data = json.loads(report.read_text())
        return Result(**data)
    except (OSError, ValueError, TypeError):
        stopped = time.monotonic() - started > options.timeout + 60
        status, detail = (("timeout", f"the grader stopped it after {options.timeout + 60:g} s") if stopped else
                          ("error", f"the grader failed (exit {process.returncode}): see "
                                    f"{out / 'work' / f'.{student}.{chapter}.log'}"))
        return Result(student, chapter, status, detail, {label: _no_verdict(detail) for label in labels},
                      seconds=time.monotonic() - started)


def editions_for(names: set[str]) -> dict:
    tool = _edition_tool()
    editions = {}
    for relative in tool.toc_notebooks(ROOT):
        if relative.name in names:
            editions[relative.name] = tool.student_notebook(ROOT / relative, name=str(relative))
    return editions


def grade_class(submissions: Path, out: Path, options) -> list[Result]:
    paths = sorted(p for p in submissions.glob("*/*.ipynb") if p.is_file())
    if not paths:
        raise SystemExit(f"grading: no <student>/<chapter>.ipynb under {submissions}")
    (out / "work").mkdir(parents=True, exist_ok=True)
    editions = editions_for({p.name for p in paths})
    labels = {Path(name).stem: exercise_labels(nb) for name, nb in editions.items()}

    def one(path: Path) -> Result:
        result = grade_in_subprocess(path, out, options, labels.get(path.stem, []))

        print(f"{result.student}/{result.chapter}: {result.status} {result.total} points "
              f"({result.seconds:.0f} s){': ' + result.detail if result.detail else ''}", flush=True)
        return result

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        results = list(pool.map(one, paths))
    write_reports(results, out, labels, not options.no_sandbox)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlops_lab.grading", description=__doc__.splitlines()[0])
    parser.add_argument("submissions", type=Path, help="folder of <student>/<chapter notebook>.ipynb")
    parser.add_argument("--out", type=Path, required=True, help="folder for grades.csv, summary.md, feedback/")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded at once (default 1)")
    parser.add_argument("--cell-timeout", type=float, default=120, help="seconds a cell may run (default 120)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds a whole notebook may run (default 600)")
    parser.add_argument("--memory-mb", type=int, default=2048,
                        help="memory for a kernel and every process it starts (default 2048, Binder's)")
    parser.add_argument("--no-sandbox", action="store_true",
                        help="grade without the sandbox (only timeouts and a per-process address-space limit)")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)     # one submission, in a grader process
    parser.add_argument("--cgroup", default="", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.one:
        out = options.out.resolve()
        path = options.one.resolve()
        result = grade_submission(path, out, options, editions_for({path.name}))
        report = out / "work" / f".{result.student}.{result.chapter}.json"
        report.write_text(json.dumps(dataclasses.asdict(result)))
        sys.stdout.flush()
        os._exit(0)  # not waiting for a client thread a dead kernel left behind
    if not options.no_sandbox and (problems := sandbox_problems()):
        print("grading: cannot build the sandbox here: " + "; ".join(problems) + ".\n"
              "Run as root on Linux, or pass --no-sandbox to grade with timeouts and a per-process memory "
              "limit only (a submission could then change files outside its folder).", file=sys.stderr)
        return 2
    out = options.out.resolve()
    started = time.monotonic()
    results = grade_class(options.submissions.resolve(), out, options)
    print(f"graded {len(results)} submissions in {time.monotonic() - started:.0f} s: {out / 'grades.csv'}, "
          f"{out / 'summary.md'}, {out / 'feedback'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
