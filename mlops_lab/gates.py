"""The model-validation gate of a Level 1 pipeline: promote a candidate only when it is better beyond the noise.

The gate scores the challenger and the champion on the *same* holdout, every label known on the run's date
``as_of`` (the book's clock: :func:`~mlops_lab.simulator.check_known` runs first), and promotes only if every
check passes:

1. **AUC gain.** The one-sided (1 - alpha) lower confidence bound of AUC(challenger) - AUC(champion) exceeds
   ``margin`` (alpha = 0.05: a 95 % bound). The bound is DeLong's, for two correlated ROC curves (Sun and Xu's
   fast algorithm): both models rank the same loans, so their AUCs move together and the paired difference
   is far less noisy than either AUC. A paired bootstrap (rows resampled, both scores together) finds the
   same interval by brute force and is reported beside it. ``margin=0`` asks "better, beyond the noise?";
   a margin above 0 asks "better by enough to be worth a release?". So a challenger that is *not* better is
   promoted at most alpha of the time; :func:`simulate_gate` measures both error rates for any margin.
2. **Business cost.** The book's one cost rule, chapter 03's ``cost_per_application`` (the DVC project's
   ``evaluate`` parameters): a missed default costs ``COST_FN`` = 5, a good applicant declined
   ``COST_FP`` = 1. The lender declines when P(default) >= the break-even threshold 1 / (1 + 5), where
   approving and declining cost the same in expectation. The check fails when the challenger's cost per
   application is higher beyond the noise: the one-sided (1 - alpha) lower bound of the paired bootstrap
   increase is above 0.
3. **Slices** (chapter 06's ``model_tests.slices``: purpose, home ownership, term, age band). A slice fails
   when its AUC falls below the champion's on that slice by more than z x its own standard error (DeLong,
   paired, on the slice's loans), with z = z(1 - alpha / k) for k slices (Bonferroni): a challenger as
   good as the champion on every slice fails one with probability at most alpha.

Checks 2 and 3 only ever reject, so they keep false promotions at most alpha; each can reject a truly
better model that is equal on cost or slices (at most alpha of the time). With no champion yet, the
champion is the incumbent policy (:class:`Incumbent`): it ranks by credit score and approved every loan of
the holdout, and the first model must beat it the same way.
"""
from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats

from .dvc_project import DEFAULT_PARAMS
from .simulator import FEATURES, TARGET, as_of_date, check_known

ALPHA = 0.05        # one-sided: a challenger that is not better is promoted at most 5 % of the time
MARGIN = 0.0        # "better beyond the noise"; chapter 07's widget shows what a larger margin costs and buys
N_BOOT = 1000       # the bootstrap's 5 % quantile then has a Monte-Carlo error of 0.07 standard errors
MIN_CLASS = 10      # a slice is judged with at least 10 defaults and 10 repaid loans
# Cost per application: the book's one rule, chapter 03's (a missed default costs five declined payers).
COST_FN = DEFAULT_PARAMS["evaluate"]["cost_missed_default"]     # 5.0
COST_FP = DEFAULT_PARAMS["evaluate"]["cost_declined_payer"]     # 1.0
BREAK_EVEN = COST_FP / (COST_FP + COST_FN)   # decline when p x COST_FN > (1 - p) x COST_FP: p > 1/6


@dataclass(frozen=True)
class GateVerdict:
    """What the gate decided and its evidence; ``checks`` are dicts: name, value, threshold, passed."""

    passed: bool
    reason: str                  # one readable sentence
    checks: list
    auc_challenger: float
    auc_champion: float
    diff: float                  # AUC(challenger) - AUC(champion), same rows
    diff_se: float               # DeLong's standard error of diff
    lower_bound: float           # DeLong's one-sided (1 - alpha) lower bound of diff
    p_value: float               # DeLong, one-sided, of "diff <= margin"
    boot_low: float              # paired bootstrap: the alpha and 1 - alpha quantiles of diff
    boot_high: float
    cost_challenger: float       # expected cost per application at the threshold
    cost_champion: float
    rows: int
    positives: int
    margin: float
    alpha: float
    threshold: float
    champion: str = "champion"   # what the challenger was compared with ("incumbent policy": a first model)
    as_of: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GateVerdict":
        return cls(**data)

    def failed(self) -> list[str]:
        return [check["name"] for check in self.checks if not check["passed"]]

    def __str__(self) -> str:
        return f"{'PASSED' if self.passed else 'REJECTED'}: {self.reason}"


def _check(name: str, value: float, threshold: float, passed: bool) -> dict:
    return {"name": name, "value": float(value), "threshold": float(threshold), "passed": bool(passed)}


def _diff_se(cov) -> float:
    """The standard error of AUC(second) - AUC(first) from their 2 x 2 covariance."""
    return float(np.sqrt(max(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1], 0.0)))


def delong(y, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs of ``scores`` (models x rows) and their covariance, by DeLong's method (Sun and Xu's midranks).

    Also returns the variances of the per-loan placement differences of the last and first model,
    ``(S10, S01)``: a holdout of ``m`` defaults and ``n`` repaid loans like these has Var(diff) ~ S10 / m +
    S01 / n, which says how large a holdout a given margin needs.
    """
    y = np.asarray(y).astype(bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=float))
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise ValueError(f"the AUC needs at least 2 defaults and 2 repaid loans, got {m} and {n}")
    ranks = stats.rankdata(np.hstack([pos, neg]), axis=1)
    v10 = (ranks[:, :m] - stats.rankdata(pos, axis=1)) / n        # share of repaid loans ranked below a default
    v01 = 1 - (ranks[:, m:] - stats.rankdata(neg, axis=1)) / m    # share of defaults ranked above a repaid loan
    cov = np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n
    components = np.array([np.var(v10[-1] - v10[0], ddof=1), np.var(v01[-1] - v01[0], ddof=1)])
    return v10.mean(axis=1), cov, components


def resample_counts(rows: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """How often each row is drawn in each of ``n_boot`` bootstrap resamples (resamples x rows)."""
    draws = np.random.default_rng(seed).integers(0, rows, size=(n_boot, rows))
    flat = (draws + rows * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * rows).reshape(n_boot, rows).astype(np.float32)


def bootstrap_aucs(y, scores, counts) -> np.ndarray:
    """The AUC of each model (``scores``: models x rows) on each resample (``counts``: resamples x rows).

    Sort each model's scores once, add up the resampled defaults and repaid loans per distinct score, and
    count the pairs in order: every resample at once, no Python loop over resamples.
    """
    y, out = np.asarray(y).astype(float), []
    for s in np.atleast_2d(scores):
        order = np.argsort(s, kind="stable")
        pos, neg = counts[:, order] * y[order], counts[:, order] * (1 - y[order])
        ties = np.flatnonzero(np.r_[True, np.diff(s[order]) != 0])
        if len(ties) < len(s):                                      # tied scores count one half
            pos, neg = np.add.reduceat(pos, ties, axis=1), np.add.reduceat(neg, ties, axis=1)
        below = np.cumsum(neg, axis=1) - neg
        with np.errstate(invalid="ignore", divide="ignore"):      # a resample without defaults: NaN
            out.append((pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1)))
    return np.array(out)


def expected_cost(y, p, *, threshold: float = BREAK_EVEN, cost_fn: float = COST_FN, cost_fp: float = COST_FP,
                  amount=None) -> np.ndarray:
    """Each application's cost when declined at ``p >= threshold``, in units of ``amount`` (1 if None)."""
    y, decline = np.asarray(y).astype(bool), np.asarray(p) >= threshold
    amount = 1.0 if amount is None else np.asarray(amount, dtype=float)
    return amount * (cost_fn * (y & ~decline) + cost_fp * (~y & decline))


def compare(y, p_champion, p_challenger, *, margin: float = MARGIN, alpha: float = ALPHA,
            threshold: float = BREAK_EVEN, cost_fn: float = COST_FN, cost_fp: float = COST_FP, amount=None,
            n_boot: int = N_BOOT, seed: int = 0, champion: str = "champion", as_of=None) -> GateVerdict:
    """The gate's AUC and cost checks on one holdout's labels and both models' scores (pure numbers)."""
    y = np.asarray(y).astype(int)
    scores = np.vstack([np.asarray(p_champion, dtype=float), np.asarray(p_challenger, dtype=float)])
    if scores.shape[1] != len(y):
        raise ValueError(f"both models need one score per row: {scores.shape[1]} scores for {len(y)} rows")
    auc, cov, _ = delong(y, scores)
    diff, se = auc[1] - auc[0], _diff_se(cov)
    lower = diff - stats.norm.ppf(1 - alpha) * se
    p_value = float(stats.norm.sf((diff - margin) / se)) if se > 0 else float(diff <= margin)
    counts = resample_counts(len(y), n_boot, seed)
    boot = bootstrap_aucs(y, scores, counts)
    boot_low, boot_high = np.nanquantile(boot[1] - boot[0], [alpha, 1 - alpha])
    costs = [expected_cost(y, p, threshold=threshold, cost_fn=cost_fn, cost_fp=cost_fp, amount=amount)
             for p in scores]
    cost_low = np.quantile(counts @ (costs[1] - costs[0]) / len(y), alpha)   # same resamples: paired
    checks = [_check("auc_gain_lower_bound", lower, margin, lower > margin),
              _check("cost_increase_lower_bound", cost_low, 0.0, cost_low <= 0)]
    return _decided(GateVerdict(
        passed=False, reason="", checks=checks, auc_challenger=float(auc[1]), auc_champion=float(auc[0]),
        diff=float(diff), diff_se=se, lower_bound=float(lower), p_value=p_value, boot_low=float(boot_low),
        boot_high=float(boot_high), cost_challenger=float(costs[1].mean()), cost_champion=float(costs[0].mean()),
        rows=len(y), positives=int(y.sum()), margin=float(margin), alpha=float(alpha), threshold=float(threshold),
        champion=champion, as_of=None if as_of is None else str(as_of_date(as_of).date())))


def _decided(v: GateVerdict, checks: list | None = None) -> GateVerdict:
    """``v`` with ``checks``, passed only if every check passed, and its reason in one sentence."""
    checks = v.checks if checks is None else checks
    failed = [c["name"] for c in checks if not c["passed"]]
    known = f" known by {v.as_of}" if v.as_of else ""
    reason = (f"{'reject (failed: ' + ', '.join(failed) + ')' if failed else 'promote'}: AUC "
              f"{v.auc_challenger:.4f} vs {v.champion} {v.auc_champion:.4f} on the same {v.rows:,} loans{known}: "
              f"gain {v.diff:+.4f}, {1 - v.alpha:.0%} lower bound {v.lower_bound:+.4f} "
              f"{'>' if v.lower_bound > v.margin else '<='} margin {v.margin:+.4f}; cost per application "
              f"{v.cost_challenger:,.2f} vs {v.cost_champion:,.2f}")
    return GateVerdict(**{**v.to_dict(), "checks": checks, "passed": not failed, "reason": reason})


class Incumbent:
    """The policy before any model, as a scorer: risk falls with the credit score, and it declines none of
    the holdout's loans (it approved them all), so its probabilities stay far below any threshold."""

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        risk = (1000 - frame["credit_score"].to_numpy(dtype=float)) * 1e-6
        return np.column_stack([1 - risk, risk])


def judge(challenger, champion, holdout: pd.DataFrame, *, as_of, margin: float = MARGIN, label: str = TARGET,
          slices: bool = True, alpha: float = ALPHA, threshold: float = BREAK_EVEN, cost_fn: float = COST_FN,
          cost_fp: float = COST_FP, n_boot: int = N_BOOT, seed: int = 0) -> GateVerdict:
    """Judge ``challenger`` against ``champion`` (None: the :class:`Incumbent`) on ``holdout`` on ``as_of``.

    No side effects: registering a model that passed is :func:`register_if_passed`'s job.
    """
    check_known(holdout, as_of, label)      # first: a label from after as_of stops the gate before anything
    name = "champion" if champion is not None else "incumbent policy"
    champion = champion if champion is not None else Incumbent()
    y = holdout[label].to_numpy(dtype=int)
    scores = [model.predict_proba(holdout[FEATURES])[:, 1] for model in (champion, challenger)]
    verdict = compare(y, *scores, margin=margin, alpha=alpha, threshold=threshold, cost_fn=cost_fn,
                      cost_fp=cost_fp, n_boot=n_boot, seed=seed, champion=name,
                      as_of=as_of)
    return _decided(verdict, verdict.checks + slice_checks(y, *scores, holdout, alpha=alpha)) if slices else verdict


def slice_checks(y, p_champion, p_challenger, holdout: pd.DataFrame, *, alpha: float = ALPHA,
                 min_class: int = MIN_CLASS) -> list[dict]:
    """One check per slice of chapter 06 (``model_tests.slices``: purpose, home ownership, term, age band).

    A slice passes when its AUC change is >= -z(1 - alpha/k) x its DeLong standard error (paired, on the
    slice's rows), k the slices judged. A slice with fewer than ``min_class`` defaults or repaid loans is
    too small to judge (DeLong's normal approximation needs some of each) and is left out.
    """
    from .model_tests import slices           # imported here: the gate's other checks work without chapter 06

    y, scores = np.asarray(y).astype(int), np.vstack([p_champion, p_challenger])
    judged = {name: mask for name, mask in slices(holdout).items() if name != "all"
              and min(y[mask].sum(), (1 - y[mask]).sum()) >= min_class}
    z = stats.norm.ppf(1 - alpha / max(len(judged), 1))
    checks = []
    for name, mask in judged.items():
        auc, cov, _ = delong(y[mask], scores[:, mask])
        allowed = -z * _diff_se(cov)
        checks.append(_check(f"slice {name}", auc[1] - auc[0], allowed, auc[1] - auc[0] >= allowed))
    return checks


# ---- how often the AUC rule errs, by simulation -----------------------------------------------------------
# A binormal ROC model calibrated to the credit model on a month's approved loans (seeds 0-2: trained on the
# newest complete 3-month window on 2024-01-01, scored on a fresh draw of its newest month): AUC 0.74-0.76,
# default rate 8.6-9.2 %, defaulters' logit scores 0.86-0.89 times as spread as repaid loans', and a
# within-class correlation of 0.97-0.99 with a model trained on the neighbouring window. test_gates.py
# measures them again on the simulator.
SIM_AUC, SIM_DEFAULT_RATE, SIM_SD_RATIO, SIM_RHO = 0.75, 0.088, 0.87, 0.98
_LOW, _WIDTH, _GRID = -6.0, 0.0075, 2400      # scores counted on a grid from -6 to +12 standard deviations


@functools.lru_cache(maxsize=32)              # a margin slider then redraws without simulating again
def _simulated_gains(true_gain: float, rows: int, n_sim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's AUC gain and its standard error on ``n_sim`` simulated holdouts of ``rows`` loans each
    (``rows x SIM_DEFAULT_RATE`` defaults), all at once: placements come from a histogram per holdout."""
    rng = np.random.default_rng(seed)
    m = max(2, round(rows * SIM_DEFAULT_RATE))
    n = rows - m
    shifts = np.sqrt(1 + SIM_SD_RATIO**2) * stats.norm.ppf([SIM_AUC, SIM_AUC + true_gain])   # AUC = Phi(d/..)
    offset = _GRID * np.arange(n_sim, dtype=np.int32)[:, None]

    def binned(size, sd, shift):              # champion's and challenger's scores, noise correlated SIM_RHO
        a, b = rng.standard_normal((2, n_sim, size))
        both = sd * np.stack([a, SIM_RHO * a + np.sqrt(1 - SIM_RHO**2) * b]) + np.reshape(shift, (2, 1, 1))
        return np.clip(((both - _LOW) / _WIDTH).astype(np.int32), 0, _GRID - 1) + offset

    def placements(bins, others, count):      # share of ``others`` below each score, ties counting one half
        hist = np.bincount(others.ravel(), minlength=n_sim * _GRID).reshape(n_sim, _GRID)
        return (np.cumsum(hist, axis=1) - 0.5 * hist).ravel()[bins] / count

    pos, neg = binned(m, SIM_SD_RATIO, shifts), binned(n, 1.0, np.zeros(2))
    d10 = placements(pos[1], neg[1], n) - placements(pos[0], neg[0], n)
    d01 = placements(neg[0], pos[0], m) - placements(neg[1], pos[1], m)
    return d10.mean(axis=1), np.sqrt(d10.var(axis=1, ddof=1) / m + d01.var(axis=1, ddof=1) / n)


def simulate_gate(margin: float, true_gain: float, *, rows: int = 2000, n_sim: int = 2000, seed: int = 0,
                  alpha: float = ALPHA) -> dict:
    """How often the AUC rule promotes a challenger whose true AUC gain is ``true_gain``.

    ``true_gain <= 0`` (not better): that rate is the false-promotion rate; ``> 0``: one minus it is the
    missed-improvement rate. ``mc_error`` is the rate's Monte-Carlo standard error.
    """
    diff, se = _simulated_gains(float(true_gain), int(rows), int(n_sim), int(seed))
    rate = float(np.mean(diff - stats.norm.ppf(1 - alpha) * se > margin))
    return {"margin": margin, "true_gain": true_gain, "rows": rows, "n_sim": n_sim, "promotion_rate": rate,
            "false_promotion_rate": rate if true_gain <= 0 else None,
            "missed_improvement_rate": 1 - rate if true_gain > 0 else None,
            "mc_error": float(np.sqrt(max(rate * (1 - rate), 1 / n_sim) / n_sim))}


def margin_figure(true_gain: float = 0.01, *, margin: float | None = None, rows: int = 2000, n_sim: int = 1000,
                  seed: int = 0, alpha: float = ALPHA, max_margin: float = 0.02):
    """Both error rates against the margin: false promotions (a challenger exactly as good as the champion)
    and missed improvements (one ``true_gain`` better), on simulated holdouts; ``margin`` marked if given."""
    import matplotlib.pyplot as plt

    from .figures import BLUE, GREY, ORANGE, use_book_style

    use_book_style()
    margins = np.linspace(0, max_margin, 81)
    promoted = {}
    for gain in (0.0, true_gain):
        diff, se = _simulated_gains(float(gain), int(rows), int(n_sim), int(seed))
        promoted[gain] = ((diff - stats.norm.ppf(1 - alpha) * se)[None, :] > margins[:, None]).mean(axis=1)
    fig, ax = plt.subplots()
    ax.plot(margins, promoted[0.0], color=ORANGE, label="false promotion: the challenger is no better")
    ax.plot(margins, 1 - promoted[true_gain], color=BLUE, label=f"missed improvement: it is {true_gain:+.3f} better")
    if margin is not None:
        ax.axvline(margin, color=GREY, linestyle="--", label=f"margin {margin:.3f}")
    ax.set(xlabel="margin (the AUC gain's lower bound must exceed it)", ylabel="share of gate runs", ylim=(0, 1),
           title=f"The gate's two errors, {rows:,} loans a holdout ({n_sim:,} simulated, one-sided alpha {alpha})")
    ax.legend(loc="center right")
    fig.tight_layout()
    return fig


def register_if_passed(verdict: GateVerdict, model_uri: str, name: str, *, client=None, tags: dict | None = None,
                       alias: str = "champion"):
    """Register ``model_uri`` as a version of ``name`` and point ``alias`` at it, only if ``verdict.passed``.

    ``alias`` is ``champion`` at Level 1 (the gate releases it) or ``challenger`` at Level 2, where the
    ``champion`` alias moves only after a canary has passed (chapter 13).

    A rejected candidate returns None: nothing registered, no alias moved. The verdict becomes the version's
    ``gate.*`` tags. If the alias cannot be moved the new version is deleted again, so nothing is left
    half-registered. ``client`` must reach the active tracking server, where ``registry.register`` writes.
    """
    from mlflow import MlflowClient

    from .registry import CHALLENGER, CHAMPION, register, set_alias

    if alias not in (CHAMPION, CHALLENGER):
        raise ValueError(f"a gate releases to champion or challenger, not {alias!r}")
    if not verdict.passed:
        return None
    client = client or MlflowClient()
    evidence = {f"gate.{key}": str(value) for key, value in verdict.to_dict().items() if key != "checks"}
    evidence["gate.checks"] = json.dumps([{"name": c["name"], "passed": c["passed"]} for c in verdict.checks])
    version = register(model_uri, name, tags={**evidence, **(tags or {})})
    try:
        set_alias(name, alias, version.version, client)
    except Exception:
        client.delete_model_version(name, str(version.version))
        raise
    return version
