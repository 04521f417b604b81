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
                           p-value (the asymptotic one of ``scipy.stats.ks_2samp(method="asymp")``).
``chi2``      categorical  chi-square test of homogeneity on the 2 x k table of counts, with a p-value
                           (``scipy.stats.chi2_contingency(table, correction=False)``).
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
raises a false alarm on about 43 % of perfectly stable windows.

What the statistics cannot see is judged around them. The share of ``missing`` values is a statistic of its own:
a feature whose share rises by more than ``MISSING_TOLERANCE`` is flagged (status ``missing values``), since the
distances only see the values that arrived. A feature with no value in the window gets no statistic and the
status ``INSUFFICIENT_DATA``, never "drifted". Numbers used as categories are normalised (1, 1.0 and a float
column's 1.0 are one category), and a value that is not a finite number is an error naming its column and rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

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


# ---- single-feature statistics: small, readable, and what the tests cross-check against scipy ----------
def quantile_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Interior bin edges at the reference's quantiles; bins are (-inf, e1], (e1, e2], ..., (ek, inf).

    Repeated values (a 36/60-month term) give repeated quantiles: duplicates are dropped, and so is an edge
    that would leave a bin of the reference empty, so every bin holds some of the reference.
    """
    reference = np.sort(np.asarray(reference, dtype=float))
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = edges[edges < reference[-1]]  # nothing above the top edge would be an empty last bin
    counts = np.diff(np.searchsorted(reference, edges, side="right"), prepend=0)
    return edges[counts > 0]


def bin_proportions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of ``values`` in each bin (x <= e1 is bin 0, e1 < x <= e2 bin 1, ..., x > ek the last)."""
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index between two vectors of proportions (each summing to 1).

    Empty bins are floored at ``EPS``, so a bin that empties out counts heavily but finitely.
    """
    e = np.clip(np.asarray(expected, dtype=float), EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), EPS, None)
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
    both = np.concatenate([ref_sorted, cur_sorted])
    order = np.argsort(both, kind="stable")  # two sorted runs: a linear merge
    union = both[order]
    from_ref = order < len(ref_sorted)
    gap = np.abs(np.cumsum(from_ref) / len(ref_sorted) - np.cumsum(~from_ref) / len(cur_sorted))[:-1]
    step = np.diff(union)
    return float(gap[step > 0].max(initial=0.0)), float(np.sum(gap * step))


def sorted_proportions(sorted_values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``bin_proportions`` for already sorted values: one binary search per edge instead of per value."""
    below = np.searchsorted(sorted_values, edges, side="right")
    return np.diff(below, prepend=0, append=len(sorted_values)) / max(len(sorted_values), 1)


def ks_pvalues(statistics, n_ref: int, n_cur) -> np.ndarray:
    """The two-sided asymptotic p-values that scipy.stats.ks_2samp(method='asymp') reports, vectorised.

    That is ``kstwo.sf(D, round(n*m/(n+m)))``, which takes tens of milliseconds when n*m/(n+m) is large
    or the p-value tiny. There (effective size above 10,000, or a p-value below 1e-6, a certain alarm
    however many features are tested) we return the limiting Kolmogorov distribution's value instead:
    within a few per cent of scipy's, and 100 times faster.
    """
    d = np.atleast_1d(np.asarray(statistics, dtype=float))
    n_cur = np.broadcast_to(np.asarray(n_cur, dtype=float), d.shape)
    big, small = np.maximum(n_ref, n_cur), np.minimum(n_ref, n_cur)
    en = np.round(big * small / (big + small))
    p = stats.kstwobign.sf(d * np.sqrt(en))
    exact = (en <= 10_000) & (p >= 1e-6)
    if exact.any():
        p[exact] = stats.kstwo.sf(d[exact], en[exact])
    return p


def ks_pvalue(statistic: float, n_ref: int, n_cur: int) -> float:
    """:func:`ks_pvalues` for one feature."""
    return float(ks_pvalues([statistic], n_ref, n_cur)[0])


def chi2_statistic(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, int]:
    """Pearson's chi-square statistic of the 2 x k table [ref_counts; cur_counts] and its degrees of freedom.

    Categories empty in both rows are dropped (they carry no information and would divide by zero).
    """
    table = np.vstack([ref_counts, cur_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    return float(np.sum((table - expected) ** 2 / expected)), table.shape[1] - 1


def chi2_homogeneity(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Chi-square test that two count vectors come from one distribution: (statistic, p-value).

    The same as ``scipy.stats.chi2_contingency([ref_counts, cur_counts], correction=False)``.
    """
    statistic, dof = chi2_statistic(ref_counts, cur_counts)
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
        values = _numeric(self.reference, self.numeric, "the reference")
        if np.isnan(values).any():
            raise ValueError("the reference has missing numeric values; clean it first")
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
        names, kinds, n = [], [], []
        columns = {key: [] for key in ("psi", "js", "linf", "ks", "wasserstein", "wasserstein_std", "chi2", "dof")}
        values = np.sort(_numeric(current, self.numeric, "the window"), axis=0)   # one sort for every column
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
                               ("wasserstein", w), ("wasserstein_std", w / ref.std if ref.std else np.nan),
                               ("chi2", np.nan), ("dof", np.nan)):
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
            chi2, dof = chi2_statistic(ref_counts, cur_counts)
            for key, value in (("psi", psi(p_ref, p_cur)), ("js", js_distance(p_ref, p_cur)),
                               ("linf", float(np.abs(p_cur - p_ref).max())), ("ks", np.nan),
                               ("wasserstein", np.nan), ("wasserstein_std", np.nan), ("chi2", chi2), ("dof", dof)):
                columns[key].append(value)
        stat = {key: np.array(values, dtype=float) for key, values in columns.items()}
        numeric = np.array(kinds) == "numeric"
        n = np.array(n)
        p_value = np.ones(len(names))
        if numeric.any():
            p_value[numeric] = ks_pvalues(stat["ks"][numeric], self.n_reference, n[numeric])
        tested = ~numeric & (stat["dof"] > 0)
        if tested.any():
            p_value[tested] = stats.chi2.sf(stat["chi2"][tested], stat["dof"][tested])
        empty = n == 0
        p_value[empty] = np.nan
        p_adjusted = np.full(len(names), np.nan)
        p_adjusted[~empty] = adjust_pvalues(p_value[~empty], self.correction)   # only what was tested
        if self.rule == "test":
            drifted = p_adjusted < self.alpha
        else:
            drifted = stat[self.rule] > np.array([self.threshold(f, self.rule) for f in names])
        missing = np.array([float(current[f].isna().mean()) if len(current) else np.nan for f in names])
        missing_rose = missing - np.array([self._missing[f] for f in names]) > \
            np.array([self.threshold(f, "missing") for f in names])
        status = np.where(empty, NO_DATA, np.where(missing_rose, "missing values",
                                                   np.where(drifted, "drifted", "stable")))
        del stat["dof"]
        return pd.DataFrame({"kind": kinds, "n": n, "missing": missing, **stat, "test": np.where(numeric, "ks", "chi2"),
                             "p_value": p_value, "p_adjusted": p_adjusted, "drifted": (drifted | missing_rose) & ~empty,
                             "status": status}, index=pd.Index(names, name="feature"))

    @staticmethod
    def drifted(report: pd.DataFrame) -> list[str]:
        return list(report.index[report["drifted"]])


def _numeric(frame: pd.DataFrame, columns: list[str], what: str) -> np.ndarray:
    """The numeric columns as one float array; a value that is not a number, or is infinite, is an error that
    names the column and the first rows (an infinity would turn the Wasserstein distance into NaN)."""
    if not columns:
        return np.empty((len(frame), 0))
    arrays = []
    for name in columns:
        column = pd.to_numeric(frame[name], errors="coerce")
        bad = frame.index[(column.isna() & frame[name].notna()) | np.isinf(column.to_numpy(dtype=float))]
        if len(bad):
            raise ValueError(f"{what}: column {name!r} has {len(bad)} value(s) that are not finite numbers, in rows "
                             f"{list(bad[:5])}: {list(frame.loc[bad[:3], name])}")
        arrays.append(column.to_numpy(dtype=float))
    return np.column_stack(arrays)


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
