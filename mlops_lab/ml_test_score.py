"""The running example scored with Breck et al.'s ML Test Score (2017): 28 tests, and which chapter earns each.

The rubric: seven tests in each of four sections (data, model, infrastructure, monitoring). A test scores
half a point when it is run by hand with its result documented and shared, a full point when a system
runs it automatically and repeatedly. A section's score is its sum; the final score is the LOWEST section
(0: a research project; above 5: exceptional), because a system must cover all four to be ready.

:data:`RUBRIC` lists the tests in the paper's wording (shortened) with the chapters of this book that earn
points on the running example (the lender's credit model) and how. A chapter run by a reader is a manual
run: its tests earn 0.5. A point is automated when the system runs the test by itself: the pipeline on
every run (chapter 07), CI on every push (chapter 08), the serving stack or the monitor on every request
or batch (chapters 09-12). Chapter 08 is not written yet; its credits are marked ``planned`` and
:func:`score` leaves them out unless ``include_planned``.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

SECTIONS = ("Data", "Model", "Infrastructure", "Monitoring")
MANUAL, AUTOMATED = 0.5, 1.0
PLANNED_CHAPTERS = frozenset({8})      # the Level 2 chapter, not written yet


@dataclass(frozen=True)
class Credit:
    chapter: int
    points: float
    how: str


@dataclass(frozen=True)
class RubricTest:
    section: str
    number: int
    wording: str
    credits: tuple = ()
    never: str = ""                # why no chapter earns it, when none does

    @property
    def id(self) -> str:
        return f"{self.section[:5] if self.section != 'Monitoring' else 'Monitor'} {self.number}"


def _t(section, number, wording, *credits, never=""):
    return RubricTest(section, number, wording, tuple(Credit(*c) for c in credits), never)


RUBRIC: tuple[RubricTest, ...] = (
    _t("Data", 1, "Feature expectations are captured in a schema",
       (6, MANUAL, "the pandera contract (contract.py), run by pytest on every raw export"),
       (7, AUTOMATED, "the pipeline's data-validation stage runs the contract on every run"),
       (12, AUTOMATED, "the retraining loop validates every incoming batch and quarantines a bad one")),
    _t("Data", 2, "All features are beneficial",
       never="chapter 03 ablated two of the eleven features (the bureau data); no chapter tests each one"),
    _t("Data", 3, "No feature's cost is too much",
       (3, MANUAL, "what dropping the bought bureau data would cost, measured with dvc metrics diff")),
    _t("Data", 4, "Features adhere to meta-level requirements",
       (6, MANUAL, "an INV test: ids, dates, labels and the teaching-only outcomes never change a score"),
       (8, AUTOMATED, "CI runs the model tests on every push")),
    _t("Data", 5, "The data pipeline has appropriate privacy controls",
       (2, MANUAL, "retention (dvc gc) and erasing one person from a versioned history, worked by hand")),
    _t("Data", 6, "New features can be added quickly",
       never="no chapter measures the calendar time to add a feature to the production model"),
    _t("Data", 7, "All input feature code is tested",
       (6, MANUAL, "tests/test_features.py: prepare and featurize, run with pytest"),
       (8, AUTOMATED, "CI runs the code tests on every push")),
    _t("Model", 1, "Every model specification undergoes a code review and is checked in to a repository",
       (3, MANUAL, "the pipeline and params.yaml are checked in (git + DVC); nobody reviews them yet"),
       (8, AUTOMATED, "pull requests with a CI report are reviewed before merging")),
    _t("Model", 2, "Offline proxy metrics correlate with actual online impact metrics",
       (11, MANUAL, "monitored AUC on served traffic, joined with labels as they arrive, against the offline AUC")),
    _t("Model", 3, "All hyperparameters have been tuned",
       (3, MANUAL, "a grid of decision thresholds with dvc exp run, chosen on validation"),
       (4, MANUAL, "a grid of C and training windows, compared with search_runs")),
    _t("Model", 4, "The impact of model staleness is known",
       (1, MANUAL, "the Level 0 decay table: a year of a model nobody retrains"),
       (12, MANUAL, "a simulated year of retraining policies on real dates")),
    _t("Model", 5, "A simpler model is not better",
       (6, MANUAL, "the model against the credit score alone, with DeLong's interval for the AUC gap"),
       (8, AUTOMATED, "CI runs the model tests on every push")),
    _t("Model", 6, "Model quality is sufficient on all important data slices",
       (6, MANUAL, "slice AUCs with their uncertainty against a derived floor"),
       (7, AUTOMATED, "the model-validation gate runs the slice checks on every candidate")),
    _t("Model", 7, "The model has been tested for considerations of inclusion",
       (6, MANUAL, "approval ratio and outcome gaps for applicants aged 62+ (ECOA's elderly)"),
       (8, AUTOMATED, "CI runs the fairness test on every push")),
    _t("Infrastructure", 1, "Training is reproducible",
       (2, MANUAL, "retraining on an old data version gives the same model"),
       (5, MANUAL, "a registered model rebuilt bit for bit from its lineage")),
    _t("Infrastructure", 2, "Model specification code is unit tested",
       (6, MANUAL, "tests/test_features.py tests the featurize and train code"),
       (8, AUTOMATED, "CI runs the code tests on every push")),
    _t("Infrastructure", 3, "The full ML pipeline is integration tested",
       (3, MANUAL, "dvc repro end to end, its outputs checked, a bad parameter shown to fail cleanly"),
       (8, AUTOMATED, "CI reproduces the pipeline on every push")),
    _t("Infrastructure", 4, "Model quality is validated before attempting to serve it",
       (4, MANUAL, "promote_if_better: a gate on a holdout known on the day of the decision"),
       (7, AUTOMATED, "the pipeline's model-validation gate registers only a better candidate"),
       (12, AUTOMATED, "the retraining loop moves the champion alias only after the gate")),
    _t("Infrastructure", 5, "The model allows debugging by observing the step-by-step computation of training "
       "or inference on a single example",
       never="no chapter steps through one application's computation"),
    _t("Infrastructure", 6, "Models are canaried before serving",
       (10, AUTOMATED, "the router's canary with alarms, promoted or rolled back by itself")),
    _t("Infrastructure", 7, "Serving models can be rolled back",
       (5, MANUAL, "the champion alias moved back, by hand, to a version the corrupt batch never reached"),
       (10, AUTOMATED, "automatic rollback when an alarm fires during a rollout")),
    _t("Monitoring", 1, "Dependency changes result in notification",
       never="chapter 03 reruns training when a pin changes, but nobody is notified of upstream changes"),
    _t("Monitoring", 2, "Data invariants hold in training and serving inputs",
       (6, MANUAL, "the contract on the training exports, run by hand"),
       (9, AUTOMATED, "the model's signature rejects a malformed request on every call"),
       (12, AUTOMATED, "every incoming batch is validated before training")),
    _t("Monitoring", 3, "Training and serving features compute the same values",
       (9, MANUAL, "the servers' scores equal the model's own, checked in the chapter")),
    _t("Monitoring", 4, "Models are not too stale",
       (12, AUTOMATED, "alarms and schedules start retraining by themselves")),
    _t("Monitoring", 5, "The model is numerically stable",
       never="no monitor counts NaN or infinite scores"),
    _t("Monitoring", 6, "The model has not experienced regressions in training speed, serving latency, "
       "throughput, or RAM usage",
       (9, MANUAL, "latency percentiles and throughput measured"),
       (10, AUTOMATED, "a p99 latency alarm rolls a release back")),
    _t("Monitoring", 7, "The model has not experienced a regression in prediction quality on served data",
       (11, AUTOMATED, "an alarm on monitored AUC as labels arrive")),
)


def points_for(test: RubricTest, through_chapter: int, include_planned: bool = True) -> float:
    """The points ``test`` has earned once chapters 1..``through_chapter`` are done."""
    earned = [c.points for c in test.credits if c.chapter <= through_chapter
              and (include_planned or c.chapter not in PLANNED_CHAPTERS)]
    return max(earned, default=0.0)


def earned_by(test: RubricTest, through_chapter: int, include_planned: bool = True) -> str:
    """Which chapter gave the points (the best credit so far), and how; or why none."""
    best = max((c for c in test.credits if c.chapter <= through_chapter
                and (include_planned or c.chapter not in PLANNED_CHAPTERS)),
               key=lambda c: (c.points, -c.chapter), default=None)
    if best is None:
        later = [c for c in test.credits if c.chapter > through_chapter]
        return (f"0 until chapter {later[0].chapter:02d}" if later else f"never: {test.never}")
    return f"ch{best.chapter:02d}: {best.how}"


def rubric_table(through_chapter: int, include_planned: bool = True) -> pd.DataFrame:
    """One row per test: section, id, wording, points, and how (or why not) they are earned."""
    return pd.DataFrame([{"section": t.section, "test": t.id, "wording": t.wording,
                          "points": points_for(t, through_chapter, include_planned),
                          "earned by": earned_by(t, through_chapter, include_planned)} for t in RUBRIC])


def score(through_chapter: int, include_planned: bool = True) -> pd.DataFrame:
    """Section sums once chapters 1..``through_chapter`` are done; ``attrs['final']`` is the lowest section
    (the ML Test Score), ``attrs['limited_by']`` the section(s) holding it down."""
    table = rubric_table(through_chapter, include_planned)
    sums = table.groupby("section", sort=False)["points"].agg(["sum", "count"]).reindex(SECTIONS)
    sums = sums.rename(columns={"sum": "points", "count": "tests"})
    sums["automated"] = table.assign(auto=table["points"] == AUTOMATED).groupby("section")["auto"].sum()
    sums.attrs["final"] = float(sums["points"].min())
    sums.attrs["limited_by"] = [s for s in SECTIONS if sums.loc[s, "points"] == sums.attrs["final"]]
    return sums


def score_by_stage(stages: dict[str, int] | None = None, include_planned: bool = True) -> pd.DataFrame:
    """Section sums and the final score after each stage of the book (columns), e.g. before/after chapter 06."""
    stages = stages or {"ch01-05": 5, "+ ch06": 6, "+ ch07 (planned)": 7, "+ ch08 (planned)": 8, "+ ch09-12": 12}
    columns = {}
    for name, chapter in stages.items():
        result = score(chapter, include_planned)
        columns[name] = [*result["points"], result.attrs["final"]]
    return pd.DataFrame(columns, index=[*SECTIONS, "ML Test Score (lowest)"])
