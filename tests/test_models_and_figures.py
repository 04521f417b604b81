"""The baseline model, the decay table on the book's clock, the figures and chapter 01's checks."""
import matplotlib
import matplotlib.dates as mdates
import numpy as np
import pandas as pd
import pytest

from mlops_lab import checks
from mlops_lab.diagrams import CLOCK_KINDS, clock_examples, clock_figure, maturity_levels_figure
from mlops_lab.exercises import ch01
from mlops_lab.models import decay_table, decision_changes, evaluate, train
from mlops_lab.notebook import glue
from mlops_lab.simulator import (APPROVED, EARLY_LABEL, EARLY_MONTHS, KNOWN, OUTCOME_MONTHS, REPORTING_LAG_MONTHS,
                                 TARGET, CreditStream, Drift, LabelFromTheFuture, known_as_of, month_label,
                                 month_start, newest_complete_month)


@pytest.fixture(scope="module")
def drifting_table():
    stream = CreditStream(seed=1, rows_per_month=3000, drift=Drift(concept=2.0, start_month=1, ramp_months=4))
    return decay_table(stream, [0, 1, 6])


def test_a_trained_model_beats_chance_and_reports_its_scores():
    stream = CreditStream(seed=2, rows_per_month=3000)
    as_of = month_start(0)
    scores = evaluate(train(stream.training_window(as_of), as_of=as_of), known_as_of(stream.month(0), "2025-02-01"),
                      as_of="2025-02-01")
    assert 0.7 < scores["auc"] < 0.9 and scores["accuracy"] > 1 - scores["default_rate"] - 0.01


# -- decay_table: every model on the clock ---------------------------------------------------------------
def test_decay_table_trains_each_model_on_what_is_known_on_its_date(drifting_table):
    table = drifting_table
    assert list(table.index) == [0, 1, 6]
    # Level 0 learned on 2024-01-01 from the newest three complete months: 2022-10 .. 2022-12.
    assert table.attrs["deployed_as_of"] == pd.Timestamp("2024-01-01")
    assert table.attrs["level0_months"] == [month_label(m) for m in (-15, -14, -13)]
    # Retrained at month t on outcomes known on its first day (t - 13), the early label 5 months back.
    assert list(table["retrained_through"]) == [month_label(m - OUTCOME_MONTHS - 1) for m in table.index]
    assert list(table["early_through"]) == [month_label(m - EARLY_MONTHS - REPORTING_LAG_MONTHS - 1)
                                            for m in table.index]
    # Scored retrospectively, on the first day every outcome of the last month is known.
    assert table.attrs["evaluated_as_of"] == month_start(6 + OUTCOME_MONTHS + 1)
    assert newest_complete_month(table.attrs["evaluated_as_of"]) == 6
    assert newest_complete_month(month_start(6 + OUTCOME_MONTHS)) < 6            # a month earlier it was not


def test_decay_table_scores_approved_loans_only(drifting_table):
    stream = CreditStream(seed=1, rows_per_month=3000, drift=Drift(concept=2.0, start_month=1, ramp_months=4))
    batch = stream.month(6)
    assert drifting_table.loc[6, "loans"] == batch[APPROVED].sum() < len(batch)
    loans = batch[batch[APPROVED]]
    assert drifting_table.loc[6, "default_rate"] == pytest.approx(loans[TARGET].astype(int).mean())


def test_the_label_delay_costs_ranking_under_concept_drift(drifting_table):
    row = drifting_table.loc[6]
    # Concept drift from month 1: the model retrained in month 6 on month -7 has seen none of it, the
    # impossible oracle (months 3..5 with their outcomes) has, and the ceiling bounds them all.
    assert row["oracle_auc"] > row["retrained_auc"] + 0.03
    assert row["ceiling_auc"] > max(row["oracle_auc"], row["level0_auc"])
    gap = drifting_table["ceiling_auc"] - drifting_table["level0_auc"]
    assert gap.loc[6] > gap.loc[0]


def test_decay_table_models_never_see_a_future_label(monkeypatch):
    """Every train/evaluate call in decay_table passes the check; a model given future labels is refused."""
    import mlops_lab.models as models

    calls = []
    real_train = models.train

    def spy(batch, *, as_of, **kwargs):
        label = kwargs.get("label", TARGET)
        calls.append((pd.Timestamp(as_of), batch[KNOWN[label]].max(), label))
        return real_train(batch, as_of=as_of, **kwargs)

    monkeypatch.setattr(models, "train", spy)
    stream = CreditStream(seed=5, rows_per_month=1500)
    table = models.decay_table(stream, [2, 3], lines=("level0", "retrained", "early"))
    assert len(calls) == 1 + 2 * 2
    assert all(latest <= as_of for as_of, latest, _ in calls)
    assert {label for *_, label in calls} == {TARGET, EARLY_LABEL}
    assert {"oracle_auc", "early_accuracy"}.isdisjoint(table.columns)
    with pytest.raises(LabelFromTheFuture):
        real_train(known_as_of(stream.month(2), "2026-01-01"), as_of=month_start(3))


def test_decay_table_rejects_bad_lines_and_months():
    stream = CreditStream(seed=5, rows_per_month=500)
    with pytest.raises(ValueError, match="lines"):
        decay_table(stream, [0], lines=("retrained",))
    with pytest.raises(ValueError, match="lines"):
        decay_table(stream, [0], lines=("level0", "magic"))
    with pytest.raises(ValueError, match="months"):
        decay_table(stream, [], lines=("level0",))
    with pytest.raises(ValueError, match="deployed"):
        decay_table(stream, [0, 1], deployed=1, lines=("level0",))


def test_decision_changes_is_zero_for_the_same_model_and_positive_for_another():
    stream = CreditStream(seed=3, rows_per_month=2000)
    a = train(stream.training_window("2024-01-01"), as_of="2024-01-01")
    b = train(stream.training_window("2024-05-01"), as_of="2024-05-01")
    assert decision_changes(a, a, stream.month(4)) == 0
    assert 0 < decision_changes(a, b, stream.month(4)) < 0.2


# -- figures ----------------------------------------------------------------------------------------------
def test_maturity_figure_draws_and_rejects_unknown_modes():
    steps = pd.DataFrame({"L0": ["manual", "manual"], "L1": ["pipeline", "ci/cd"]}, index=["a", "b"])
    fig = maturity_levels_figure(steps, {"L0": "a person"})
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes[0].patches) == 4
    with pytest.raises(ValueError, match="unknown modes"):
        maturity_levels_figure(steps.replace("manual", "magic"), {})


@pytest.fixture(scope="module")
def january():
    return CreditStream(seed=2024, rows_per_month=3000).month(0)


def test_clock_examples_are_real_rows_of_each_kind(january):
    examples = clock_examples(january)
    assert list(examples.index) == list(CLOCK_KINDS)
    rows = january.set_index("application_id").loc[examples["application_id"]]
    columns = ["application_date", APPROVED, TARGET, EARLY_LABEL, KNOWN[TARGET], KNOWN[EARLY_LABEL]]
    pd.testing.assert_frame_equal(examples[columns].reset_index(drop=True), rows[columns].reset_index(drop=True))
    assert not examples.loc["declined", APPROVED] and pd.isna(examples.loc["declined", KNOWN[TARGET]])
    assert examples.loc["early default", TARGET] == 1 and examples.loc["early default", EARLY_LABEL] == 1
    assert examples.loc["late default", TARGET] == 1 and examples.loc["late default", EARLY_LABEL] == 0
    assert examples.loc["cured", TARGET] == 0 and examples.loc["cured", EARLY_LABEL] == 1
    with pytest.raises(ValueError, match="declined"):
        clock_examples(january[january[APPROVED]])


def _line(fig, starts_with):
    ax = fig.axes[0]
    found = [line for line in ax.get_lines() if line.get_label().startswith(starts_with)]
    assert len(found) == 1, [line.get_label() for line in ax.get_lines()]
    return found[0]


def test_clock_figure_plots_the_batch_dates_and_the_lags(january):
    as_of = pd.Timestamp("2024-09-01")
    fig = clock_figure(january, as_of)
    examples = clock_examples(january)
    loans = examples[examples[APPROVED]]
    as_num = lambda values: mdates.date2num(pd.DatetimeIndex(values).to_pydatetime())   # noqa: E731
    assert np.allclose(as_num(_line(fig, "application").get_xdata()), as_num(examples["application_date"]))
    assert np.allclose(as_num(_line(fig, "early label known").get_xdata()), as_num(loans[KNOWN[EARLY_LABEL]]))
    assert np.allclose(as_num(_line(fig, "outcome known").get_xdata()), as_num(loans[KNOWN[TARGET]]))
    assert np.allclose(as_num(_line(fig, "as of").get_xdata()), as_num([as_of, as_of]))
    # The lags printed on the figure are the simulator's, and the data agree with them.
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    early_lag = EARLY_MONTHS + REPORTING_LAG_MONTHS
    assert f"early label known {early_lag} months after" in texts
    assert f"outcome known {OUTCOME_MONTHS} months after" in texts
    assert (loans[KNOWN[EARLY_LABEL]] == loans["application_date"] + pd.DateOffset(months=early_lag)).all()
    repaid = examples.loc["repaid"]
    assert repaid[KNOWN[TARGET]] == repaid["application_date"] + pd.DateOffset(months=OUTCOME_MONTHS)
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert f"early label known: {EARLY_MONTHS} months on book + {REPORTING_LAG_MONTHS} month reporting" in legend
    matplotlib.pyplot.close(fig)


def test_clock_figure_fills_only_what_is_known_on_as_of(january):
    examples = clock_examples(january)
    loans = examples[examples[APPROVED]]
    for as_of in ("2024-02-01", "2024-09-01", "2025-03-01"):
        fig = clock_figure(january, as_of)
        filled = [line for line in fig.axes[0].get_lines() if line.get_label().startswith("_") and
                  line.get_marker() == "s"]
        known = (loans[KNOWN[TARGET]] <= pd.Timestamp(as_of)).sum()
        assert sum(len(line.get_xdata()) for line in filled) == known
        matplotlib.pyplot.close(fig)


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


def test_first_alarm(drifting_table, strict, capsys):
    table = drifting_table.assign(level0_accuracy=[0.90, 0.88, 0.80])
    assert ch01.first_alarm_month(table) == table.loc[6, "period"]
    ch01.check_first_alarm(table.loc[6, "period"], table)
    assert "2025-08-01" in capsys.readouterr().out          # month 6's outcomes are all in 13 months later
    with pytest.raises(checks.WrongAnswer):
        ch01.check_first_alarm(table.loc[1, "period"], table)
    silent = drifting_table.assign(level0_accuracy=[0.90, 0.91, 0.92])
    assert ch01.first_alarm_month(silent) is None
    with pytest.raises(checks.WrongAnswer, match="silent"):
        ch01.check_first_alarm("2024-02", silent)


def test_levels(strict):
    ch01.check_levels(dict(ch01.PRACTICE_LEVELS))
    wrong = dict(ch01.PRACTICE_LEVELS, **{next(iter(ch01.PRACTICE_LEVELS)): 2})
    with pytest.raises(checks.WrongAnswer, match="1 of 6"):
        ch01.check_levels(wrong)


def test_worst_drift_is_measured_as_concept(strict):
    assert ch01.worst_drift_for_ranking(rows=2000) == "concept"
    with pytest.raises(checks.WrongAnswer):
        ch01.check_worst_drift("covariate")


def test_concept_drift_widens_the_gap_to_the_ceiling_and_the_others_do_not():
    # Measured on three seeds: concept drift's widening is many times any other kind's.
    for seed in (0, 1, 2):
        losses = {kind: ch01.ranking_loss(kind, rows=2000, seed=seed) for kind in ("covariate", "label", "concept")}
        assert losses["concept"] > 3 * max(abs(losses["covariate"]), abs(losses["label"]), 0.01), losses


def test_early_label_gain(drifting_table, strict):
    table = pd.concat([drifting_table.iloc[[0]]] * 12, ignore_index=True)
    table["early_auc"] = table["retrained_auc"] + 0.03
    ch01.check_early_label_gain(0.03, table)
    with pytest.raises(checks.WrongAnswer):
        ch01.check_early_label_gain(0.05, table)


def _reference(as_of, months=3, label=TARGET):
    lag = OUTCOME_MONTHS if label == TARGET else EARLY_MONTHS + REPORTING_LAG_MONTHS
    as_of = pd.Timestamp(as_of)
    newest = (pd.Period(as_of, "M") - pd.Period("2024-01", "M")).n
    while (pd.Period("2024-01", "M") + newest).end_time.normalize() + pd.DateOffset(months=lag) > as_of:
        newest -= 1
    return list(range(newest - months + 1, newest + 1))


def test_training_months_check_accepts_the_rule_and_explains_mistakes(strict, capsys):
    ch01.check_training_months(_reference)
    assert "correct" in capsys.readouterr().out

    def twelve_months_back(as_of, months=3, label=TARGET):     # forgets the month a month takes to mature
        newest = (pd.Period(as_of, "M") - pd.Period("2024-01", "M")).n - (12 if label == TARGET else 4)
        return list(range(newest - months + 1, newest + 1))

    with pytest.raises(checks.WrongAnswer, match="2023-01 is not complete on 2024-01-01.*have no 'default'"):
        ch01.check_training_months(twelve_months_back)

    def too_cautious(as_of, months=3, label=TARGET):
        return [m - 1 for m in _reference(as_of, months, label)]

    with pytest.raises(checks.WrongAnswer, match="already complete"):
        ch01.check_training_months(too_cautious)

    def ignores_the_label(as_of, months=3, label=TARGET):
        return _reference(as_of, months, TARGET)

    with pytest.raises(checks.WrongAnswer, match="early_delinquency"):
        ch01.check_training_months(ignores_the_label)

    def crashes(as_of, months=3, label=TARGET):
        raise KeyError("oops")

    with pytest.raises(checks.WrongAnswer, match="raised KeyError"):
        ch01.check_training_months(crashes)


def test_training_months_check_never_raises_when_not_attempted(strict, capsys):
    def stub(as_of, months=3, label=TARGET):
        ...

    ch01.check_training_months(stub)
    ch01.check_training_months(...)
    assert capsys.readouterr().out.count("not attempted") == 2


def test_the_loop_timeline_draws_one_marker_per_day_and_lane_and_refuses_an_unknown_lane():
    import matplotlib.pyplot as plt

    from mlops_lab.diagrams import LOOP_LANES, loop_timeline_figure

    events = pd.DataFrame({"date": ["2025-01-06", "2025-01-06", "2025-01-20", "2025-01-20"],
                           "lane": ["data", "data", "monitoring", "pipeline"],
                           "what": ["export", "dvc push", "alert fired", "retrain"]})
    fig = loop_timeline_figure(events, drift=pd.Series([8, 8], index=["2025-01-13", "2025-01-20"]))
    top, bottom = fig.axes
    markers = [line for line in top.get_lines() if line.get_marker() == "o"]
    assert len(markers) == 3, "two events of one day in one lane share a marker"
    assert [t.get_text() for t in top.get_yticklabels()] == list(reversed(LOOP_LANES))
    assert any("export\ndvc push" == t.get_text() for t in top.texts), "stacked labels"
    assert len(bottom.patches) == 2
    with pytest.raises(ValueError, match="unknown lane"):
        loop_timeline_figure(events.assign(lane="deploy"))
    plt.close("all")
