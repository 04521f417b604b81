"""The model-validation gate (mlops_lab.gates): its statistics, its decisions, the clock, the registry."""
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from scipy import stats
from sklearn.metrics import roc_auc_score

from mlops_lab import gates, registry
from mlops_lab.gates import GateVerdict, compare, judge, register_if_passed, simulate_gate
from mlops_lab.models import train
from mlops_lab.simulator import (FEATURES, KNOWN, TARGET, CreditStream, LabelFromTheFuture, known_as_of,
                                 month_start, newest_complete_month)

AS_OF = "2024-04-01"
MONTH = newest_complete_month(AS_OF)      # 2023-03: every outcome known on AS_OF
NAME = "credit-gate-test"


@pytest.fixture(scope="module")
def world():
    stream = CreditStream(seed=3, rows_per_month=3000)
    window = stream.training_window(AS_OF, 3)
    shuffled = window.assign(**{TARGET: window[TARGET].sample(frac=1, random_state=0).to_numpy()})
    return {"stream": stream, "window": window,
            "good": train(window, as_of=AS_OF),
            "weak": train(window.head(150), as_of=AS_OF, C=0.001),   # few rows, heavily regularised
            "noise": train(shuffled, as_of=AS_OF),                    # labels carry no signal
            "holdout": known_as_of(stream.month(MONTH, replicate=1), AS_OF)}


def scores(model, frame):
    return model.predict_proba(frame[FEATURES])[:, 1]


# ---- the statistics ---------------------------------------------------------------------------------------
def test_delong_and_bootstrap_aucs_equal_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.random(800) < 0.1
    p = np.round(rng.random(800) * 0.5 + 0.3 * y, 2)          # rounded: many ties
    auc, _, _ = gates.delong(y, p)
    assert auc[0] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    counts = gates.resample_counts(len(y), 5, seed=2)
    assert (counts.sum(axis=1) == len(y)).all()
    boot = gates.bootstrap_aucs(y, p, counts)[0]
    for b in range(5):
        rows = np.repeat(np.arange(len(y)), counts[b].astype(int))
        assert boot[b] == pytest.approx(roc_auc_score(y[rows], p[rows]), abs=1e-12)


def test_bootstrap_and_delong_agree_on_the_credit_model(world):
    holdout = world["holdout"]
    y = holdout[TARGET].to_numpy()
    n_boot = 2000
    verdict = compare(y, scores(world["weak"], holdout), scores(world["good"], holdout))   # N_BOOT resamples
    boot = gates.bootstrap_aucs(y, np.vstack([scores(world["weak"], holdout), scores(world["good"], holdout)]),
                                gates.resample_counts(len(y), n_boot))
    diffs = boot[1] - boot[0]
    # The bootstrap's standard deviation has a Monte-Carlo relative error of 1/sqrt(2(B-1)) (1.6 % at
    # B = 2000); allow 4 of those between it and DeLong's analytic standard error.
    assert diffs.std(ddof=1) / verdict.diff_se == pytest.approx(1, abs=4 / np.sqrt(2 * (n_boot - 1)))
    # compare()'s bootstrap (B = N_BOOT = 1000) puts its 5 % quantile within sqrt(a(1-a)/B) / phi(z_a) = 0.067
    # standard errors of the true one (Monte-Carlo error); its lower bound and DeLong's agree within 4 of those.
    quantile_error = np.sqrt(0.05 * 0.95 / gates.N_BOOT) / stats.norm.pdf(stats.norm.ppf(0.05))
    assert abs(verdict.boot_low - verdict.lower_bound) < 4 * quantile_error * verdict.diff_se
    assert verdict.boot_low < verdict.diff < verdict.boot_high


def test_one_sided_p_value_and_lower_bound_say_the_same_thing(world):
    holdout = world["holdout"]
    y = holdout[TARGET].to_numpy()
    verdict = compare(y, scores(world["weak"], holdout), scores(world["good"], holdout))
    for margin in (0.0, verdict.lower_bound - 1e-4, verdict.lower_bound + 1e-4, 0.2):
        at = compare(y, scores(world["weak"], holdout), scores(world["good"], holdout), margin=margin, n_boot=50)
        assert (at.p_value < at.alpha) == (at.lower_bound > margin) == at.checks[0]["passed"]


def test_expected_cost_counts_missed_defaults_and_declined_payers():
    y, p, amount = np.array([1, 0, 0, 1]), np.array([0.1, 0.9, 0.05, 0.9]), np.array([100, 200, 300, 400])
    cost = gates.expected_cost(y, p, threshold=0.5, cost_fn=0.45, cost_fp=0.08, amount=amount)
    assert cost.tolist() == pytest.approx([45.0, 16.0, 0.0, 0.0])   # missed default, declined payer, right x2
    # At the break-even threshold a loan's expected loss equals its expected margin.
    t = gates.BREAK_EVEN
    assert t * gates.COST_FN == pytest.approx((1 - t) * gates.COST_FP)


# ---- the decisions ----------------------------------------------------------------------------------------
def test_a_clearly_better_model_passes(world):
    verdict = judge(world["good"], world["weak"], world["holdout"], as_of=AS_OF, slices=False)
    assert verdict.passed and verdict.failed() == [] and verdict.reason.startswith("promote")
    assert verdict.lower_bound > 0 and verdict.cost_challenger < verdict.cost_champion
    assert verdict.rows == len(world["holdout"]) and verdict.as_of == AS_OF


def test_the_same_model_twice_is_not_promoted(world):
    for margin in (0.0, 0.002):
        verdict = judge(world["good"], world["good"], world["holdout"], as_of=AS_OF, margin=margin, slices=False)
        assert not verdict.passed and verdict.diff == 0 and verdict.failed() == ["auc_gain_lower_bound"]


def test_a_worse_model_fails_on_auc_and_cost(world):
    verdict = judge(world["weak"], world["good"], world["holdout"], as_of=AS_OF, slices=False)
    assert not verdict.passed and verdict.diff < 0
    assert set(verdict.failed()) == {"auc_gain_lower_bound", "cost_increase_lower_bound"}
    assert "reject" in verdict.reason and str(verdict).startswith("REJECTED")


def test_a_first_model_must_beat_the_incumbent_policy(world):
    first = judge(world["good"], None, world["holdout"], as_of=AS_OF, slices=False)
    assert first.passed and first.champion == "incumbent policy"
    y = world["holdout"][TARGET]
    assert first.auc_champion == pytest.approx(roc_auc_score(y, -world["holdout"]["credit_score"]))
    noise = judge(world["noise"], None, world["holdout"], as_of=AS_OF, slices=False)
    assert not noise.passed and noise.auc_challenger < 0.6


def test_a_label_from_the_future_stops_the_gate_before_any_scoring(world):
    class Untouchable:
        def predict_proba(self, frame):
            raise AssertionError("the gate scored a model before checking the clock")

    maturing = world["stream"].month(MONTH + 1, replicate=1)
    late = known_as_of(maturing, month_start(MONTH + 14))          # every outcome in, a year after AS_OF
    holdout = pd.concat([world["holdout"], late.head(1)], ignore_index=True)
    assert holdout[KNOWN[TARGET]].max() > pd.Timestamp(AS_OF)
    with pytest.raises(LabelFromTheFuture, match=f"1 of {len(holdout)} rows"):
        judge(Untouchable(), Untouchable(), holdout, as_of=AS_OF)
    with pytest.raises(LabelFromTheFuture, match="declined"):               # the world's record: declined rows
        judge(Untouchable(), None, world["stream"].month(MONTH, replicate=2), as_of=AS_OF)


class ScrambledOn:
    """``model``, except that its scores on one slice's rows are shuffled among them: useless there only."""

    def __init__(self, model, column, value):
        self.model, self.column, self.value = model, column, value

    def predict_proba(self, frame):
        p = self.model.predict_proba(frame)
        rows = np.flatnonzero((frame[self.column].astype(str) == self.value).to_numpy())
        p[rows] = p[np.random.default_rng(0).permutation(rows)]
        return p


def test_slice_rule_fails_the_slice_that_loses_auc_beyond_its_noise(world):
    good, holdout = world["good"], world["holdout"]
    verdict = judge(ScrambledOn(good, "home_ownership", "rent"), good, holdout, as_of=AS_OF)
    checks = {c["name"]: c for c in verdict.checks if c["name"].startswith("slice ")}
    assert {"slice purpose=car", "slice home_ownership=rent", "slice loan_term=60"} <= set(checks)
    assert "slice all" not in checks                        # the whole holdout is check 1's job
    assert not checks["slice home_ownership=rent"]["passed"] and not verdict.passed
    assert "slice home_ownership=rent" in verdict.reason
    for other in ("mortgage", "own"):                       # no renters there: the same scores, no change
        assert checks[f"slice home_ownership={other}"] == {"name": f"slice home_ownership={other}", "value": 0,
                                                           "threshold": 0, "passed": True}
    # its threshold is -z(1 - alpha/k) DeLong standard errors on the slice's own loans
    from mlops_lab.model_tests import slices
    mask = slices(holdout)["home_ownership=rent"]
    scrambled = ScrambledOn(good, "home_ownership", "rent")
    p = np.vstack([scores(good, holdout), scores(scrambled, holdout)])[:, mask]
    auc, cov, _ = gates.delong(holdout[TARGET].to_numpy()[mask], p)
    z = stats.norm.ppf(1 - gates.ALPHA / len(checks))
    se = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert checks["slice home_ownership=rent"]["threshold"] == pytest.approx(-z * se)
    assert checks["slice home_ownership=rent"]["value"] == pytest.approx(auc[1] - auc[0]) and auc[1] - auc[0] < -0.1


def test_slices_too_small_to_judge_are_left_out(world):
    holdout, y = world["holdout"], world["holdout"][TARGET].to_numpy()
    from mlops_lab.model_tests import slices
    p = scores(world["good"], holdout)
    names = {c["name"] for c in gates.slice_checks(y, p, p, holdout)}
    for name, mask in slices(holdout).items():
        judged = name != "all" and min(y[mask].sum(), (1 - y[mask]).sum()) >= gates.MIN_CLASS
        assert (f"slice {name}" in names) == judged


# ---- the verdict as a record --------------------------------------------------------------------------------
def test_verdict_round_trips_through_json(world):
    verdict = judge(world["good"], world["weak"], world["holdout"], as_of=AS_OF, slices=False)
    again = GateVerdict.from_dict(json.loads(json.dumps(verdict.to_dict())))
    assert again == verdict and again.to_dict() == verdict.to_dict()
    assert all(set(c) == {"name", "value", "threshold", "passed"} for c in again.checks)


# ---- the simulation -----------------------------------------------------------------------------------------
def test_false_promotions_at_no_gain_and_no_margin_are_about_alpha():
    result = simulate_gate(0.0, 0.0, rows=2000, n_sim=4000, seed=1)
    # Monte-Carlo standard error of a rate near 0.05 from 4,000 holdouts: sqrt(.05 x .95 / 4000) = 0.0034
    assert result["false_promotion_rate"] == pytest.approx(gates.ALPHA, abs=4 * result["mc_error"])
    assert result["missed_improvement_rate"] is None


def test_larger_margins_trade_false_promotions_for_missed_improvements():
    loose, strict = simulate_gate(0.0, 0.01, n_sim=1000), simulate_gate(0.01, 0.01, n_sim=1000)
    assert loose["missed_improvement_rate"] < 0.3 < 0.7 < strict["missed_improvement_rate"]
    assert simulate_gate(0.005, 0.0, n_sim=1000)["false_promotion_rate"] < 0.01
    assert simulate_gate(0.0, -0.005, n_sim=1000)["false_promotion_rate"] < gates.ALPHA


def test_simulation_is_calibrated_to_the_credit_model():
    """Re-measure SIM_* on another seed. Tolerances: ~3 sampling standard errors on ~4,300 loans with ~380
    defaults (AUC 0.013, default rate 0.0043, spread ratio 3.6 %), a floor of 0.95 for the correlation."""
    stream = CreditStream(seed=11)
    as_of = month_start(0)
    newest = newest_complete_month(as_of)
    champion = train(stream.labelled(range(newest - 5, newest - 2), as_of), as_of=as_of)
    challenger = train(stream.labelled(range(newest - 2, newest + 1), as_of), as_of=as_of)
    holdout = known_as_of(stream.month(newest, replicate=1), as_of)
    y = holdout[TARGET].to_numpy().astype(bool)
    logit = [np.log(p / (1 - p)) for p in (scores(champion, holdout), scores(challenger, holdout))]
    assert roc_auc_score(y, logit[0]) == pytest.approx(gates.SIM_AUC, abs=0.04)
    assert y.mean() == pytest.approx(gates.SIM_DEFAULT_RATE, abs=0.015)
    assert logit[0][y].std() / logit[0][~y].std() == pytest.approx(gates.SIM_SD_RATIO, abs=0.1)
    assert min(np.corrcoef(logit[0][k], logit[1][k])[0, 1] for k in (y, ~y)) > 0.95


def test_margin_figure_draws_both_errors():
    fig = gates.margin_figure(0.01, margin=0.005, n_sim=300)
    lines = fig.axes[0].get_lines()
    false_promotion, missed = lines[0].get_ydata(), lines[1].get_ydata()
    assert false_promotion[0] == pytest.approx(gates.ALPHA, abs=0.04) and false_promotion[-1] == 0
    assert (np.diff(false_promotion) <= 0).all() and (np.diff(missed) >= 0).all()
    import matplotlib.pyplot as plt
    plt.close(fig)


# ---- registration -----------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    client.create_experiment("gate-tests", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_experiment("gate-tests")
    yield client
    mlflow.set_tracking_uri(None)


def logged(model, world) -> str:
    return registry.log_credit_model(model, world["window"]).model_uri


def test_register_if_passed_registers_and_moves_champion_only_when_passed(store, world):
    passed = judge(world["good"], world["weak"], world["holdout"], as_of=AS_OF, slices=False)
    version = register_if_passed(passed, logged(world["good"], world), NAME, client=store, tags={"trigger": "test"})
    assert str(registry.get_version(NAME, "champion", store).version) == str(version.version) == "1"
    tags = store.get_model_version(NAME, "1").tags
    assert tags["gate.passed"] == "True" and tags["gate.as_of"] == AS_OF and tags["trigger"] == "test"
    assert float(tags["gate.lower_bound"]) == pytest.approx(passed.lower_bound)
    assert json.loads(tags["gate.checks"]) == [{"name": c["name"], "passed": True} for c in passed.checks]

    rejected = judge(world["weak"], world["good"], world["holdout"], as_of=AS_OF, slices=False)
    assert register_if_passed(rejected, logged(world["weak"], world), NAME, client=store) is None
    assert len(store.search_model_versions(f"name='{NAME}'")) == 1              # nothing registered
    assert {k: str(v) for k, v in store.get_registered_model(NAME).aliases.items()} == {"champion": "1"}


def test_a_level2_release_moves_challenger_and_leaves_champion_to_the_canary(store, world):
    """Level 2 order: the pipeline's gate releases a candidate as ``challenger``; ``champion`` moves only after
    the canary (chapter 13), so registering with alias="challenger" must not touch ``champion``."""
    name = NAME + "-level2"
    first = judge(world["good"], None, world["holdout"], as_of=AS_OF, slices=False)
    champion = register_if_passed(first, logged(world["good"], world), name, client=store)
    second = register_if_passed(first, logged(world["good"], world), name, client=store, alias="challenger")
    aliases = {k: str(v) for k, v in store.get_registered_model(name).aliases.items()}
    assert aliases == {"champion": str(champion.version), "challenger": str(second.version)}
    with pytest.raises(ValueError, match="champion or challenger"):
        register_if_passed(first, logged(world["good"], world), name, client=store, alias="prod")


def test_a_failed_alias_move_leaves_no_version_behind(store, world, monkeypatch):
    passed = judge(world["good"], None, world["holdout"], as_of=AS_OF, slices=False)

    def broken(*args, **kwargs):
        raise RuntimeError("the registry went away")

    monkeypatch.setattr(registry, "set_alias", broken)
    with pytest.raises(RuntimeError, match="went away"):
        register_if_passed(passed, logged(world["good"], world), NAME, client=store)
    assert store.search_model_versions(f"name='{NAME}'") == []
