"""Drift statistics: each one cross-checked against scipy on the same data; PSI against a hand computation."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mlops_lab.drift import (DriftDetector, adjust_pvalues, bin_proportions, cdf_gaps, chi2_homogeneity,
                             detection_month, js_distance, ks_pvalue, psi, quantile_edges, sorted_proportions)
from mlops_lab.simulator import CATEGORICAL, NUMERIC, CreditStream, Drift

RNG = np.random.default_rng(11)
SAMPLES = {
    "continuous": (RNG.normal(0, 1, 3000), RNG.normal(0.15, 1.2, 1700)),
    "ties": (RNG.integers(0, 5, 2500).astype(float), RNG.integers(0, 7, 1300).astype(float)),
    "identical": (np.arange(100.0), np.arange(100.0)),
    "disjoint": (RNG.uniform(0, 1, 400), RNG.uniform(5, 6, 300)),
}


def test_ks_pvalue_uses_the_limit_only_for_tiny_values():
    for d, n in [(0.02, 1000), (0.01, 5000), (0.1, 5000), (0.004, 50000), (0.01, 50000), (0.05, 50000)]:
        exact = stats.kstwo.sf(d, n)
        assert ks_pvalue(d, 2 * n, 2 * n) == pytest.approx(exact, rel=1e-12 if exact > 1e-6 and n <= 10_000
                                                           else 0.1)


@pytest.mark.parametrize("case", SAMPLES)
def test_ks_and_wasserstein_match_scipy(case):
    a, b = SAMPLES[case]
    ks, w = cdf_gaps(np.sort(a), np.sort(b))
    ref = stats.ks_2samp(a, b, method="asymp")
    assert ks == pytest.approx(ref.statistic, abs=1e-12)
    assert ks_pvalue(ks, len(a), len(b)) == pytest.approx(ref.pvalue, rel=1e-9 if ref.pvalue > 1e-6 else 0.1)
    assert w == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-9, abs=1e-12)


def test_chi2_matches_scipy_contingency_and_handles_empty_categories():
    ref_counts = np.array([500, 300, 150, 50, 0])
    cur_counts = np.array([180, 160, 40, 10, 0])  # last category empty in both: dropped
    statistic, p = chi2_homogeneity(ref_counts, cur_counts)
    expected = stats.chi2_contingency(np.vstack([ref_counts, cur_counts])[:, :4], correction=False)
    assert statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-9)
    # With the reference's proportions as the known truth, a goodness-of-fit test is the chisquare analogue.
    assert chi2_homogeneity(np.array([5, 0]), np.array([3, 0])) == (0.0, 1.0)


@pytest.mark.parametrize("p, q", [([0.2, 0.3, 0.5], [0.1, 0.6, 0.3]), ([1, 0, 0], [0, 0.5, 0.5]),
                                  ([3, 3, 4], [3, 3, 4]), ([10, 5, 0, 1], [2, 2, 2, 2])])
def test_js_distance_matches_scipy(p, q):
    assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)


def test_psi_against_hand_computation():
    expected = np.array([0.25, 0.25, 0.25, 0.25])
    actual = np.array([0.10, 0.20, 0.30, 0.40])
    by_hand = ((0.10 - 0.25) * math.log(0.10 / 0.25) + (0.20 - 0.25) * math.log(0.20 / 0.25)
               + (0.30 - 0.25) * math.log(0.30 / 0.25) + (0.40 - 0.25) * math.log(0.40 / 0.25))
    assert by_hand == pytest.approx(0.2282, abs=1e-4)  # the sum written out: 0.1374 + 0.0112 + 0.0091 + 0.0705
    assert psi(expected, actual) == pytest.approx(by_hand, rel=1e-12)
    assert psi(expected, expected) == 0.0
    # an empty bin is floored at 1e-4: finite, and large
    assert psi([0.5, 0.5], [1.0, 0.0]) == pytest.approx((1 - 0.5) * math.log(2) + (1e-4 - 0.5) * math.log(1e-4 / 0.5))


def test_quantile_edges_give_deciles_and_no_empty_reference_bin():
    ref = np.arange(1, 1001, dtype=float)
    edges = quantile_edges(ref, 10)
    assert len(edges) == 9
    assert np.allclose(bin_proportions(ref, edges), 0.1)
    term = np.array([36.0] * 750 + [60.0] * 250)  # two values: quantiles repeat
    edges = quantile_edges(term, 10)
    props = bin_proportions(term, edges)
    assert list(edges) == [36.0] and props.tolist() == [0.75, 0.25]
    values = RNG.normal(size=999)
    assert np.allclose(sorted_proportions(np.sort(values), edges), bin_proportions(values, edges))


def test_holm_bonferroni_bh_on_a_known_case():
    p = [0.01, 0.04, 0.03, np.nan, 0.20]
    assert np.allclose(adjust_pvalues(p, "bonferroni")[[0, 1, 2, 4]], [0.04, 0.16, 0.12, 0.8])
    # Holm: sorted 0.01*4, 0.03*3, 0.04*2, 0.20*1, made monotone
    assert np.allclose(adjust_pvalues(p, "holm")[[0, 1, 2, 4]], [0.04, 0.09, 0.09, 0.20])
    assert np.allclose(adjust_pvalues(p, "bh")[[0, 1, 2, 4]],
                       stats.false_discovery_control([0.01, 0.04, 0.03, 0.20], method="bh"))
    assert np.isnan(adjust_pvalues(p, "holm")[3])
    with pytest.raises(ValueError, match="unknown correction"):
        adjust_pvalues(p, "sidak")


@pytest.fixture(scope="module")
def credit():
    stream = CreditStream(seed=3, rows_per_month=4000, drift=Drift(covariate=1.5, start_month=1, ramp_months=0))
    return stream.month(0), stream.month(0, replicate=1), stream.month(2)


def test_detector_matches_scipy_feature_by_feature(credit):
    reference, _, shifted = credit
    report = DriftDetector(reference, NUMERIC, CATEGORICAL).compare(shifted)
    for name in NUMERIC:
        a, b = reference[name].to_numpy(float), shifted[name].to_numpy(float)
        ks = stats.ks_2samp(a, b, method="asymp")
        assert report.loc[name, "ks"] == pytest.approx(ks.statistic, abs=1e-12)
        assert report.loc[name, "p_value"] == pytest.approx(ks.pvalue, rel=1e-6 if ks.pvalue > 1e-6 else 0.1)
        assert report.loc[name, "wasserstein"] == pytest.approx(stats.wasserstein_distance(a, b), rel=1e-9)
        edges = quantile_edges(a)
        p_ref, p_cur = bin_proportions(a, edges), bin_proportions(b, edges)
        assert report.loc[name, "js"] == pytest.approx(jensenshannon(p_ref, p_cur, base=2), abs=1e-12)
        assert report.loc[name, "psi"] == pytest.approx(psi(p_ref, p_cur), rel=1e-12)
        assert report.loc[name, "linf"] == pytest.approx(np.abs(p_ref - p_cur).max(), abs=1e-12)
    for name in CATEGORICAL:
        table = pd.crosstab(np.r_[np.zeros(len(reference)), np.ones(len(shifted))],
                            np.r_[reference[name].astype(str), shifted[name].astype(str)])
        chi = stats.chi2_contingency(table.to_numpy(), correction=False)
        assert report.loc[name, "chi2"] == pytest.approx(chi.statistic, rel=1e-9)
        assert report.loc[name, "p_value"] == pytest.approx(chi.pvalue, rel=1e-6, abs=1e-300)
        ref_share = table.iloc[0] / table.iloc[0].sum()
        cur_share = table.iloc[1] / table.iloc[1].sum()
        # goodness of fit of the current counts against the reference's shares: scipy.stats.chisquare
        gof = stats.chisquare(table.iloc[1], f_exp=ref_share * table.iloc[1].sum())
        assert gof.statistic > 0 and report.loc[name, "chi2"] < gof.statistic  # pooled test is more cautious
        assert report.loc[name, "js"] == pytest.approx(jensenshannon(ref_share, cur_share, base=2), abs=1e-12)
        assert report.loc[name, "linf"] == pytest.approx((ref_share - cur_share).abs().max(), abs=1e-12)


def test_detector_flags_a_shift_and_not_a_same_month_replicate(credit):
    reference, replicate, shifted = credit
    detector = DriftDetector(reference, NUMERIC, CATEGORICAL)
    assert detector.drifted(detector.compare(replicate)) == []
    flagged = detector.drifted(detector.compare(shifted))
    assert {"income", "credit_score", "debt_to_income", "purpose"} <= set(flagged)
    assert detection_month(detector, {2: shifted, 1: replicate}) == 2
    assert detection_month(detector, {1: replicate}) is None


def test_rules_thresholds_and_per_feature_overrides(credit):
    reference, _, shifted = credit
    by_psi = DriftDetector(reference, NUMERIC, CATEGORICAL, rule="psi", thresholds={"psi": 0.01})
    report = by_psi.compare(shifted)
    assert report["drifted"].tolist() == (report["psi"] > 0.01).tolist()
    strict_income = DriftDetector(reference, NUMERIC, CATEGORICAL, rule="psi",
                                  thresholds={"psi": 10.0, "income": {"psi": 0.0}})
    assert strict_income.drifted(strict_income.compare(shifted)) == ["income"]
    with pytest.raises(ValueError, match="unknown rule"):
        DriftDetector(reference, NUMERIC, rule="kl")
    only_categories = DriftDetector(reference, [], CATEGORICAL).compare(shifted)
    assert list(only_categories.index) == CATEGORICAL and only_categories["drifted"].all()
    with pytest.raises(KeyError, match="no column"):
        DriftDetector(reference, ["salary"])


def test_unseen_category_counts_as_drift(credit):
    reference, replicate, _ = credit
    changed = replicate.copy()
    changed["purpose"] = changed["purpose"].astype(str)
    changed.loc[changed.index[:400], "purpose"] = "crypto"
    report = DriftDetector(reference, NUMERIC, CATEGORICAL).compare(changed)
    assert report.loc["purpose", "drifted"]
    assert report.loc["purpose", "linf"] == pytest.approx(0.1, abs=0.02)


def test_correction_lowers_false_alarms_on_stable_windows():
    """On stable data, an uncorrected per-feature test alarms far more often than Holm across 11 features."""
    stream = CreditStream(seed=5, rows_per_month=600)
    reference = CreditStream(seed=6, rows_per_month=5000).month(0)
    alarms = {"none": 0, "holm": 0}
    for method in alarms:
        detector = DriftDetector(reference, NUMERIC, CATEGORICAL, correction=method)
        for replicate in range(40):
            alarms[method] += bool(detector.compare(stream.month(0, replicate=replicate))["drifted"].any())
    assert alarms["holm"] < alarms["none"]
    assert alarms["holm"] <= 6


# ---- awkward windows: missing values, no data, numbers as categories, infinities ---------------------------
def awkward_reference(n=2000, seed=3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"income": rng.normal(50, 10, n), "term": rng.choice([12, 24, 36], n)})


def same_distribution(n=1000, seed=4) -> pd.DataFrame:
    return awkward_reference(n, seed)


@pytest.mark.parametrize("rule", ["test", "psi"])
def test_a_window_that_is_mostly_missing_is_flagged(rule):
    detector = DriftDetector(awkward_reference(), numeric=["income"], categorical=["term"], rule=rule)
    window = same_distribution()
    window.loc[window.index[:900], "income"] = np.nan              # 90 % missing, the rest as usual
    report = detector.compare(window)
    assert report.loc["income", "missing"] == pytest.approx(0.9)
    assert report.loc["income", "drifted"] and report.loc["income", "status"] == "missing values"
    assert not report.loc["term", "drifted"] and report.loc["term", "status"] == "stable"


def test_a_missing_share_within_the_tolerance_is_not_flagged():
    detector = DriftDetector(awkward_reference(), numeric=["income"], categorical=["term"])
    window = same_distribution()
    window.loc[window.index[:10], "income"] = np.nan               # 1 %: under the 2-point tolerance
    assert detector.compare(window).loc["income", "status"] == "stable"


@pytest.mark.parametrize("rule", ["test", "psi", "js", "linf"])
def test_an_empty_window_is_insufficient_data_not_drift(rule):
    detector = DriftDetector(awkward_reference(), numeric=["income"], categorical=["term"], rule=rule)
    report = detector.compare(same_distribution().iloc[:0])
    assert list(report["status"]) == ["INSUFFICIENT_DATA"] * 2
    assert not report["drifted"].any() and report["psi"].isna().all() and report["p_adjusted"].isna().all()


def test_a_feature_with_no_values_is_insufficient_data_and_the_others_are_still_judged():
    detector = DriftDetector(awkward_reference(), numeric=["income"], categorical=["term"], rule="psi")
    window = same_distribution()
    window["term"] = np.nan
    report = detector.compare(window)
    assert report.loc["term", "status"] == "INSUFFICIENT_DATA" and not report.loc["term", "drifted"]
    assert report.loc["income", "status"] == "stable"


def test_numbers_as_categories_are_one_category_whatever_their_type():
    detector = DriftDetector(awkward_reference(), numeric=["income"], categorical=["term"])
    window = same_distribution()
    window["term"] = window["term"].astype(float)
    window.loc[window.index[0], "term"] = np.nan                   # one missing value: the column is float
    report = detector.compare(window)
    assert report.loc["term", "chi2"] < 10 and report.loc["term", "status"] == "stable", report.loc["term"]


@pytest.mark.parametrize("bad", [np.inf, -np.inf, "n/a"])
def test_a_value_that_is_not_a_finite_number_is_an_error_naming_the_column_and_rows(bad):
    detector = DriftDetector(awkward_reference(), numeric=["income"], categorical=["term"])
    window = same_distribution().astype({"income": object})
    window.loc[[7, 42], "income"] = bad
    with pytest.raises(ValueError, match=r"the window: column 'income' has 2 value\(s\) .* rows \[7, 42\]"):
        detector.compare(window)
