"""Diagrams drawn from data: the book's figures of processes are built in code, not pasted in."""
from __future__ import annotations

import textwrap

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import FancyBboxPatch

from .figures import BLUE, GREY, ORANGE, RED
from .simulator import (APPROVED, EARLY_LABEL, EARLY_MONTHS, KNOWN, OUTCOME_MONTHS, REPORTING_LAG_MONTHS, TARGET)

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


# ---- the book's clock --------------------------------------------------------------------------------
CLOCK_KINDS = {
    "repaid": "repaid: never late",
    "cured": "missed a payment, then caught up",
    "early default": "defaulted early",
    "late default": "defaulted after month 3",
    "declined": "declined by the incumbent policy",
}


def clock_examples(batch: pd.DataFrame) -> pd.DataFrame:
    """One real application of each kind in ``batch`` (the lowest ``application_id`` of each), for the clock figure.

    Kinds: ``repaid`` (no default, never 30+ days late early on), ``cured`` (30+ days late in the first
    months, no default), ``early default`` (defaulted in time to show in the early label), ``late default``
    (defaulted after the early label was read, so it shows as 0 there), ``declined`` (no loan, no outcome).
    Returns the rows themselves, indexed by kind, with the columns of the clock: dates and labels as the
    batch holds them (the world's record, read retrospectively; the figure shows what is known on a date).
    """
    missing = {APPROVED, TARGET, EARLY_LABEL, *KNOWN.values(), "application_date", "application_id"} - set(batch)
    if missing:
        raise ValueError(f"clock_examples needs a CreditStream batch; missing {sorted(missing)}")
    approved = batch[APPROVED].to_numpy(dtype=bool)
    default = batch[TARGET].fillna(0).to_numpy(dtype=int) == 1
    early = batch[EARLY_LABEL].fillna(0).to_numpy(dtype=int) == 1
    kinds = {
        "repaid": approved & ~default & ~early,
        "cured": approved & ~default & early,
        "early default": approved & default & early,
        "late default": approved & default & ~early,
        "declined": ~approved,
    }
    picked = {}
    for kind, rows in kinds.items():
        if not rows.any():
            raise ValueError(f"the batch has no {CLOCK_KINDS[kind]!r} application to show; draw a larger batch")
        picked[kind] = batch.loc[rows].sort_values("application_id").iloc[0]
    columns = ["application_id", "application_date", APPROVED, EARLY_LABEL, KNOWN[EARLY_LABEL], TARGET,
               KNOWN[TARGET], "months_to_default"]
    examples = pd.DataFrame(picked).T[columns]
    examples.index.name = "kind"
    return examples.astype(batch[columns].dtypes.to_dict())


def clock_figure(batch: pd.DataFrame, as_of) -> plt.Figure:
    """The book's clock: real loans from ``batch`` on one time axis, and what the lender knows on ``as_of``.

    Each row is one application (see :func:`clock_examples`): the application is decided and the loan made
    the same day (circle); the early-performance label is known :data:`EARLY_MONTHS` months on book plus
    :data:`REPORTING_LAG_MONTHS` of reporting later (diamond); the 12-month outcome on the day of a default,
    or :data:`OUTCOME_MONTHS` months after the application for a loan that did not default (square). A
    declined applicant never gets either. Filled markers are known on ``as_of`` (the vertical line), hollow
    ones are not yet. The lags written on the figure are read from the simulator's constants.
    """
    as_of = pd.Timestamp(as_of)
    examples = clock_examples(batch)
    early_lag, outcome_lag = EARLY_MONTHS + REPORTING_LAG_MONTHS, OUTCOME_MONTHS
    n = len(examples)
    y = np.arange(n)[::-1].astype(float)                 # the first kind on top
    loans = examples[APPROVED].to_numpy(dtype=bool)
    early_known = examples[KNOWN[EARLY_LABEL]]
    final_known = examples[KNOWN[TARGET]]
    end = max(final_known.max(), as_of) + pd.DateOffset(months=1)

    fig, ax = plt.subplots(figsize=(10, 0.75 * n + 1.6))
    for row, (kind, loan) in zip(y, examples.iterrows()):
        start = loan["application_date"]
        if loan[APPROVED]:
            ax.plot([start, loan[KNOWN[TARGET]]], [row, row], "-", color=GREY, lw=2, alpha=0.5, zorder=1)
            outcome = (f"defaulted after {int(loan['months_to_default'])} months on book" if loan[TARGET] == 1
                       else f"no default in {OUTCOME_MONTHS} months")
            early = "30+ days late" if loan[EARLY_LABEL] == 1 else "never 30+ days late"
            text = f"early label: {early} in months 1-{EARLY_MONTHS} · outcome: {outcome}"
        else:
            ax.plot([start, end], [row, row], ":", color=GREY, lw=1.5, zorder=1)
            text = "no loan, so no outcome, ever: its label is missing, not 0"
        ax.text(-0.01, row, CLOCK_KINDS[kind], transform=ax.get_yaxis_transform(), ha="right", va="center",
                fontsize=9)
        ax.text(start + pd.Timedelta(days=6), row - 0.22, text, fontsize=7.5, color="#444444", va="top")

    def markers(dates, rows, marker, colour, label):
        known = (dates <= as_of).to_numpy()
        ax.plot(dates, rows, marker, linestyle="none", markersize=8, color=colour, markerfacecolor="white",
                label=label, zorder=3)                    # every date, hollow: the figure's data
        ax.plot(dates[known], rows[known], marker, linestyle="none", markersize=8, color=colour, zorder=4)

    markers(examples["application_date"], y, "o", BLUE, "application = decision = loan (same day)")
    markers(early_known[loans], y[loans], "D", ORANGE,
            f"early label known: {EARLY_MONTHS} months on book + {REPORTING_LAG_MONTHS} month reporting")
    markers(final_known[loans], y[loans], "s", RED,
            f"outcome known: the default date, or {OUTCOME_MONTHS} months on book")

    # The lags, drawn on the first approved loan that did not default (its dates are exactly the lags).
    top = y[list(examples.index).index("repaid")]
    start = examples.loc["repaid", "application_date"]
    for lag, height, what in ((early_lag, 0.3, "early label known"), (outcome_lag, 0.68, "outcome known")):
        ax.annotate("", xy=(start + pd.DateOffset(months=lag), top + height), xytext=(start, top + height),
                    arrowprops={"arrowstyle": "<->", "color": "#555555", "lw": 1})
        middle = start + (start + pd.DateOffset(months=lag) - start) / 2
        ax.text(middle, top + height + 0.03, f"{what} {lag} months after the application", ha="center",
                va="bottom", fontsize=8, color="#555555")
    ax.axvline(as_of, color="black", lw=1.2, label=f"as of {as_of.date()}: filled = known, hollow = not yet")
    ax.set_ylim(-0.6, n - 1 + 1.05)
    ax.set_yticks([])
    ax.set_xlim(examples["application_date"].min() - pd.DateOffset(days=20), end)
    ax.grid(axis="y", visible=False)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8)
    ax.set_title(f"The book's clock: what the lender knows about {examples['application_date'].min():%B %Y}'s "
                 f"applications on {as_of.date()}", fontsize=10)
    fig.tight_layout()
    return fig


def ct_and_cicd_figure() -> plt.Figure:
    """Which loop runs when: CI/CD (chapter 08) on a change of code, CT (chapter 07) on new data, a schedule
    or an alarm; both end at the registry, where only a passed gate adds a version and only an approval (or
    the CT policy) moves the alias the servers load."""
    lanes = [
        ("a change of code or parameters\n(a pull / merge request)", "#a1d99b",
         ["lint, unit and\ndata tests", "dvc repro\n(run cache)", "model tests,\ngate, report", "merge, then\nregister",
          "approve:\ndeploy"]),
        ("new data, a schedule,\nor an alarm", "#9ecae1",
         ["validate the\nnew data", "dvc repro", "gate", "register,\nalias moves"]),
    ]
    fig, ax = plt.subplots(figsize=(10, 3.4))
    for row, (trigger, colour, steps) in enumerate(lanes):
        y = 1.6 - row * 1.3
        ax.text(0.0, y, trigger, ha="left", va="center", fontsize=9)
        for k, step in enumerate(steps):
            x = 2.3 + k * 1.45
            ax.add_patch(plt.Rectangle((x, y - 0.35), 1.2, 0.7, facecolor=colour, edgecolor="#555555"))
            ax.text(x + 0.6, y, step, ha="center", va="center", fontsize=8)
            if k:
                ax.annotate("", (x, y), (x - 0.25, y), arrowprops={"arrowstyle": "->", "color": "#555555"})
        ax.annotate("", (9.55, 0.95), (2.3 + len(steps) * 1.45 - 0.25, y),
                    arrowprops={"arrowstyle": "->", "color": "#555555", "connectionstyle": "arc3,rad=0"})
    ax.add_patch(plt.Rectangle((9.55, 0.55), 1.3, 0.8, facecolor="#fdd0a2", edgecolor="#555555"))
    ax.text(10.2, 0.95, "registry:\nmodels:/credit\n@champion", ha="center", va="center", fontsize=8)
    ax.text(4.4, 2.25, "CI/CD, this chapter (Level 2)", fontsize=9, color="#31a354")
    ax.text(4.4, -0.3, "CT, chapter 07 (Level 1)", fontsize=9, color="#3182bd")
    ax.set(xlim=(-0.1, 11), ylim=(-0.45, 2.45))
    ax.axis("off")
    fig.tight_layout()
    return fig


LOOP_LANES = ("data", "CI", "pipeline", "registry", "serving", "monitoring")
LOOP_COLOURS = {"data": "#6baed6", "CI": "#31a354", "pipeline": "#3182bd", "registry": "#e6550d",
                "serving": "#756bb1", "monitoring": "#de2d26"}


def loop_timeline_figure(events: pd.DataFrame, drift: pd.Series | None = None) -> plt.Figure:
    """Chapter 13's loop on the book's calendar: one lane per part (:data:`LOOP_LANES`), one marker and label
    per event (columns ``date``, ``lane``, ``what``; events of one day in one lane are stacked), and under it
    the weekly drift checks (``drift``: features drifted, indexed by the check's date), if given."""
    unknown = sorted(set(events["lane"]) - set(LOOP_LANES))
    if unknown:
        raise ValueError(f"unknown lane(s) {unknown}; lanes are {LOOP_LANES}")
    rows = 2 if drift is not None else 1
    fig, axes = plt.subplots(rows, 1, figsize=(10, 4.8 if rows == 2 else 3.6), sharex=True, squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1][:rows]})
    ax = axes[0, 0]
    dates = pd.to_datetime(events["date"])
    for (day, lane), group in events.assign(date=dates).groupby(["date", "lane"], sort=False):
        y = len(LOOP_LANES) - 1 - LOOP_LANES.index(lane)
        ax.plot([day], [y], "o", color=LOOP_COLOURS[lane], markersize=7)
        label = "\n".join(textwrap.fill(text, 28) for text in group["what"])
        ax.annotate(label, (day, y), xytext=(6, 4), textcoords="offset points", fontsize=7, va="bottom")
    ax.set_yticks(range(len(LOOP_LANES)), list(reversed(LOOP_LANES)))
    ax.set_ylim(-0.6, len(LOOP_LANES) - 0.2)
    ax.grid(axis="x", color="#eeeeee")
    ax.set_title("The loop on the book's calendar: each event is asserted from its own artifact", fontsize=10)
    if drift is not None:
        low = axes[1, 0]
        low.bar(pd.to_datetime(drift.index), drift.to_numpy(), width=2.5, color=LOOP_COLOURS["monitoring"])
        low.set_ylabel("features\ndrifted", fontsize=8)
        low.set_ylim(0, max(1, float(drift.max())) * 1.2)
    span = pd.Timedelta(days=3)
    axes[-1, 0].set_xlim(dates.min() - span, dates.max() + pd.Timedelta(days=10))
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig
