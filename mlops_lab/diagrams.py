"""Diagrams drawn from data: the book's figures of processes are built in code, not pasted in."""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.patches import FancyBboxPatch

MODE_COLOURS = {"manual": "#d9d9d9", "pipeline": "#9ecae1", "ci/cd": "#a1d99b"}
MODE_LABELS = {"manual": "done by a person", "pipeline": "automated by the training pipeline (CT)",
               "ci/cd": "automated by CI/CD (the pipeline's own code)"}


def maturity_levels_figure(steps: pd.DataFrame, triggers: dict[str, str]) -> plt.Figure:
    """Draw each maturity level (a column of ``steps``) as a row of step boxes coloured by who does them.

    ``steps``: index = step names in process order; columns = level names; values in MODE_COLOURS.
    ``triggers``: level name -> what starts that level's process.
    """
    unknown = set(steps.to_numpy().ravel()) - set(MODE_COLOURS)
    if unknown:
        raise ValueError(f"unknown modes {sorted(unknown)}; use one of {list(MODE_COLOURS)}")
    n_steps, n_levels = len(steps.index), len(steps.columns)
    fig, ax = plt.subplots(figsize=(11, 1.1 * n_levels + 0.6))
    ax.set_xlim(-2.6, n_steps)
    ax.set_ylim(-0.45, n_levels)
    ax.axis("off")
    for row, level in enumerate(steps.columns):
        y = n_levels - 1 - row
        name, _, detail = level.partition(": ")
        ax.text(-2.55, y + 0.62, name, fontsize=11, weight="bold", va="center")
        ax.text(-2.55, y + 0.38, textwrap.fill(detail, 30), fontsize=8.5, va="center")
        ax.text(-2.55, y + 0.1, textwrap.fill(f"trigger: {triggers.get(level, '')}", 36), fontsize=7.5,
                va="center", style="italic", color="#444444")
        for col, step in enumerate(steps.index):
            mode = steps.loc[step, level]
            ax.add_patch(FancyBboxPatch((col + 0.05, y + 0.1), 0.78, 0.7, boxstyle="round,pad=0.02",
                                        facecolor=MODE_COLOURS[mode], edgecolor="#555555"))
            ax.text(col + 0.44, y + 0.45, textwrap.fill(step.replace("\n", " "), 11), ha="center",
                    va="center", fontsize=8)
            if col < n_steps - 1:
                ax.annotate("", xy=(col + 1.04, y + 0.45), xytext=(col + 0.86, y + 0.45),
                            arrowprops={"arrowstyle": "->", "color": "#555555"})
    handles = [FancyBboxPatch((0, 0), 1, 1, facecolor=c, edgecolor="#555555") for c in MODE_COLOURS.values()]
    ax.legend(handles, MODE_LABELS.values(), loc="lower center", ncol=3, fontsize=8,
              bbox_to_anchor=(0.5, -0.04))
    fig.tight_layout()
    return fig
