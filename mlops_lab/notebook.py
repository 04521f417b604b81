"""Small helpers for what a chapter shows: a package function's source, rendered as code."""
from __future__ import annotations

import inspect


def show_source(obj) -> None:
    """Display the source of a package function or class, so the book can teach from it."""
    from IPython.display import Markdown, display

    display(Markdown(f"```python\n{inspect.getsource(obj).rstrip()}\n```"))


def glue(name: str, value, display: bool = False) -> None:
    """myst-nb's ``glue`` for numbers the text quotes: NumPy scalars become plain Python numbers first
    (their repr, ``np.float64(0.8)``, cannot be formatted by ``{glue:text}`name:.1%```)."""
    from myst_nb import glue as myst_glue

    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    myst_glue(name, value, display=display)
