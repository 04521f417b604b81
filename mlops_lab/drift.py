"""Drift detectors: is this window of production data distributed like the training data?

Six statistics, each answering a slightly different question, all computed against a *reference* (the data
the model was trained on), per feature:

============  ===========  ==================================================================================
statistic     features     what it measures
============  ===========  ==================================================================================
``psi``       all          population stability index over bins cut at the reference's deciles (categories
                           for a categorical): sum of (cur - ref) * ln(cur / ref). Rule of thumb: < 0.1
                           stable, 0.1-0.25 moderate, > 0.25 major shift (a fixed cutoff; see chapter 12).
``ks``        numeric      Kolmogorov-Smirnov: the largest gap between the two empirical CDFs, with a
                           p-value: ``scipy.stats.ks_2samp(method="exact")``'s up to n_ref x n_cur =
                           ``EXACT_KS_PAIRS`` (1,000,000), the asymptotic one (``method="asymp"``) above.
``chi2``      categorical  chi-square test of homogeneity on the 2 x k table of counts, with a p-value
                           (``scipy.stats.chi2_contingency(table, correction=False)``), after pooling the
                           categories too rare for it into one "other" cell (:func:`pool_rare_categories`);
                           where no pooling reaches 5 expected per cell, Fisher's exact test on the 2 x 2
                           table left (``scipy.stats.fisher_exact``; :func:`category_test` decides).
``js``        all          Jensen-Shannon distance (base 2, so 0..1) between the binned distributions
                           (``scipy.spatial.distance.jensenshannon``).
``wasserstein`` numeric    earth mover's distance between the samples, in the feature's units
                           (``scipy.stats.wasserstein_distance``); ``wasserstein_std`` divides it by the
                           reference's standard deviation so one threshold fits every feature.
``linf``      all          L-infinity: the largest absolute difference between the binned proportions
                           (SageMaker Model Monitor's ``LInfinity`` distance for categorical features).
============  ===========  ==================================================================================

:class:`DriftDetector` fits the reference once (bin edges, sorted values, proportions) and then compares any
window in a few vectorised NumPy passes: 100,000 rows x 20 features take well under a second
(``tools/bench_drift.py``). Its decision uses per-feature thresholds, and corrects the p-values for testing
many features at once (Holm by default): with 11 features and alpha = 0.05 each, an uncorrected monitor
raises a false alarm on about 43 % of perfectly stable windows. Each row of its report says which test ran
(``test``: ``ks``, ``chi2`` or ``fisher``) and how many categories were pooled into "other" (``pooled``),
and :func:`false_alarm_rate` measures how often a detector alarms on windows drawn from the reference's own
distribution: with 500 Zipf-distributed categories and 50-row windows the unpooled chi-square test alarmed on
26 % of them at a nominal 5 %, the pooled one on 4.5 % (2,000 windows; tests/test_drift.py). With 500 equally
likely categories no pooling reaches 5 expected per cell, and Fisher's exact test keeps the rate at most 5 %.

What the statistics cannot see is judged around them. The share of ``missing`` values is a statistic of its own:
a feature whose share rises by more than ``MISSING_TOLERANCE`` is flagged (status ``missing values``), since the
distances only see the values that arrived. A feature with no value in the window gets no statistic and the
status ``INSUFFICIENT_DATA``, never "drifted". Numbers used as categories are normalised (1, 1.0 and a float
column's 1.0 are one category), and a value that is not a finite number, in the reference or the window, is an
error naming its column and rows (:func:`as_numbers`; the single-feature statistics name positions). A constant
reference column c gets the bins x < c, x == c and x > c, and ``wasserstein_std`` is infinite for any move away
from it, so every rule flags a window that leaves the constant.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
# scipy's exact two-sample KS p-value, the routine ks_2samp(method="exact") calls: private, present in the pinned 1.17
from scipy.stats._stats_py import _attempt_exact_2kssamp

EPS = 1e-4  # floor for an empty bin's proportion in PSI (ln 0 is undefined); a common choice
DISTANCES = ("psi", "js", "wasserstein_std", "linf")
DEFAULT_THRESHOLDS = {"psi": 0.2, "js": 0.1, "wasserstein_std": 0.1, "linf": 0.1}
# A feature whose share of missing values rises by more than this (absolute, over the reference's share) is
# flagged whatever its distribution: the statistics above see only the values that arrived, so a window that is
# 90 % missing would otherwise read as stable. Two points: a rule of thumb, like SageMaker Model Monitor's
# completeness check; override it with thresholds={"missing": ...}.
MISSING_TOLERANCE = 0.02
NO_DATA = "INSUFFICIENT_DATA"    # a feature with no value in the window: no statistic, no decision
CORRECTIONS = ("none", "bonferroni", "holm", "bh")
# The chi-square approximation needs every cell's expected count to be >= 5 (Cochran's usual rule); rarer categories
# are pooled into one "other" cell first. Unpooled, 500 Zipf-distributed categories against 50-row windows alarmed
# on 26 % of unchanged windows at a nominal 5 % (pooled: 4.5 %).
MIN_EXPECTED = 5
# Up to this many pairs n_ref * n_cur, KS p-values are scipy's exact two-sample ones (about 4 ms at the limit).
EXACT_KS_PAIRS = 1_000_000


# ---- single-feature statistics: small, readable, and what the tests cross-check against scipy ----------
def quantile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Interior bin edges at the reference's quantiles; bins are (-inf, e1], (e1, e2], ..., (ek, inf).

    Repeated values (a 36/60-month term) give repeated quantiles: duplicates are dropped, and so is an edge
    that would leave a bin of the reference empty, so every bin holds some of the reference. A constant c is
    the exception: it gets the bins x < c, x == c and x > c, so that a move either way shows in every distance.
    """
    reference = np.sort(finite_values(reference, "quantile_edges: the reference"))
    if reference[0] == reference[-1]:
        return np.array([np.nextafter(reference[0], -np.inf), reference[0]])
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = edges[edges < reference[-1]]  # nothing above the top edge would be an empty last bin
    counts = np.diff(np.searchsorted(reference, edges, side="right"), prepend=0)
    return edges[counts > 0]


def bin_proportions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of ``values`` in each bin (x <= e1 is bin 0, e1 < x <= e2 bin 1, ..., x > ek the last)."""
    values = finite_values(values, "bin_proportions")
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two vectors of proportions (each summing to 1).

    Empty bins are floored at ``EPS``, so a bin that empties out counts heavily but finitely.
    """
    e = np.clip(finite_values(expected, "psi: expected"), EPS, None)
    a = np.clip(finite_values(actual, "psi: actual"), EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance in bits (0 = identical, 1 = disjoint): sqrt of the JS divergence."""
    p = np.asarray(p, dtype=float) / np.sum(p)
    q = np.asarray(q, dtype=float) / np.sum(q)
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_pm = np.where(p > 0, p * np.log2(p / m), 0.0).sum()
        kl_qm = np.where(q > 0, q * np.log2(q / m), 0.0).sum()
    return float(np.sqrt(max((kl_pm + kl_qm) / 2, 0.0)))


def cdf_gaps(ref_sorted: np.ndarray, cur_sorted: np.ndarray) -> tuple[float, float]:
    """(KS statistic, Wasserstein-1 distance) of two *sorted* samples, from one merge of their values.

    Both compare the empirical CDFs F_ref and F_cur on the union of the values: KS is the largest gap,
    Wasserstein the area between them (sum of |F_ref - F_cur| times the distance to the next value).
    Walking the merged values, F_ref steps up by 1/n_ref at each reference value and F_cur by 1/n_cur at
    each current one; within a run of tied values only the last position is a real CDF value.
    """
    ref_sorted = finite_values(ref_sorted, "cdf_gaps: the reference")
    cur_sorted = finite_values(cur_sorted, "cdf_gaps: the window")
    both = np.concatenate([ref_sorted, cur_sorted])
    order = np.argsort(both, kind="stable")  # two sorted runs: a linear merge
    union = both[order]
    from_ref = order < len(ref_sorted)
    gap = np.abs(np.cumsum(from_ref) / len(ref_sorted) - np.cumsum(~from_ref) / len(cur_sorted))[:-1]
    step = np.diff(union)
    return float(gap[step > 0].max(initial=0.0)), float(np.sum(gap * step))


def sorted_proportions(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``bin_proportions`` for already sorted values: one binary search per edge instead of per value."""
    sorted_values = finite_values(sorted_values, "sorted_proportions")
    below = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(below, prepend=0, append=len(sorted_values)) / max(len(sorted_values), 1)


def ks_pvalues(statistics, n_ref: int, n_cur) -> np.ndarray:
    """Two-sided p-values of two-sample KS statistics, vectorised over features (``n_cur`` may vary).

    Up to ``EXACT_KS_PAIRS`` pairs (n_ref * n_cur <= 1,000,000) the exact value of
    ``scipy.stats.ks_2samp(method="exact")``, from the same scipy routine: equal to the last bits, however far
    in the tail. Above, the asymptotic value of ``ks_2samp(method="asymp")``, ``kstwo.sf(D, round(n*m/(n+m)))``;
    that takes tens of milliseconds when n*m/(n+m) is large or the p-value tiny, so there (effective size
    above 10,000, or a p-value below 1e-6: a certain alarm however many features are tested) we return the
    limiting Kolmogorov distribution's value instead, 100 times faster but in the far tail only an upper bound:
    we measured it 1.4 % above scipy's exact value near 1e-6 and 14 % above near 1e-18 (2,000 vs 2,000 rows),
    but 15 times it near 1e-14, and further off beyond (100,000 vs 50 rows).
    """
    d = np.atleast_1d(np.asarray(statistics, dtype=float))
    n_cur = np.broadcast_to(np.asarray(n_cur, dtype=float), d.shape)
    big, small = np.maximum(n_ref, n_cur), np.minimum(n_ref, n_cur)
    en = np.round(big * small / (big + small))
    limit = stats.kstwobign.sf(d * np.sqrt(en))
    p = limit.copy()
    exact = big * small <= EXACT_KS_PAIRS
    for i in np.flatnonzero(exact):
        p[i] = _exact_ks_pvalue(d[i], int(n_ref), int(n_cur[i]))
    failed = exact & np.isnan(p) & ~np.isnan(d)   # scipy's exact routine gave up: as scipy does, use asymp
    p[failed] = limit[failed]
    asymptotic = (~exact | failed) & (en <= 10_000) & (limit >= 1e-6)
    if asymptotic.any():
        p[asymptotic] = stats.kstwo.sf(d[asymptotic], en[asymptotic])
    return p


def _exact_ks_pvalue(statistic: float, n_ref: int, n_cur: int) -> float:
    """scipy's exact two-sided two-sample p-value (the routine ``ks_2samp(method="exact")`` calls); NaN if it fails."""
    if not n_cur or np.isnan(statistic):
        return np.nan
    success, _, p = _attempt_exact_2kssamp(n_ref, n_cur, math.gcd(n_ref, n_cur), statistic, "two-sided")
    return float(np.clip(p, 0, 1)) if success else np.nan


def ks_pvalue(statistic: float, n_ref: int, n_cur: int) -> float:
    """:func:`ks_pvalues` for one feature."""
    return float(ks_pvalues([statistic], n_ref, n_cur)[0])


def chi2_statistic(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, int]:
    """Pearson's chi-square statistic of the 2 x k table [ref_counts; cur_counts] and its degrees of freedom.

    Categories empty in both rows are dropped (they carry no information and would divide by zero).
    """
    table = _nonempty_table(ref_counts, cur_counts)
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    return float(np.sum((table - expected) ** 2 / expected)), table.shape[1] - 1


def pool_rare_categories(ref_counts: np.ndarray, cur_counts: np.ndarray,
                         min_expected: float = MIN_EXPECTED) -> tuple[np.ndarray, np.ndarray]:
    """The two count vectors with their rarest categories pooled into one "other" cell (the last).

    A cell's expected count is row total x column total / grand total; with fewer than ``min_expected`` the
    chi-square approximation fails (hundreds of rare categories against a small window alarm far more often than
    alpha). So the rarest categories are pooled, fewest first, until every cell's expected count is at least
    ``min_expected`` or only two cells remain. Categories empty in both rows are dropped first.

    When no category is common enough for a cell of its own (500 equally likely categories against 50-row windows
    and a 10,000-row reference), the two cells left still fall short, and a chi-square test on them alarmed on
    0.7 % and 9.9 % of unchanged windows at a nominal 5 % for two draws of the reference (7.1 % and 8.4 %
    unpooled): :func:`category_test` gives that table Fisher's exact test instead.
    """
    table, _ = _pooled_table(ref_counts, cur_counts, min_expected)
    return table[0], table[1]


def _nonempty_table(ref_counts: np.ndarray, cur_counts: np.ndarray) -> np.ndarray:
    table = np.vstack([ref_counts, cur_counts]).astype(float)
    return table[:, table.sum(axis=0) > 0]


def _pooled_table(ref_counts, cur_counts, min_expected: float) -> tuple[np.ndarray, int]:
    """(the 2 x k table after pooling, how many categories went into "other")."""
    table = _nonempty_table(ref_counts, cur_counts)
    pooled = _how_many_to_pool(table, min_expected)
    if not pooled:
        return table, 0
    rarest_first = np.argsort(table.sum(axis=0), kind="stable")
    rare, kept = np.sort(rarest_first[:pooled]), np.sort(rarest_first[pooled:])
    return np.column_stack([table[:, kept], table[:, rare].sum(axis=1)]), pooled


def _how_many_to_pool(table: np.ndarray, min_expected: float) -> int:
    """The fewest rarest categories whose pooling brings every expected count to ``min_expected``: 0, or 2 and
    more (one category alone is no pooling), at most all but the largest (two cells remain)."""
    k, rows = table.shape[1], table.sum(axis=1)
    if k <= 2 or rows.min() == 0:
        return 0
    # a cell's expected count is row x column / total, so a column needs a total of min_expected * total / row
    needed = min_expected * table.sum() / rows.min()
    totals = np.sort(table.sum(axis=0))
    pooled = np.arange(k - 1)                              # try pooling the 0, 1, ..., k - 2 rarest
    other = np.concatenate([[np.inf], np.cumsum(totals)[:k - 2]])  # "other" for each (none when 0)
    enough = (totals[pooled] >= needed) & (other >= needed) & (pooled != 1)
    return int(pooled[enough][0]) if enough.any() else k - 1


def category_test(ref_counts: np.ndarray, cur_counts: np.ndarray,
                  min_expected: float = MIN_EXPECTED) -> tuple[str, float, int, float, int]:
    """The test of homogeneity that holds for these counts: (test, statistic, dof, p-value, categories pooled).

    Rare categories are pooled first (:func:`pool_rare_categories`). If every expected count then reaches
    ``min_expected``, Pearson's chi-square (``"chi2"``). If not even two cells can reach it (500 equally
    likely categories against a 50-row window), the 2 x 2 table left (the commonest category against the
    rest) gets Fisher's exact test (``"fisher"``, statistic: its odds ratio), which holds at any count; it
    is conservative, so it alarms at most ``alpha`` of the time. Fewer than two categories: no test, p = 1.
    """
    table, pooled = _pooled_table(ref_counts, cur_counts, min_expected)
    statistic, dof = chi2_statistic(table[0], table[1])
    if not dof:
        return "chi2", 0.0, 0, 1.0, pooled
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    if expected.min() < min_expected and table.shape[1] == 2:
        odds, p = stats.fisher_exact(table.astype(int))
        return "fisher", float(odds), 1, float(p), pooled
    return "chi2", statistic, dof, float(stats.chi2.sf(statistic, dof)), pooled


def chi2_homogeneity(ref_counts: np.ndarray, cur_counts: np.ndarray,
                     min_expected: float = MIN_EXPECTED) -> tuple[float, float]:
    """Chi-square test that two count vectors come from one distribution: (statistic, p-value).

    The same as ``scipy.stats.chi2_contingency([ref_counts, cur_counts], correction=False)`` on the table after
    :func:`pool_rare_categories` (``min_expected=0``: no pooling). Fewer than two categories: no test, p = 1.
    :func:`category_test` is what the detector runs: this, or Fisher's exact test where even pooling leaves
    expected counts below ``min_expected``.
    """
    table, _ = _pooled_table(ref_counts, cur_counts, min_expected)
    statistic, dof = chi2_statistic(table[0], table[1])
    return (statistic, float(stats.chi2.sf(statistic, dof))) if dof else (0.0, 1.0)


def adjust_pvalues(pvalues: Iterable[float], method: str = "holm") -> np.ndarray:
    """Correct p-values for testing many features at once.

    ``bonferroni`` multiplies by the number of tests; ``holm`` is Bonferroni step-down (never less
    powerful, same family-wise guarantee); ``bh`` (Benjamini-Hochberg) controls the false discovery rate
    instead. NaNs (a test that does not apply) stay NaN and do not count as tests.
    """
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    q, m = p[ok], int(ok.sum())
    if m == 0:
        return out
    if method == "none":
        adjusted = q
    elif method == "bonferroni":
        adjusted = np.minimum(q * m, 1.0)
    elif method == "holm":
        order = np.argsort(q)
        stepped = np.maximum.accumulate(q[order] * (m - np.arange(m)))
        adjusted = np.empty(m)
        adjusted[order] = np.minimum(stepped, 1.0)
    elif method == "bh":
        adjusted = stats.false_discovery_control(q, method="bh")
    else:
        raise ValueError(f"unknown correction {method!r}; use one of {CORRECTIONS}")
    out[ok] = adjusted
    return out


# ---- the fitted detector -------------------------------------------------------------------------------
@dataclass
class _NumericRef:
    sorted_values: np.ndarray
    edges: np.ndarray
    proportions: np.ndarray
    std: float


@dataclass
class _CategoricalRef:
    index: dict  # category -> position
    counts: np.ndarray


@dataclass
class DriftDetector:
    """Compare windows of data with a reference, feature by feature.

    >>> detector = DriftDetector(train_df, numeric=NUMERIC, categorical=CATEGORICAL)
    >>> report = detector.compare(window_df)      # one row per feature: every statistic, p-values, decision
    >>> detector.drifted(report)                  # the features that drifted

    ``rule`` decides what counts as drift for a feature: ``"test"`` (KS for numbers, chi-square for
    categories, p-values corrected across features by ``correction`` at level ``alpha``) or one of the
    distances ``"psi"``, ``"js"``, ``"wasserstein_std"``, ``"linf"`` above its threshold. ``thresholds``
    overrides a distance's threshold for all features (``{"psi": 0.25}``) or for one
    (``{"income": {"psi": 0.1}}``).
    """

    reference: pd.DataFrame
    numeric: list[str]
    categorical: list[str] = field(default_factory=list)
    bins: int = 10
    alpha: float = 0.05
    correction: str = "holm"
    rule: str = "test"
    thresholds: Mapping = field(default_factory=dict)

    def __post_init__(self):
        if self.correction not in CORRECTIONS:
            raise ValueError(f"unknown correction {self.correction!r}; use one of {CORRECTIONS}")
        if self.rule not in ("test", *DISTANCES):
            raise ValueError(f"unknown rule {self.rule!r}; use 'test' or one of {DISTANCES}")
        missing = [c for c in [*self.numeric, *self.categorical] if c not in self.reference.columns]
        if missing:
            raise KeyError(f"reference has no column(s) {missing}")
        values = as_numbers(self.reference, self.numeric, "the reference")
        _refuse_missing(self.reference, self.numeric, values)
        ordered = np.sort(values, axis=0)
        self._num = {}
        for j, name in enumerate(self.numeric):
            edges = quantile_edges(ordered[:, j], self.bins)
            self._num[name] = _NumericRef(ordered[:, j].copy(), edges, sorted_proportions(ordered[:, j], edges),
                                          float(values[:, j].std()))
        self._missing = {name: float(self.reference[name].isna().mean()) for name in [*self.numeric, *self.categorical]}
        self._cat = {}
        for name in self.categorical:
            counts = _counts(self.reference[name])
            self._cat[name] = _CategoricalRef({c: i for i, c in enumerate(counts)},
                                              np.array(list(counts.values()), dtype=float))
        self.n_reference = len(self.reference)

    def threshold(self, feature: str, distance: str) -> float:
        own = self.thresholds.get(feature)
        if isinstance(own, Mapping) and distance in own:
            return float(own[distance])
        default = MISSING_TOLERANCE if distance == "missing" else DEFAULT_THRESHOLDS[distance]
        return float(self.thresholds.get(distance, default))

    def compare(self, current: pd.DataFrame) -> pd.DataFrame:
        """Every statistic for every feature, the corrected p-values and the decision, one row a feature."""
        absent = [c for c in [*self.numeric, *self.categorical] if c not in current.columns]
        if absent:
            raise KeyError(f"the window has no column(s) {absent}")
        names, kinds, n = [], [], []
        tests, category_p = {}, {}   # a categorical feature: the test that ran (chi2 or fisher), its p-value
        columns = {key: [] for key in ("psi", "js", "linf", "ks", "wasserstein", "wasserstein_std", "chi2", "dof",
                                       "pooled")}
        values = np.sort(as_numbers(current, self.numeric, "the window"), axis=0)   # one sort for every column
        for j, name in enumerate(self.numeric):
            ref = self._num[name]
            cur = values[:, j]
            cur = cur[: len(cur) - int(np.isnan(cur).sum())]  # NaNs sort last
            if not len(cur):
                names.append(name), kinds.append("numeric"), n.append(0)
                for key in columns:
                    columns[key].append(np.nan)
                continue
            p_cur = sorted_proportions(cur, ref.edges)
            ks, w = cdf_gaps(ref.sorted_values, cur)
            names.append(name), kinds.append("numeric"), n.append(len(cur))
            for key, value in (("psi", psi(ref.proportions, p_cur)), ("js", js_distance(ref.proportions, p_cur)),
                               ("linf", float(np.abs(p_cur - ref.proportions).max())), ("ks", ks),
                               ("wasserstein", w), ("wasserstein_std", standardised(w, ref.std)),
                               ("chi2", np.nan), ("dof", np.nan), ("pooled", 0)):
                columns[key].append(value)
        for name in self.categorical:
            ref = self._cat[name]
            counts = _counts(current[name])
            unseen = [c for c in counts if c not in ref.index]
            ref_counts = np.concatenate([ref.counts, np.zeros(len(unseen))])
            cur_counts = np.zeros(len(ref_counts))
            for label, count in counts.items():
                cur_counts[ref.index[label] if label in ref.index else len(ref.counts) + unseen.index(label)] = count
            names.append(name), kinds.append("categorical"), n.append(int(cur_counts.sum()))
            if not cur_counts.sum():
                for key in columns:
                    columns[key].append(np.nan)
                continue
            p_ref, p_cur = ref_counts / ref_counts.sum(), cur_counts / cur_counts.sum()
            test, chi2, dof, p_test, pooled = category_test(ref_counts, cur_counts)   # distances see every category
            tests[name], category_p[name] = test, p_test
            for key, value in (("psi", psi(p_ref, p_cur)), ("js", js_distance(p_ref, p_cur)),
                               ("linf", float(np.abs(p_cur - p_ref).max())), ("ks", np.nan),
                               ("wasserstein", np.nan), ("wasserstein_std", np.nan), ("chi2", chi2), ("dof", dof),
                               ("pooled", pooled)):
                columns[key].append(value)
        stat = {key: np.array(values, dtype=float) for key, values in columns.items()}
        numeric = np.array(kinds) == "numeric"
        n = np.array(n)
        p_value = np.ones(len(names))
        if numeric.any():
            p_value[numeric] = ks_pvalues(stat["ks"][numeric], self.n_reference, n[numeric])
        for i, name in enumerate(names):
            if name in category_p:
                p_value[i] = category_p[name]
        empty = n == 0
        p_value[empty] = np.nan
        p_adjusted = np.full(len(names), np.nan)
        p_adjusted[~empty] = adjust_pvalues(p_value[~empty], self.correction)   # only what was tested
        if self.rule == "test":
            drifted = p_adjusted < self.alpha
        else:
            drifted = stat[self.rule] > np.array([self.threshold(f, self.rule) for f in names])
        # n counts each feature's values that arrived (not NaN, not None): the rest of the window is missing
        missing = 1 - n / len(current) if len(current) else np.full(len(names), np.nan)
        missing_rose = missing - np.array([self._missing[f] for f in names]) > \
            np.array([self.threshold(f, "missing") for f in names])
        status = np.where(empty, NO_DATA, np.where(missing_rose, "missing values",
                                                   np.where(drifted, "drifted", "stable")))
        del stat["dof"]
        pooled = stat.pop("pooled")
        return pd.DataFrame({"kind": kinds, "n": n, "missing": missing, **stat, "test": [tests.get(f, "ks") for f in names],
                             "pooled": np.nan_to_num(pooled).astype(int), "p_value": p_value, "p_adjusted": p_adjusted,
                             "drifted": (drifted | missing_rose) & ~empty, "status": status},
                            index=pd.Index(names, name="feature"))

    @staticmethod
    def drifted(report: pd.DataFrame) -> list[str]:
        return list(report.index[report["drifted"]])


def as_numbers(frame: pd.DataFrame, columns: list[str], what: str = "the data") -> np.ndarray:
    """The numeric ``columns`` of ``frame`` as one float array (missing values as NaN), whatever their dtype.

    A value that is not a number, or is infinite (it would turn the Wasserstein distance into NaN), is an error
    naming ``what``, the column and its first rows; so is a column that is absent.
    """
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise KeyError(f"{what} has no column(s) {absent}")
    if not columns:
        return np.empty((len(frame), 0))
    return np.column_stack([_column_as_numbers(frame[name], f"{what}: column {name!r}") for name in columns])


def _column_as_numbers(column: pd.Series, where: str) -> np.ndarray:
    if column.dtype.kind in "mM":     # pd.to_numeric would read a date as nanoseconds since 1970, silently
        raise ValueError(f"{where} holds dates or durations ({column.dtype}), not numbers: derive a number from "
                         f"them (an age in days, say) or leave the column out")
    if column.dtype.kind in "biuf":   # numbers already (the usual case): only infinities can be wrong
        values = column.to_numpy(dtype=float)
        if not np.isinf(values).any():
            return values
    values = pd.to_numeric(column, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = column.index[(np.isnan(values) & column.notna().to_numpy()) | np.isinf(values)]
    if len(bad):
        raise ValueError(f"{where} has {len(bad)} value(s) that are not finite numbers, in rows {list(bad[:5])}: "
                         f"{list(column.loc[bad[:3]])}")
    return values


def finite_values(values, what: str = "values") -> np.ndarray:
    """``values`` (array, list or Series) as a 1-D float array; anything that is not a finite number, missing values
    included, is an error naming ``what`` (and a Series' name) and the rows (positions, for an array)."""
    array = np.asarray(values)
    if array.dtype.kind in "biuf":   # the fast path: numbers already
        array = array.astype(float, copy=False)
        if np.isfinite(array).all():
            return array
    column = values if isinstance(values, pd.Series) else pd.Series(array)
    where = f"{what}: column {column.name!r}" if column.name is not None else f"{what}: values"
    numbers = _column_as_numbers(column, where)
    missing = column.index[np.isnan(numbers)]
    if len(missing):
        raise ValueError(f"{where} has {len(missing)} missing value(s), in rows {list(missing[:5])}")
    return numbers


def _refuse_missing(frame: pd.DataFrame, columns: list[str], values: np.ndarray) -> None:
    """The reference defines "normal": a missing numeric value there is an error naming the column and rows."""
    for j in np.flatnonzero(np.isnan(values).any(axis=0)):
        rows = frame.index[np.isnan(values[:, j])]
        raise ValueError(f"the reference: column {columns[j]!r} has {len(rows)} missing value(s), in rows "
                         f"{list(rows[:5])}; clean it first")


def standardised(distance: float, std: float) -> float:
    """A distance in units of the reference's standard deviation; from a constant (std 0), any move is infinite."""
    if std:
        return distance / std
    return np.inf if distance > 0 else 0.0


def _label(value) -> str:
    """A category as text, with numbers normalised: 1, 1.0 and np.int64(1) are the same category '1' (a float
    column that holds one missing value would otherwise read as a new category for every value)."""
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and \
            float(value).is_integer():
        return str(int(value))
    return str(value)


def _counts(column: pd.Series) -> dict:
    """Counts per category, keyed by the category as text (so 'rent' and a categorical 'rent' agree)."""
    if isinstance(column.dtype, pd.CategoricalDtype):  # fast path: count the integer codes
        codes = column.cat.codes.to_numpy()
        counts = np.bincount(codes[codes >= 0], minlength=len(column.cat.categories))
        pairs = zip(map(_label, column.cat.categories), counts.tolist())
    else:
        pairs = column.dropna().map(_label).value_counts(sort=False).items()
    out: dict = {}
    for label, count in pairs:
        out[label] = out.get(label, 0) + count
    return out


def detection_month(detector: DriftDetector, windows: Mapping[int, pd.DataFrame]) -> int | None:
    """The first key of ``windows`` (in order) whose comparison flags any feature; None if none does."""
    for key in sorted(windows):
        if detector.compare(windows[key])["drifted"].any():
            return key
    return None


def false_alarm_rate(reference: pd.DataFrame, make_window: Callable[[np.random.Generator], pd.DataFrame],
                     windows: int = 2000, *, seed: int = 0, **detector_options) -> float:
    """The share of ``windows`` unchanged windows that a :class:`DriftDetector` on ``reference`` flags.

    ``make_window(rng)`` draws one window from the reference's own distribution, so every alarm is a false one;
    ``detector_options`` go to the detector (``numeric``, ``categorical``, ``alpha``, ``correction``, ``rule``...).
    Calibrated, the rate is close to ``alpha`` (with ``correction="none"`` and one feature).

    >>> false_alarm_rate(reference, lambda rng: reference.sample(50, random_state=rng), 2000,
    ...                  numeric=[], categorical=["purpose"], correction="none")
    """
    detector = DriftDetector(reference, **detector_options)
    rng = np.random.default_rng(seed)
    return float(np.mean([detector.compare(make_window(rng))["drifted"].any() for _ in range(windows)]))
