"""The statistics behind deployment decisions: canary judge, A/B sizing and tests, peeking, sequential bounds."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from mlops_lab.canary import (MetricSpec, judge, obrien_fleming_bounds, power_two_proportions,
                              sample_size_two_proportions, simulate_peeking, two_proportion_ztest)

SPECS = {"latency": MetricSpec("increase", tolerance=0.2),
         "score": MetricSpec("either", tolerance=0.05, absolute=True),
         "error": MetricSpec("increase", tolerance=0.01, absolute=True, statistic="mean")}


def samples(rng, latency=1.0, score_shift=0.0, error_rate=0.0, n=300):
    return {"latency": rng.lognormal(np.log(5 * latency), 0.2, n),
            "score": np.clip(rng.beta(2, 6, n) + score_shift, 0, 1),
            "error": (rng.random(n) < error_rate).astype(float)}


def test_a_canary_like_its_baseline_passes():
    rng = np.random.default_rng(5)
    result = judge(samples(rng), samples(rng, n=80), SPECS)
    assert result["verdict"] == "pass" and result["score"] == 100
    assert set(result["metrics"]["result"]) == {"pass"}
    # A healthy canary is rarely failed: both a significant test and a shift beyond tolerance are needed.
    verdicts = [judge(samples(rng), samples(rng, n=80), SPECS)["verdict"] for _ in range(50)]
    assert verdicts.count("fail") <= 5


@pytest.mark.parametrize("change, failing", [({"latency": 2.0}, "latency"), ({"score_shift": 0.2}, "score"),
                                             ({"score_shift": -0.2}, "score"), ({"error_rate": 0.3}, "error")])
def test_each_harmful_change_fails_its_metric(change, failing):
    rng = np.random.default_rng(1)
    result = judge(samples(rng), samples(rng, n=80, **change), SPECS)
    table = result["metrics"]
    assert table.loc[failing, "result"] == "fail"
    assert (table.drop(index=failing)["result"] == "pass").all()
    assert result["verdict"] == "fail" and result["score"] == pytest.approx(200 / 3)


def test_direction_and_tolerance_matter():
    rng = np.random.default_rng(2)
    faster = judge(samples(rng), samples(rng, latency=0.5, n=80), SPECS)["metrics"]
    assert faster.loc["latency", "classification"] == "low" and faster.loc["latency", "result"] == "pass"
    slightly = judge(samples(rng), samples(rng, latency=1.1, n=2000), SPECS)["metrics"]
    assert slightly.loc["latency", "p_value"] < 0.05 and slightly.loc["latency", "result"] == "pass"


def test_weights_make_a_marginal_verdict():
    rng = np.random.default_rng(3)
    specs = {**SPECS, "latency": MetricSpec("increase", tolerance=0.2, weight=1),
             "score": MetricSpec("either", tolerance=0.05, absolute=True, weight=2),
             "error": MetricSpec("increase", tolerance=0.01, absolute=True, statistic="mean", weight=1)}
    result = judge(samples(rng), samples(rng, latency=2.0, n=80), specs)
    assert result["score"] == 75 and result["verdict"] == "marginal"
    with pytest.raises(ValueError):
        judge({"latency": [1, 2]}, {"latency": [1, 2, 3]}, {"latency": MetricSpec()})


def test_sample_size_matches_the_textbook_formula_and_its_power():
    n = sample_size_two_proportions(0.10, 0.12)
    assert 3800 <= n <= 3900  # the classic 10 % -> 12 % example needs about 3,840 per arm
    assert power_two_proportions(0.10, 0.12, n) == pytest.approx(0.8, abs=0.005)
    assert sample_size_two_proportions(0.75, 0.81) < sample_size_two_proportions(0.75, 0.78)
    with pytest.raises(ValueError):
        sample_size_two_proportions(0.5, 0.5)


def test_ztest_agrees_with_a_chi_square_test():
    z, p = two_proportion_ztest(120, 1000, 150, 1000)
    chi2, p_chi, _, _ = stats.chi2_contingency([[120, 880], [150, 850]], correction=False)
    assert z > 0 and p == pytest.approx(p_chi) and z ** 2 == pytest.approx(chi2)


def test_obrien_fleming_bounds_are_the_known_ones():
    bounds = obrien_fleming_bounds(5, alpha=0.05)
    assert bounds[-1] == pytest.approx(2.04, abs=0.03)  # published constant for 5 looks
    assert np.all(np.diff(bounds) < 0) and bounds[0] == pytest.approx(bounds[-1] * np.sqrt(5))


def test_peeking_inflates_false_positives_and_sequential_does_not():
    aa = simulate_peeking(p=0.3, n_per_arm=1000, looks=10, sims=4000, seed=4)
    assert abs(aa["fixed"] - 0.05) < 0.015
    assert aa["peeking"] > 0.12
    assert aa["sequential"] < 0.065
    assert np.all(np.diff(aa["by_look"]) >= 0) and aa["by_look"][-1] == pytest.approx(aa["peeking"])
    ab = simulate_peeking(p=0.3, n_per_arm=1000, looks=10, sims=2000, effect=0.06, seed=4)
    assert ab["fixed"] > 0.8 and ab["sequential"] > 0.75
