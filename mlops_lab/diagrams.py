"""Diagrams drawn from data: the book's figures of processes are built in code, not pasted in."""
from __future__ import annotations

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
    fig, ax = plt.subplots(figsize=(10, 1.25 * n_levels + 0.9))
    ax.set_xlim(-2.3, n_steps)
    ax.set_ylim(-0.9, n_levels)
    ax.axis("off")
    for row, level in enumerate(steps.columns):
        y = n_levels - 1 - row
        ax.text(-2.25, y + 0.55, level, fontsize=11, weight="bold", va="center")
        ax.text(-2.25, y + 0.2, f"trigger: {triggers.get(level, '')}", fontsize=8, va="center", wrap=True)
        for col, step in enumerate(steps.index):
            mode = steps.loc[step, level]
            ax.add_patch(FancyBboxPatch((col + 0.05, y + 0.1), 0.8, 0.7, boxstyle="round,pad=0.02",
                                        facecolor=MODE_COLOURS[mode], edgecolor="#555555"))
            ax.text(col + 0.45, y + 0.45, step, ha="center", va="center", fontsize=8)
            if col < n_steps - 1:
                ax.annotate("", xy=(col + 1.05, y + 0.45), xytext=(col + 0.87, y + 0.45),
                            arrowprops={"arrowstyle": "->", "color": "#555555"})
    handles = [FancyBboxPatch((0, 0), 1, 1, facecolor=c, edgecolor="#555555") for c in MODE_COLOURS.values()]
    ax.legend(handles, MODE_LABELS.values(), loc="lower center", ncol=3, fontsize=8,
              bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout()
    return fig
