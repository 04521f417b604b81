"""The baseline model, the decay table, the figure helpers and chapter 01's checks."""
import matplotlib
import numpy as np
import pandas as pd
import pytest

from mlops_lab import checks
from mlops_lab.diagrams import maturity_levels_figure
from mlops_lab.exercises import ch01
from mlops_lab.models import decay_table, decision_changes, evaluate, train
from mlops_lab.notebook import glue
from mlops_lab.simulator import CreditStream, Drift


@pytest.fixture(scope="module")
def drifting_table():
    stream = CreditStream(seed=1, rows_per_month=3000, drift=Drift(concept=2.0, start_month=1, ramp_months=4))
    return decay_table(stream, [0, 1, 6])


def test_a_trained_model_beats_chance_and_reports_its_scores():
    stream = CreditStream(seed=2, rows_per_month=3000)
    scores = evaluate(train(stream.month(0)), stream.month(0, replicate=1))
    assert 0.7 < scores["auc"] < 0.9 and scores["accuracy"] > 1 - scores["default_rate"] - 0.01


def test_decay_table_shows_concept_drift_hurting_the_stale_model(drifting_table):
    assert list(drifting_table.index) == [0, 1, 6]
    assert drifting_table.loc[0, "level0_auc"] == drifting_table.loc[0, "retrained_auc"]
    assert drifting_table.loc[6, "retrained_auc"] > drifting_table.loc[6, "level0_auc"] + 0.03


def test_decision_changes_is_zero_for_the_same_model_and_positive_for_another():
    stream = CreditStream(seed=3, rows_per_month=2000)
    a, b = train(stream.month(0)), train(stream.month(1))
    assert decision_changes(a, a, stream.month(2)) == 0
    assert 0 < decision_changes(a, b, stream.month(2)) < 0.2


def test_maturity_figure_draws_and_rejects_unknown_modes():
    steps = pd.DataFrame({"L0": ["manual", "manual"], "L1": ["pipeline", "ci/cd"]}, index=["a", "b"])
    fig = maturity_levels_figure(steps, {"L0": "a person"})
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes[0].patches) == 4
    with pytest.raises(ValueError, match="unknown modes"):
        maturity_levels_figure(steps.replace("manual", "magic"), {})


def test_glue_turns_numpy_scalars_into_numbers(monkeypatch):
    seen = {}
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display: seen.update({name: value}))
    glue("x", np.float64(0.25))
    glue("n", np.int64(3))
    assert type(seen["x"]) is float and type(seen["n"]) is int


# -- chapter 01's checks: right answers pass, wrong answers raise in strict mode --------------------
@pytest.fixture
def strict(monkeypatch):
    monkeypatch.setenv(checks.STRICT_ENV, "1")


def test_first_alarm(drifting_table, strict):
    table = drifting_table.assign(level0_accuracy=[0.90, 0.88, 0.80])
    assert ch01.first_alarm_month(table) == table.loc[6, "period"]
    ch01.check_first_alarm(table.loc[6, "period"], table)
    with pytest.raises(checks.WrongAnswer):
        ch01.check_first_alarm(table.loc[1, "period"], table)


def test_levels(strict):
    ch01.check_levels(dict(ch01.PRACTICE_LEVELS))
    wrong = dict(ch01.PRACTICE_LEVELS, **{next(iter(ch01.PRACTICE_LEVELS)): 2})
    with pytest.raises(checks.WrongAnswer, match="1 of 6"):
        ch01.check_levels(wrong)


def test_worst_drift_is_measured_as_concept(strict):
    assert ch01.worst_drift_for_ranking(rows=2000) == "concept"
    with pytest.raises(checks.WrongAnswer):
        ch01.check_worst_drift("covariate")


def test_staleness_cost(drifting_table, strict):
    table = pd.concat([drifting_table.iloc[[0]]] * 12, ignore_index=True)
    table["retrained_accuracy"] = table["level0_accuracy"] + 0.03
    ch01.check_staleness_cost(0.03, table)
    with pytest.raises(checks.WrongAnswer):
        ch01.check_staleness_cost(0.05, table)
