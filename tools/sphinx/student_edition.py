"""The student edition of the book's HTML: every exercise solution removed, no source downloads.

Turned on by the config value ``student_edition`` (default ``False``; in ``_config.yml`` under
``sphinx.config``) or by the environment variable ``MLOPS_LAB_STUDENT_EDITION=1`` (``make student-book``).
Then, for each page:

- on ``doctree-read`` every ``sphinx_exercise.nodes.solution_node`` is removed from the doctree. (The gated
  ``solution-start``/``solution-end`` pair has already been merged into one ``solution_node`` by
  sphinx-exercise's transforms when ``doctree-read`` fires. sphinx-exercise's own ``hide_solutions: true``
  crashes on gated solutions: ``NotImplementedError: unknown node solution_end_node``.)
- ``html_copy_source`` is ``False`` and the theme's download button is off, so no page can serve the full
  notebook (with its solutions) from ``_sources/``.

- the Binder and Colab launch buttons open the *student* notebooks: the theme's ``repository_branch`` becomes
  the student branch (``student``, or ``MLOPS_LAB_STUDENT_BRANCH``), which ``tools/student_branch.py``
  writes. Buttons on the instructor notebooks would hand out every solution.
"""
from __future__ import annotations

import os

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.util import logging

ENV_FLAG = "MLOPS_LAB_STUDENT_EDITION"
BRANCH_ENV, DEFAULT_BRANCH = "MLOPS_LAB_STUDENT_BRANCH", "student"
logger = logging.getLogger(__name__)


def _env_flag_set() -> bool:
    return os.environ.get(ENV_FLAG, "").strip().lower() in ("1", "true", "yes", "on")


def student_edition_on(config: Config) -> bool:
    """True when the config value or the environment variable asks for the student edition."""
    return bool(config.student_edition) or _env_flag_set()


def student_branch() -> str:
    """The branch the student site's launch buttons open (tools/student_branch.py writes it)."""
    return os.environ.get(BRANCH_ENV, "").strip() or DEFAULT_BRANCH


def configure(app: Sphinx, config: Config) -> None:
    """On ``config-inited``: fold the environment flag into the config; switch source downloads off."""
    if not student_edition_on(config):
        return
    config.student_edition = True  # a changed value makes Sphinx re-read every page (rebuild="env")
    config.html_copy_source = False
    if config.html_theme == "sphinx_book_theme":  # its download button would link to the missing _sources
        config.html_theme_options = {**(config.html_theme_options or {}), "use_download_button": False,
                                     "repository_branch": student_branch()}
    logger.info("student edition: removing exercise solutions and source downloads")


def remove_solutions(app: Sphinx, doctree: nodes.document) -> None:
    """On ``doctree-read``: drop every solution (its text, code cells and outputs) from the page."""
    if not student_edition_on(app.config):
        return
    from sphinx_exercise.nodes import solution_node

    app.config.html_copy_source = False
    for node in list(doctree.findall(solution_node)):
        node.parent.remove(node)


def setup(app: Sphinx) -> dict:
    app.add_config_value("student_edition", False, "env", [bool])
    app.connect("config-inited", configure)
    # After sphinx-exercise's own doctree-read handler (priority 500) has registered the page's nodes.
    app.connect("doctree-read", remove_solutions, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
