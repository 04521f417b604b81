"""Drift statistics: each one cross-checked against scipy on the same data; PSI against a hand computation."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mlops_lab.drift import (DISTANCES, EXACT_KS_PAIRS, MIN_EXPECTED, DriftDetector, adjust_pvalues, as_numbers,
                             bin_proportions, category_test, cdf_gaps, chi2_homogeneity, detection_month, false_alarm_rate,
                             js_distance, ks_pvalue, pool_rare_categories, psi, quantile_edges, sorted_proportions)
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
        assert (2 * n) ** 2 > EXACT_KS_PAIRS   # the asymptotic range
        exact = stats.kstwo.sf(d, n)
        assert ks_pvalue(d, 2 * n, 2 * n) == pytest.approx(exact, rel=1e-12 if exact > 1e-6 and n <= 10_000
                                                           else 0.1)
        if exact < 1e-6:   # the limit there is an upper bound of scipy's exact two-sample value
            assert ks_pvalue(d, 2 * n, 2 * n) >= stats.ks_2samp(np.arange(2 * n), np.arange(2 * n) + 2 * n * d,
                                                                method="exact").pvalue


@pytest.mark.parametrize("case", SAMPLES)
def test_ks_and_wasserstein_match_scipy(case):
    a, b = SAMPLES[case]
    ks, w = cdf_gaps(np.sort(a), np.sort(b))
    exact = len(a) * len(b) <= EXACT_KS_PAIRS   # "identical" and "disjoint": scipy's exact value, to the last bits
    ref = stats.ks_2samp(a, b, method="exact" if exact else "asymp")
    assert ks == pytest.approx(ref.statistic, abs=1e-12)
    assert ks_pvalue(ks, len(a), len(b)) == pytest.approx(ref.pvalue, rel=1e-12 if exact else 1e-9 if ref.pvalue > 1e-6
                                                          else 0.1, abs=0 if exact else None)
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
        if ks.pvalue < 1e-6:   # 4000 x 4000 rows: the asymptotic range, where the far tail is an upper bound
            assert report.loc[name, "p_value"] >= stats.ks_2samp(a, b, method="exact").pvalue
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


# ---- sparse categories: pool the rare ones before the chi-square test ---------------------------------------
def test_pool_rare_categories_merges_the_rarest_until_every_expected_count_reaches_five():
    assert MIN_EXPECTED == 5
    ref = np.array([400, 300, 200, 30, 20, 10, 5, 0])
    cur = np.array([40, 30, 20, 3, 2, 1, 1, 0])
    # A cell's expected count is row total * column total / 1062; the window's row (97) is the smaller, so a
    # category needs a column total >= 5 * 1062 / 97 = 54.7. The rarest (6, 11, 22, 33) pooled make 72; the
    # category empty in both rows carries nothing and is dropped.
    pooled_ref, pooled_cur = pool_rare_categories(ref, cur)
    assert pooled_ref.tolist() == [400, 300, 200, 65] and pooled_cur.tolist() == [40, 30, 20, 7]
    # Nothing rare: the table as it was.
    assert [v.tolist() for v in pool_rare_categories(np.array([500, 300]), np.array([60, 40]))] == [[500, 300],
                                                                                                   [60, 40]]
    # No pooling reaches the rule: stop at two cells (the largest category and "other").
    assert [v.tolist() for v in pool_rare_categories(np.array([1000, 2, 1, 1]), np.array([3, 0, 0, 1]))] == \
        [[1000, 4], [3, 1]]
    # chi2_homogeneity is scipy's test on the pooled table; min_expected=0 is the unpooled test.
    statistic, p = chi2_homogeneity(ref, cur)
    expected = stats.chi2_contingency(np.vstack([pooled_ref, pooled_cur]), correction=False)
    assert (statistic, p) == pytest.approx((expected.statistic, expected.pvalue), rel=1e-12)
    unpooled = stats.chi2_contingency(np.vstack([ref, cur])[:, :7], correction=False)
    assert chi2_homogeneity(ref, cur, min_expected=0) == pytest.approx((unpooled.statistic, unpooled.pvalue),
                                                                       rel=1e-12)


SPARSE_CATEGORIES, SPARSE_WINDOW, SPARSE_WINDOWS = 500, 50, 2000
ZIPF = 1 / np.arange(1, SPARSE_CATEGORIES + 1) / np.sum(1 / np.arange(1, SPARSE_CATEGORIES + 1))


def sparse_window(rng: np.random.Generator, rows: int = SPARSE_WINDOW) -> pd.DataFrame:
    """Rows of one categorical feature with 500 Zipf-distributed categories (p_k proportional to 1/k)."""
    return pd.DataFrame({"c": rng.choice(SPARSE_CATEGORIES, rows, p=ZIPF).astype(str)})


def test_pooling_keeps_the_chi_square_false_alarm_rate_at_alpha_on_sparse_categories():
    reference = sparse_window(np.random.default_rng(21), rows=10_000)
    rate = false_alarm_rate(reference, sparse_window, SPARSE_WINDOWS, seed=22, numeric=[], categorical=["c"],
                            correction="none", alpha=0.05)
    # Binomial tolerance: 3 standard errors of a 5 % rate estimated from SPARSE_WINDOWS windows (0.0146).
    tolerance = 3 * math.sqrt(0.05 * 0.95 / SPARSE_WINDOWS)
    assert abs(rate - 0.05) <= tolerance, rate
    # The unpooled test (the old code) on the same kind of windows alarms far more often.
    ref_counts = reference["c"].astype(int).value_counts().reindex(range(SPARSE_CATEGORIES), fill_value=0)
    rng = np.random.default_rng(22)
    unpooled = np.mean([chi2_homogeneity(ref_counts.to_numpy(), np.bincount(
        sparse_window(rng)["c"].astype(int), minlength=SPARSE_CATEGORIES), min_expected=0)[1] < 0.05
        for _ in range(SPARSE_WINDOWS)])
    assert unpooled > 0.05 + tolerance, unpooled


def uniform_window(rng: np.random.Generator, rows: int = SPARSE_WINDOW) -> pd.DataFrame:
    """Rows of one categorical feature with 500 equally likely categories: none reaches 5 expected in 50 rows."""
    return pd.DataFrame({"c": rng.integers(0, SPARSE_CATEGORIES, rows).astype(str)})


@pytest.mark.parametrize("reference_seed", [1, 21])
def test_where_pooling_cannot_reach_five_per_cell_fishers_exact_test_keeps_false_alarms_at_most_alpha(
        reference_seed):
    # Pooling to two cells (the commonest category against the rest) leaves the window's expected count of the
    # first near 0.1: the chi-square alarmed on 9.9 % of these windows for reference seed 1. Fisher's exact test
    # is conservative: at most alpha, within the same 3-standard-error binomial tolerance.
    reference = uniform_window(np.random.default_rng(reference_seed), rows=10_000)
    rate = false_alarm_rate(reference, uniform_window, SPARSE_WINDOWS, seed=22, numeric=[], categorical=["c"],
                            correction="none", alpha=0.05)
    assert rate <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / SPARSE_WINDOWS), rate
    report = DriftDetector(reference, [], ["c"]).compare(uniform_window(np.random.default_rng(3)))
    assert report.loc["c", "test"] == "fisher" and report.loc["c", "pooled"] > 400


def test_category_test_is_chi_square_where_counts_allow_and_fisher_on_the_pooled_two_by_two_where_not():
    ref, cur = np.array([400, 300, 200, 30, 20, 10, 5, 0]), np.array([40, 30, 20, 3, 2, 1, 1, 0])
    test, statistic, dof, p, pooled = category_test(ref, cur)
    assert (test, dof, pooled) == ("chi2", 3, 4) and (statistic, p) == pytest.approx(chi2_homogeneity(ref, cur))
    test, odds, dof, p, pooled = category_test(np.array([1000, 2, 1, 1]), np.array([3, 0, 0, 1]))
    fisher = stats.fisher_exact([[1000, 4], [3, 1]])
    assert (test, dof, pooled) == ("fisher", 1, 3) and (odds, p) == pytest.approx((fisher.statistic, fisher.pvalue))
    # One category only: nothing to test.
    assert category_test(np.array([10, 0]), np.array([5, 0]))[0::3] == ("chi2", 1.0)


def test_the_report_says_which_test_ran_and_how_many_categories_were_pooled():
    reference = sparse_window(np.random.default_rng(21), rows=10_000).assign(x=np.arange(10_000.0))
    window = sparse_window(np.random.default_rng(5)).assign(x=np.arange(50.0))
    report = DriftDetector(reference, ["x"], ["c"]).compare(window)
    assert report.loc["x", "test"] == "ks" and report.loc["x", "pooled"] == 0
    assert report.loc["c", "test"] == "chi2" and report.loc["c", "pooled"] > 100
    ref_counts = reference["c"].value_counts()
    cur_counts = window["c"].value_counts().reindex(ref_counts.index, fill_value=0)
    statistic, p = chi2_homogeneity(ref_counts.to_numpy(), cur_counts.to_numpy())
    assert report.loc["c", "chi2"] == pytest.approx(statistic, rel=1e-12)
    assert report.loc["c", "p_value"] == pytest.approx(p, rel=1e-12)


# ---- a constant reference column ---------------------------------------------------------------------------
def test_a_constant_reference_gets_bins_below_at_and_above_its_value():
    edges = quantile_edges(np.full(100, 3.0))
    assert len(edges) == 2 and edges[1] == 3.0 and edges[0] < 3.0
    assert bin_proportions(np.array([2.999, 3.0, 3.001]), edges).tolist() == [1 / 3] * 3


@pytest.mark.parametrize("rule", ["test", *DISTANCES])
@pytest.mark.parametrize("moved_to", [4.0, 2.0])
def test_every_rule_flags_a_move_away_from_a_constant_and_not_an_unchanged_window(rule, moved_to):
    detector = DriftDetector(pd.DataFrame({"x": np.full(200, 3.0)}), ["x"], rule=rule)
    moved = detector.compare(pd.DataFrame({"x": np.full(50, moved_to)}))
    same = detector.compare(pd.DataFrame({"x": np.full(50, 3.0)}))
    assert moved.loc["x", "status"] == "drifted", moved.loc["x"]
    assert same.loc["x", "status"] == "stable", same.loc["x"]
    assert moved.loc["x", "wasserstein_std"] == np.inf and same.loc["x", "wasserstein_std"] == 0.0


# ---- values that are not numbers: the error names the column and the rows ---------------------------------------
@pytest.mark.parametrize("bad", [
    pd.Series(["a", "b"] * 50, dtype="category"),                   # a categorical column passed as numeric
    pd.Series([1.0] * 98 + ["x", "y"], dtype=object),
    pd.Series(["1.5"] * 98 + ["x", "y"], dtype="string"),
])
def test_a_reference_value_that_is_not_a_number_is_an_error_naming_the_column_and_rows(bad):
    reference = awkward_reference(100).assign(income=bad)
    rows = r"\[0, 1, 2, 3, 4\]" if len(bad.unique()) == 2 else r"\[98, 99\]"
    with pytest.raises(ValueError, match=rf"the reference: column 'income' has \d+ value\(s\) .* rows {rows}"):
        DriftDetector(reference, numeric=["income"])


def test_a_missing_value_in_the_reference_is_an_error_naming_the_column_and_rows():
    reference = awkward_reference(100).astype({"income": "Float64"})
    reference.loc[[3, 8], "income"] = pd.NA
    with pytest.raises(ValueError, match=r"the reference: column 'income' has 2 missing value\(s\), in rows \[3, 8\]"):
        DriftDetector(reference, numeric=["income"], categorical=["term"])


def test_a_window_without_a_feature_is_an_error_naming_it():
    detector = DriftDetector(awkward_reference(), numeric=["income"], categorical=["term"])
    for absent in ("income", "term"):
        with pytest.raises(KeyError, match=rf"the window has no column\(s\) \['{absent}'\]"):
            detector.compare(same_distribution().drop(columns=absent))


def test_as_numbers_reads_numbers_in_any_dtype_and_names_what_is_not_one():
    frame = pd.DataFrame({"a": pd.array([1, 2], dtype="Int64"), "b": ["3", 4.5], "c": pd.Categorical([5.0, 6.0])})
    assert as_numbers(frame, ["a", "b", "c"], "the window").tolist() == [[1, 3, 5], [2, 4.5, 6]]
    with pytest.raises(ValueError, match=r"the window: column 'b' has 1 value\(s\) .* rows \[1\]: \['x'\]"):
        as_numbers(frame.assign(b=["3", "x"]), ["a", "b"], "the window")


@pytest.mark.parametrize("call", [
    lambda bad: quantile_edges(bad), lambda bad: bin_proportions(bad, np.array([0.5])),
    lambda bad: sorted_proportions(bad, np.array([0.5])), lambda bad: cdf_gaps(bad, np.array([1.0])),
    lambda bad: cdf_gaps(np.array([1.0]), bad), lambda bad: psi(np.array([0.5, 0.5]), bad),
])
@pytest.mark.parametrize("bad", [np.array(["1", "x"]), ["1", np.inf], pd.Series([1.0, np.nan], name="income")])
def test_the_statistics_name_the_position_of_a_value_that_is_not_a_finite_number(call, bad):
    name = "column 'income'" if isinstance(bad, pd.Series) else "values"
    with pytest.raises(ValueError, match=rf"{name} has 1 (missing )?value\(s\).* rows \[1\]"):
        call(bad)


# ---- KS p-values: scipy's exact two-sample distribution for small samples ------------------------------------
@pytest.mark.parametrize("n_ref, n_cur, shift", [(30, 30, 2.5), (300, 30, 2.0), (1000, 50, 1.5), (20_000, 50, 1.5),
                                                 (1000, 1000, 0.4), (40, 25, 0.0), (500, 60, 0.3)])
def test_ks_pvalue_is_scipys_exact_value_for_small_samples(n_ref, n_cur, shift):
    assert n_ref * n_cur <= EXACT_KS_PAIRS
    rng = np.random.default_rng(n_ref + n_cur)
    a, b = rng.normal(0, 1, n_ref), rng.normal(shift, 1, n_cur)
    exact = stats.ks_2samp(a, b, method="exact")
    ks, _ = cdf_gaps(np.sort(a), np.sort(b))
    # The same scipy routine on the same lattice statistic (round(D * lcm)): equal but for the last bits, so a
    # relative 1e-12 (a thousand times the float rounding of a few dozen operations) is all the room needed.
    assert ks_pvalue(ks, n_ref, n_cur) == pytest.approx(exact.pvalue, rel=1e-12, abs=0)
    report = DriftDetector(pd.DataFrame({"x": a}), ["x"]).compare(pd.DataFrame({"x": b}))
    assert report.loc["x", "p_value"] == pytest.approx(exact.pvalue, rel=1e-12, abs=0)


def test_ks_pvalue_is_asymptotic_above_the_exact_range():
    d = 0.06
    assert ks_pvalue(d, 1000, 1000) == pytest.approx(stats.ks_2samp(np.arange(1000), np.arange(60, 1060),
                                                                    method="exact").pvalue, rel=1e-12)
    assert ks_pvalue(d, 1000, 1001) == pytest.approx(stats.kstwo.sf(d, round(1000 * 1001 / 2001)), rel=1e-12)


@pytest.mark.parametrize("values", [pd.date_range("2024-01-01", periods=4), pd.to_timedelta([1, 2, 3, 4], unit="D")])
def test_a_date_column_passed_as_numeric_is_an_error_not_nanoseconds(values):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "applied": values})
    with pytest.raises(ValueError, match=r"column 'applied' holds dates or durations"):
        DriftDetector(frame, ["x", "applied"])
    with pytest.raises(ValueError, match=r"the window: column 'applied' holds dates"):
        DriftDetector(frame.assign(applied=1.0), ["x", "applied"]).compare(frame)
