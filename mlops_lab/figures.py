"""Figures for the book: one house style, and knobs that redraw a figure the static HTML still shows.

Static HTML keeps no ``interact`` figure (it lives in widget state and needs a kernel), so
:func:`figure_with_knobs` first displays the default figure as a plain PNG output, then lets each
ipywidgets control redraw that same output in place when a kernel is live (Binder, Colab, a laptop).
"""
from __future__ import annotations

from typing import Callable

import matplotlib
import matplotlib.pyplot as plt

BLUE, ORANGE, GREEN, RED, GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#7f7f7f"


def use_book_style() -> None:
    plt.rcParams.update({
        "figure.figsize": (8, 3.6), "figure.dpi": 100, "savefig.dpi": 100, "axes.spines.top": False,
        "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "font.size": 10,
        "legend.frameon": False,
    })


def figure_with_knobs(draw: Callable[..., "matplotlib.figure.Figure"], **knobs):
    """Show ``draw(**defaults)`` as a PNG and redraw it in place whenever a knob (an ipywidget) moves.

    ``knobs`` maps each keyword argument of ``draw`` to an ipywidgets control; returns the controls' box.
    """
    import ipywidgets as widgets
    from IPython.display import display

    def render():
        fig = draw(**{name: knob.value for name, knob in knobs.items()})
        plt.close(fig)  # displayed once, through the handle, not again by the inline backend
        return fig

    controls = widgets.HBox(list(knobs.values()))
    display(controls)
    handle = display(render(), display_id=True)
    for knob in knobs.values():
        knob.observe(lambda _change: handle.update(render()), names="value")
    return controls
