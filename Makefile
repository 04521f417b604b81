# The two commands: `make book` and `make test`. Everything runs inside .venv, created on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed

# No telemetry, no colour, no pager: every tool stays offline and quiet. The venv's bin/ goes first on
# PATH because `mlflow models serve` execs `uvicorn`.
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PATH := $(abspath $(BIN)):$(PATH)

NBVAL := $(PY) -m pytest --nbval-lax -p no:cacheprovider -n auto --dist loadscope
BOOK := $(BIN)/jupyter-book build . -W -n --keep-going

.PHONY: book test unit chapters student student-book book-checks class benchmark grade lock clean

book: $(STAMP) $(NODE_STAMP)
	-@tools/system_packages.sh install
	$(BOOK)

# The whole suite, in the order a failure is cheapest to find.
test: $(STAMP) $(NODE_STAMP)
	$(MAKE) unit chapters student book student-book book-checks class

unit: $(STAMP) $(NODE_STAMP)
	$(PY) -m pytest -m "not book and not class_server" tests

# The class server (deploy/class_server.py) for real: PostgreSQL, MLflow with basic auth, the SSH DVC remote;
# chapters 04, 05 and 07 and 02-03's DVC pushes as a student, then 30 students at once (their counts are
# printed). Needs root and Debian's postgresql and openssh-server (tools/system_packages.sh).
class: $(STAMP)
	$(PY) -m pytest -m class_server -rP -p no:cacheprovider tests/test_class_server.py

# Instructor notebooks: a wrong solution raises (MLOPS_LAB_STRICT_CHECKS), any cell error fails.
# Chapters write only into workspace/: a new file under chapters/ (an MLflow ./mlruns, say) fails the run.
chapters: $(STAMP) $(NODE_STAMP)
	@before=$$(git ls-files --others chapters); \
	  MLOPS_LAB_STRICT_CHECKS=1 $(NBVAL) chapters || exit 1; \
	  stray=$$(comm -13 <(echo "$$before") <(git ls-files --others chapters)); \
	  if [ -n "$$stray" ]; then echo "a chapter wrote into chapters/: $$stray" >&2; exit 1; fi

# Student notebooks (solutions removed) must run clean with every exercise unattempted, one at a time on one
# core shared with a busy process (tools/busy_core.sh; unpinned without taskset), as on Binder's single CPU.
student: $(STAMP) $(NODE_STAMP)
	$(PY) tools/student_edition.py --out _build/student
	tools/busy_core.sh $(PY) -m pytest --nbval-lax -p no:cacheprovider -p no:xdist _build/student/chapters

# Checks on the built HTML, including the real-browser smoke test and the student HTML's leak check (needs
# `make book` and `make student-book` first).
book-checks: $(STAMP)
	$(PY) -m pytest -m book tests

# The student HTML: every solution removed, no source downloads, launch buttons on the student branch. It
# renders the notebooks `make book` executed (the shared execution cache), so it runs no chapter again.
student-book: $(STAMP)
	MLOPS_LAB_STUDENT_EDITION=1 $(BOOK) --path-output _build/student-book

# Chapter seconds and peak memory against the budget, then the micro-benchmarks (tools/bench_*.py).
benchmark: $(STAMP)
	$(PY) tools/benchmark.py
	for bench in $(wildcard tools/bench_*.py); do $(PY) $$bench || exit 1; done

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

# Chapter 08's GitLab engine, gitlab-ci-local, from npm at the versions package-lock.json pins. Without npm
# the chapter says so and runs `make ci` itself; under CI (CI=true) both engines are required.
$(NODE_STAMP): package.json package-lock.json
	@if command -v npm >/dev/null; then npm ci --no-audit --no-fund --loglevel=error && touch $@; \
	elif [ "$$CI" = true ]; then echo "npm is required under CI (Node 20: apt-get install nodejs npm)" >&2; exit 1; \
	else echo "npm not found: chapter 08 will run its pipelines without gitlab-ci-local (see instructors/setup.md)"; fi

# Grade a class: SUBMISSIONS holds <student>/<chapter>.ipynb; GRADES gets grades.csv, summary.md and feedback/
# (instructors/guide.md, "Grading a class"). Each notebook runs in a sandbox; needs root on Linux.
SUBMISSIONS ?= submissions
GRADES ?= _build/grades
grade: $(STAMP)
	$(PY) -m mlops_lab.grading $(SUBMISSIONS) --out $(GRADES) $(GRADE_FLAGS)

# Re-pin requirements.txt from requirements.in in a throwaway environment.
lock:
	rm -rf /tmp/mlops-lab-lock && $(PYTHON) -m venv /tmp/mlops-lab-lock
	/tmp/mlops-lab-lock/bin/pip install --quiet -r requirements.in
	{ sed -n 1,2p requirements.txt; /tmp/mlops-lab-lock/bin/pip freeze --exclude-editable; echo "-e ."; } > requirements.txt.new
	mv requirements.txt.new requirements.txt && rm -rf /tmp/mlops-lab-lock

clean:
	rm -rf _build workspace .jupyter_cache node_modules
