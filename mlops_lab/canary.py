"""Deciding with statistics: a Kayenta-style canary judge, A/B sample sizes, and why peeking misleads.

- :func:`judge` compares a canary's metrics with the baseline's, metric by metric, with the Mann-Whitney U
  test (as Netflix's Kayenta does): a metric *fails* when the distributions differ significantly **and**
  the shift in medians is larger than the metric's tolerance, in a direction that matters. The score is the
  weighted share of metrics that pass (0-100): ``pass`` at 95 or more, ``marginal`` at 75 or more, else
  ``fail`` (Kayenta's default thresholds); a *critical* metric that fails fails the canary whatever the score.
  A model's scores are judged against the *same model's* scores in the shadow phase, with a tolerance
  :func:`score_tolerance` derives from them: a retrained model is meant to score differently from the champion,
  so comparing with the champion needs a tolerance wide enough to let a constant output through.
- :func:`sample_size_two_proportions` is the classic two-sided z-test sample size per arm for a conversion-
  style metric; :func:`two_proportion_ztest` the test itself.
- :func:`simulate_peeking` shows, by simulation, that looking at a fixed-horizon test after every batch and
  stopping at the first p < alpha inflates the false-positive rate far above alpha;
  :func:`obrien_fleming_bounds` gives a group-sequential alternative whose boundaries keep it at alpha.
- :func:`assign_arms` is the A/B assignment the router makes (a salted hash of each unit's id, see
  :func:`mlops_lab.router.assignment_bucket`), recomputed for the analysis; :func:`srm_check` is the
  sample-ratio-mismatch check: a chi-square test of the arms' counts against the planned split, run before
  any metric is read (a mismatch means the assignment or the logging is broken, and no metric can be trusted).
- :func:`ab_readout` is the A/B test's table on a date: per arm, applicants, approvals and the outcome
  rate among loans, counting only the labels known on that date (the book's clock).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from .rollout import assignment_bucket
from .simulator import APPROVED, EARLY_LABEL, known_as_of

PASS_SCORE, MARGINAL_SCORE = 95.0, 75.0
# The SRM check runs on every experiment and a false alarm stops one, so it uses a strict level, as
# experimentation platforms do; a real mismatch on thousands of units gives p values far below it.
SRM_ALPHA = 0.001


@dataclass(frozen=True)
class MetricSpec:
    """How to judge one metric: which direction is bad, how big a shift is tolerated, how much it counts.

    ``direction``: ``increase`` (only higher is bad, e.g. latency), ``decrease`` or ``either``.
    ``tolerance``: the relative shift still acceptable (0.1 = 10 %), or absolute when ``absolute=True``
    (for metrics near zero, such as scores or error indicators). The shift is that of the medians, or of
    the means with ``statistic="mean"`` (for 0/1 metrics such as errors, whose medians are both 0).
    ``critical``: a failure of this metric fails the canary even when the weighted score would pass.
    """

    direction: str = "increase"
    tolerance: float = 0.1
    weight: float = 1.0
    absolute: bool = False
    statistic: str = "median"
    critical: bool = False       # a failure fails the canary whatever the score (Kayenta's critical metrics)


def judge(baseline: dict, canary: dict, specs: dict[str, MetricSpec], alpha: float = 0.05) -> dict:
    """Score a canary against its baseline; returns ``{"score", "verdict", "metrics": DataFrame}``."""
    rows = []
    for name, spec in specs.items():
        b, c = np.asarray(baseline[name], dtype=float), np.asarray(canary[name], dtype=float)
        if len(b) < 3 or len(c) < 3:
            raise ValueError(f"metric {name!r}: need at least 3 observations on each side")
        if np.ptp(np.concatenate([b, c])) == 0:
            p = 1.0  # identical constant samples (e.g. no errors on either side): nothing to tell apart
        else:
            p = float(stats.mannwhitneyu(c, b, alternative="two-sided").pvalue)
        centre = np.mean if spec.statistic == "mean" else np.median
        mb, mc = float(centre(b)), float(centre(c))
        shift = mc - mb if spec.absolute else (mc - mb) / abs(mb) if mb else np.inf * np.sign(mc - mb)
        higher = p < alpha and shift > spec.tolerance
        lower = p < alpha and shift < -spec.tolerance
        bad = (higher and spec.direction in ("increase", "either")) or \
              (lower and spec.direction in ("decrease", "either"))
        rows.append({"metric": name, "baseline": mb, "canary": mc, "shift": shift,
                     "p_value": p, "classification": "high" if higher else "low" if lower else "pass",
                     "result": "fail" if bad else "pass", "weight": spec.weight, "critical": spec.critical})
    table = pd.DataFrame(rows).set_index("metric")
    score = 100.0 * table.loc[table["result"] == "pass", "weight"].sum() / table["weight"].sum()
    verdict = "pass" if score >= PASS_SCORE else "marginal" if score >= MARGINAL_SCORE else "fail"
    if (table["critical"] & (table["result"] == "fail")).any():
        verdict = "fail"
    return {"score": float(score), "verdict": verdict, "metrics": table}


def score_tolerance(reference, n: int, *, quantile: float = 0.999, n_boot: int = 2000, seed: int = 0) -> float:
    """How far the median of ``n`` scores from the *same* model on the same traffic strays from the median of
    ``reference`` (that model's scores in the shadow phase), at ``quantile``: a canary of a healthy release
    exceeds it once in 1 / (1 - quantile) judgements (by a bootstrap of ``reference``). A release whose scores
    are broken (one constant, or the other class's probability) moves its median by far more."""
    reference = np.asarray(reference, dtype=float)
    if len(reference) < 30 or n < 3:
        raise ValueError(f"need at least 30 reference scores and 3 canary scores, got {len(reference)} and {n}")
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(reference, size=(n_boot, n), replace=True), axis=1)
    return float(np.quantile(np.abs(medians - np.median(reference)), quantile))


def sample_size_two_proportions(p_control: float, p_treatment: float, alpha: float = 0.05,
                                power: float = 0.8) -> int:
    """Observations per arm for a two-sided two-proportion z-test to detect ``p_control -> p_treatment``."""
    if not (0 < p_control < 1 and 0 < p_treatment < 1) or p_control == p_treatment:
        raise ValueError("need two different proportions strictly between 0 and 1")
    z_alpha, z_beta = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    p_bar = (p_control + p_treatment) / 2
    numerator = (z_alpha * np.sqrt(2 * p_bar * (1 - p_bar))
                 + z_beta * np.sqrt(p_control * (1 - p_control) + p_treatment * (1 - p_treatment))) ** 2
    return int(np.ceil(numerator / (p_treatment - p_control) ** 2))


def power_two_proportions(p_control: float, p_treatment: float, n_per_arm: int, alpha: float = 0.05) -> float:
    """The power of the two-sided z-test with ``n_per_arm`` observations per arm (normal approximation)."""
    z_alpha = stats.norm.ppf(1 - alpha / 2)
    p_bar = (p_control + p_treatment) / 2
    se0 = np.sqrt(2 * p_bar * (1 - p_bar) / n_per_arm)
    se1 = np.sqrt((p_control * (1 - p_control) + p_treatment * (1 - p_treatment)) / n_per_arm)
    return float(stats.norm.cdf((abs(p_treatment - p_control) - z_alpha * se0) / se1))


def two_proportion_ztest(successes_a: int, n_a: int, successes_b: int, n_b: int) -> tuple[float, float]:
    """(z, two-sided p-value) for H0: the two proportions are equal (pooled standard error).

    ``z > 0`` when b's proportion is the higher. Counts may be NumPy integers of any width (an int8 label
    column's sum would overflow): they are converted to Python numbers first.
    """
    successes_a, n_a, successes_b, n_b = (int(v) for v in (successes_a, n_a, successes_b, n_b))
    if not (0 <= successes_a <= n_a and 0 <= successes_b <= n_b and n_a > 0 and n_b > 0):
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes_a}/{n_a} and {successes_b}/{n_b}")
    pa, pb = successes_a / n_a, successes_b / n_b
    pooled = (successes_a + successes_b) / (n_a + n_b)
    se = np.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    z = (pb - pa) / se if se > 0 else 0.0
    return float(z), float(2 * stats.norm.sf(abs(z)))


def _z_paths(p_a: float, p_b: float, n_per_arm: int, looks: int, sims: int, rng) -> np.ndarray:
    """z statistics at ``looks`` equally spaced interim looks, for ``sims`` simulated experiments."""
    per_look = np.full(looks, n_per_arm // looks)
    per_look[: n_per_arm % looks] += 1
    n = np.cumsum(per_look)
    xa = np.cumsum(rng.binomial(per_look, p_a, size=(sims, looks)), axis=1)
    xb = np.cumsum(rng.binomial(per_look, p_b, size=(sims, looks)), axis=1)
    pooled = (xa + xb) / (2 * n)
    se = np.sqrt(np.clip(pooled * (1 - pooled), 1e-12, None) * 2 / n)
    return (xb / n - xa / n) / se


def obrien_fleming_bounds(looks: int, alpha: float = 0.05, sims: int = 200_000, seed: int = 0) -> np.ndarray:
    """|z| boundaries ``c * sqrt(looks / k)`` at looks k = 1..looks with an overall two-sided level ``alpha``.

    ``c`` is calibrated by simulating the z statistic as a Brownian motion observed at the looks.
    """
    rng = np.random.default_rng(seed)
    increments = rng.standard_normal((sims, looks))
    z = np.cumsum(increments, axis=1) / np.sqrt(np.arange(1, looks + 1))
    shape = np.sqrt(looks / np.arange(1, looks + 1))
    worst = np.max(np.abs(z) / shape, axis=1)  # crossing any boundary c*shape_k <=> c < max |z_k| / shape_k
    return float(np.quantile(worst, 1 - alpha)) * shape


def simulate_peeking(p: float = 0.75, n_per_arm: int = 2000, looks: int = 20, alpha: float = 0.05,
                     sims: int = 4000, effect: float = 0.0, seed: int = 0) -> dict:
    """Share of simulated experiments that declare a winner, under three stopping rules.

    With ``effect=0`` (an A/A test) every "winner" is a false positive: ``fixed`` (one test at the end)
    stays near alpha; ``peeking`` (stop at the first look with p < alpha) inflates it; ``sequential``
    (stop when |z| crosses the O'Brien-Fleming boundary) keeps it near alpha. With ``effect > 0`` the same
    shares are the power. ``by_look`` is the cumulative share that peeking has stopped by each look.
    """
    rng = np.random.default_rng(seed)
    z = np.abs(_z_paths(p, p + effect, n_per_arm, looks, sims, rng))
    critical = stats.norm.ppf(1 - alpha / 2)
    bounds = obrien_fleming_bounds(looks, alpha, seed=seed)
    peek_hits = z > critical
    return {"fixed": float(np.mean(peek_hits[:, -1])), "peeking": float(np.mean(peek_hits.any(axis=1))),
            "sequential": float(np.mean((z > bounds).any(axis=1))),
            "by_look": np.mean(np.maximum.accumulate(peek_hits, axis=1), axis=0), "bounds": bounds,
            "critical": float(critical), "looks": looks, "n_per_arm": n_per_arm}


# ---- A/B assignment and the sample-ratio-mismatch check ---------------------------------------------------
def assign_arms(units: Iterable, green_weight: float = 0.5, salt: str = "") -> np.ndarray:
    """The arm (``"blue"`` or ``"green"``) the router's sticky A/B split gives each unit in experiment ``salt``.

    The same hash as :meth:`mlops_lab.router.Router.choose`, so the analysis can recompute, and check, every
    assignment. Randomise by the unit you analyse (here the applicant), so that units are independent.
    """
    if not 0 <= float(green_weight) <= 1:
        raise ValueError(f"green_weight must be between 0 and 1, got {green_weight!r}")
    buckets = np.fromiter((assignment_bucket(str(unit), salt) for unit in units), dtype=float)
    return np.where(buckets < green_weight, "green", "blue")


def srm_check(counts: Mapping[str, int], planned: Mapping[str, float], alpha: float = SRM_ALPHA) -> dict:
    """Sample-ratio mismatch: are the arms' unit counts consistent with the planned split?

    ``counts``: units per arm, e.g. ``{"blue": 5012, "green": 4988}``; ``planned``: each arm's planned share
    (summing to 1), e.g. ``{"blue": 0.5, "green": 0.5}``. A chi-square goodness-of-fit test (k - 1 degrees of
    freedom); ``mismatch`` is true when p < ``alpha``. Returns ``{"chi2", "p_value", "observed", "expected",
    "mismatch", "alpha"}``.
    """
    if set(counts) != set(planned):
        raise ValueError(f"counts and planned must name the same arms, got {sorted(counts)} and {sorted(planned)}")
    if len(planned) < 2:
        raise ValueError("an experiment needs at least two arms")
    arms = sorted(planned)
    shares = np.array([float(planned[arm]) for arm in arms])
    if np.any(shares <= 0) or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"planned shares must be positive and sum to 1, got {dict(planned)}")
    observed = np.array([int(counts[arm]) for arm in arms])
    if np.any(observed < 0) or observed.sum() == 0:
        raise ValueError(f"counts must be non-negative and not all zero, got {dict(counts)}")
    expected = shares * observed.sum()
    chi2, p_value = stats.chisquare(observed, expected)
    return {"chi2": float(chi2), "p_value": float(p_value), "observed": dict(zip(arms, observed.tolist())),
            "expected": dict(zip(arms, expected.tolist())), "mismatch": bool(p_value < alpha), "alpha": alpha}


def ab_readout(experiment: pd.DataFrame, *, as_of, label: str = EARLY_LABEL, arm: str = "arm") -> pd.DataFrame:
    """The A/B test as the lender can read it on ``as_of``: one row per arm.

    ``experiment`` is one row per applicant with its ``arm`` and the lender's decision (the output of
    :func:`mlops_lab.simulator.lend` with an arm column). Approval rates are known at decision time; the
    outcome ``label`` counts only loans whose label is known on ``as_of`` (declined applicants never have
    one), so ``complete`` is False until every loan of the arm has its label.
    """
    known = known_as_of(experiment, as_of, label)
    table = experiment.groupby(arm, observed=True).agg(applicants=(APPROVED, "size"), approved=(APPROVED, "sum"))
    table["approval_rate"] = table["approved"] / table["applicants"]
    table["labelled"] = known[arm].value_counts().reindex(table.index, fill_value=0)
    table["bad"] = known.groupby(arm, observed=True)[label].sum().reindex(table.index, fill_value=0)
    table["rate"] = table["bad"] / table["labelled"].where(table["labelled"] > 0)
    table["complete"] = table["labelled"] == table["approved"]
    return table.astype({"approved": int, "labelled": int, "bad": int})
