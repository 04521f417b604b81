"""The data contract: the book's one definition of good data, as a pandera schema (chapters 06, 07 and 12).

A monthly export of the lender's applications table (``snapshot(stream.month(m), as_of)``, a file in
``data/raw/``) is good when

- every **column** the contract names is there (extra columns are allowed: the simulator's teaching-only
  ``*_unseen_by_lender`` columns, a ``month``);
- every value has the right **type**: exports arrive as CSV, where a column's dtype is whatever the reader
  guessed, so the contract checks each *value* (a number, a whole number, a date, true/false, a known
  category), not the pandas dtype;
- numbers are in their **range** (domain limits, not the simulator's: a credit score is 300 to 850 on the
  FICO scale, an applicant is an adult), features and identifiers are never **null**, ``application_id`` is
  **unique**, categories come from the **allowed** set;
- the **labels** follow the book's clock: a label may be ``<NA>`` (not known yet on the export's date, or a
  declined applicant, whose outcome the lender never observes), but a known label is 0 or 1, belongs to an
  approved loan, carries the date it became known, that date lies in the label's window after the
  application (``default``: 90 days to 12 months; ``early_delinquency``: exactly 3 + 1 months), and, given
  the export's date ``as_of``, no later than it (a label from the future).

:data:`SCHEMA` is that contract as a :class:`pandera.pandas.DataFrameSchema`. On top of it,
:func:`reference_checks` derives **statistical bounds** from a known-good reference month: each numeric
feature's mean and each category's share must stay within a tolerance of the reference's. The tolerance
is the sampling error of the difference between two monthly statistics, ``z * sd * sqrt(1/n + 1/n_ref)``
(n the batch's rows; sd the reference's for a mean, the pooled proportion's for a share, as in the
two-proportion test), with ``z`` set by Bonferroni so that a clean month, drawn from the reference's
distribution, trips at least one of the m bounds with probability at most ``false_alarm_rate`` (1 % by
default: about one false stop in eight years of monthly batches). The
sampling error is the right yardstick here because the book's stream is stationary unless a
:class:`~mlops_lab.simulator.Drift` is given: the months 2021 to 2023 differ only by sampling. Real months
also differ by season and marketing; there, estimate the spread from a stationary history instead (the
same formula with the observed month-to-month sd). ``tests/test_contract.py`` measures the false-alarm
rate over many clean months.

:func:`validate` runs the contract (and the bounds, given a reference) lazily, so every failure is
collected, and returns a :class:`ValidationReport`: one row per (check, column) with the number of rows,
example values, what was expected and the first failing row indices.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors
from scipy.stats import norm

from .simulator import (APPROVED, CATEGORICAL, EARLY_LABEL, EARLY_MONTHS, HOME, KNOWN, LABELS, NUMERIC,
                        OUTCOME_MONTHS, PURPOSES, REPORTING_LAG_MONTHS, TARGET, as_of_date)

# column -> (low, high, whole number?): domain limits of a valid application
RANGES = {
    "age": (18, 100, True), "income": (0, 5_000_000, False), "employment_years": (0, 80, False),
    "loan_amount": (100, 1_000_000, False), "debt_to_income": (0, 1.5, False),
    "credit_score": (300, 850, True), "open_accounts": (0, 100, True), "delinquencies_2y": (0, 50, True),
}
VALUES = {"loan_term": (36, 60), TARGET: (0, 1), EARLY_LABEL: (0, 1)}   # numeric columns with a fixed set
CATEGORIES = {"home_ownership": HOME, "purpose": PURPOSES}
# When each label can be known after its application (the book's clock): a default is 90+ days past due,
# so at least 90 days after it, and the 12-month outcome is known by 12 months; the early label is known
# exactly EARLY_MONTHS + REPORTING_LAG_MONTHS after it.
LABEL_WINDOW = {TARGET: (pd.DateOffset(days=90), pd.DateOffset(months=OUTCOME_MONTHS)),
                EARLY_LABEL: (pd.DateOffset(months=EARLY_MONTHS + REPORTING_LAG_MONTHS),) * 2}
PROBLEM_COLUMNS = ["check", "column", "rows", "examples", "expected", "row_index"]
SHOWN_INDICES = 5
FALSE_ALARM_RATE = 0.01
# pandera's built-in checks, in the report's words
BUILT_IN = {"not_nullable": ("missing values", "no missing values"),
            "column_in_dataframe": ("schema: column missing", "the column is present"),
            "multiple_fields_uniqueness": ("duplicate values", "each value once"),
            "field_uniqueness": ("duplicate values", "each value once")}


# ---- value checks: each is True where a value passes (a missing value passes: `nullable` decides) ------------
def _numbers(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce")   # text that is not a number becomes NaN


def _dates(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, errors="coerce", format="ISO8601")


def _approved(frame: pd.DataFrame) -> pd.Series:
    return frame[APPROVED].astype(str).str.lower().isin(["true", "1", "1.0"])


def is_number() -> pa.Check:
    return pa.Check(lambda s: s.isna() | _numbers(s).notna(), name="schema: not a number", error="a number")


def in_range(low: float, high: float) -> pa.Check:
    def passes(s):
        n = _numbers(s)
        return n.isna() | ((n >= low) & (n <= high))
    return pa.Check(passes, name=f"out of range [{low:g}, {high:g}]", error=f"between {low:g} and {high:g}")


def whole_number() -> pa.Check:
    return pa.Check(lambda s: (n := _numbers(s)).isna() | (n == n.round()), name="not a whole number",
                    error="a whole number")


def one_of(values) -> pa.Check:
    return pa.Check(lambda s: (n := _numbers(s)).isna() | n.isin(values), name="value not allowed",
                    error=f"one of {list(values)}")


def category(allowed) -> pa.Check:
    return pa.Check(lambda s: s.isna() | s.astype(str).isin(allowed), name="unknown category",
                    error=f"one of {list(allowed)}")


def is_date(as_of=None) -> list[pa.Check]:
    checks = [pa.Check(lambda s: s.isna() | _dates(s).notna(), name="schema: not a date",
                       error="a date (YYYY-MM-DD)")]
    if as_of is not None:
        day = as_of_date(as_of)
        checks.append(pa.Check(lambda s: (d := _dates(s)).isna() | (d <= day), name="after the export date",
                               error=f"on or before the export date {day.date()}"))
    return checks


def is_true_or_false() -> pa.Check:
    return pa.Check(lambda s: s.isna() | s.astype(str).str.lower().isin(["true", "false", "1", "0", "1.0", "0.0"]),
                    name="not true/false", error="True or False")


# ---- the clock's rules for labels (frame-level: they need several columns) -------------------------------------
@dataclass(frozen=True)
class LabelRule:
    """A rule of the book's clock; ``violated(frame)`` is True where a row breaks it."""

    name: str
    label: str
    expected: str
    needs: tuple
    rule: object = field(repr=False)

    def violated(self, frame: pd.DataFrame) -> pd.Series:
        if not set(self.needs) <= set(frame.columns):   # a missing column is reported by the schema itself
            return pd.Series(False, index=frame.index)
        return pd.Series(self.rule(frame), index=frame.index).fillna(False).astype(bool)

    def check(self) -> pa.Check:
        return pa.Check(lambda frame: ~self.violated(frame), name=self.name, error=self.expected)


def label_rules(as_of=None) -> list[LabelRule]:
    """The clock's rules for each label; ``as_of`` (the export's date) adds the two that need it."""
    rules = []
    for label in LABELS:
        known, (low, high) = KNOWN[label], LABEL_WINDOW[label]
        rules += [
            LabelRule("label on a declined application", label, "a label only on an approved loan (the lender "
                      "never observes a declined applicant's outcome)", (label, APPROVED),
                      lambda f, y=label: f[y].notna() & ~_approved(f)),
            LabelRule(f"label without {known}", label, f"a known label comes with {known}", (label, known),
                      lambda f, y=label, k=known: f[y].notna() & _dates(f[k]).isna()),
            LabelRule("label dated outside its window", label, f"{known} within the label's window after "
                      f"application_date", (label, known, "application_date"),
                      lambda f, y=label, k=known, lo=low, hi=high: f[y].notna() & _outside(f, k, lo, hi)),
        ]
        if as_of is not None:
            day = as_of_date(as_of)
            rules += [
                LabelRule("label from the future", label, f"{known} on or before the export date {day.date()}",
                          (label, known), lambda f, y=label, k=known, d=day: f[y].notna() & (_dates(f[k]) > d)),
                LabelRule("label missing after its window closed", label, f"a label on every approved loan "
                          f"whose window had closed by {day.date()}", (label, APPROVED, "application_date"),
                          lambda f, y=label, hi=high, d=day: f[y].isna() & _approved(f)
                          & (_dates(f["application_date"]) + hi <= d)),
            ]
    return rules


def _outside(frame, known_column, low, high) -> pd.Series:
    known, applied = _dates(frame[known_column]), _dates(frame["application_date"])
    return known.notna() & applied.notna() & ((known < applied + low) | (known > applied + high))


# ---- the schema ----------------------------------------------------------------------------------------------------
def contract_schema(*, require_label: bool = True, as_of=None) -> pa.DataFrameSchema:
    """The data contract. ``require_label=False`` (scoring requests) requires only the features and checks
    the record and label columns where present; ``as_of`` (the export's date) adds the checks that nothing
    in the export is dated after it."""
    columns = {name: pa.Column(None, [is_number(), in_range(low, high)] + ([whole_number()] if whole else []),
                               nullable=False)
               for name, (low, high, whole) in RANGES.items()}
    columns["loan_term"] = pa.Column(None, [is_number(), one_of(VALUES["loan_term"])], nullable=False)
    columns.update({name: pa.Column(None, category(allowed), nullable=False) for name, allowed in CATEGORIES.items()})
    columns["application_id"] = pa.Column(None, [is_number(), whole_number()], nullable=False, required=require_label)
    columns["application_date"] = pa.Column(None, is_date(as_of), nullable=False, required=require_label)
    columns[APPROVED] = pa.Column(None, is_true_or_false(), nullable=False, required=require_label)
    for label in LABELS:   # <NA> is the normal state of a label on the clock: nullable
        columns[label] = pa.Column(None, [is_number(), one_of(VALUES[label])], nullable=True, required=require_label)
        columns[KNOWN[label]] = pa.Column(None, is_date()[:1], nullable=True, required=require_label)
    return pa.DataFrameSchema(columns, checks=[rule.check() for rule in label_rules(as_of)], strict=False,
                              unique=["application_id"], report_duplicates="exclude_first",
                              name="credit applications export",
                              metadata={"label_rules": label_rules(as_of)})


SCHEMA = contract_schema()


# ---- statistical bounds from a reference month --------------------------------------------------------------------
@dataclass(frozen=True)
class ReferenceStats:
    """Means of the numeric features and shares of the categories in a known-good reference month.

    ``z_scores(batch)`` standardises each statistic's difference from the reference by its sampling error,
    ``sd * sqrt(1/n + 1/n_ref)``; a clean batch gives roughly standard normal z-scores.
    """

    values: pd.Series          # the reference's statistic, indexed by (column, statistic)
    sd: pd.Series              # the per-row standard deviation behind each statistic
    rows: int

    @classmethod
    def of(cls, reference: pd.DataFrame) -> "ReferenceStats":
        values, sd = {}, {}
        for column in NUMERIC:
            x = _numbers(reference[column]).dropna()
            values[(column, "mean")], sd[(column, "mean")] = x.mean(), x.std()
        for column in CATEGORICAL:
            text = reference[column].dropna().astype(str)
            for level in CATEGORIES[column]:
                p = float((text == level).mean())
                values[(column, f"share of {level!r}")], sd[(column, f"share of {level!r}")] = p, np.sqrt(p * (1 - p))
        return cls(pd.Series(values), pd.Series(sd), len(reference))

    def observed(self, batch: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        """Each statistic in ``batch`` and the rows it rests on (NaN and 0 for a column the batch lacks)."""
        values, rows = pd.Series(np.nan, index=self.values.index), pd.Series(0, index=self.values.index)
        for column in dict.fromkeys(c for c, _ in self.values.index):
            if column not in batch.columns:
                continue
            if column in CATEGORIES:
                text = batch[column].dropna().astype(str)
                shares = text.value_counts(normalize=True)
                for level in CATEGORIES[column]:
                    values[(column, f"share of {level!r}")] = shares.get(level, 0.0)
                    rows[(column, f"share of {level!r}")] = len(text)
            else:
                x = _numbers(batch[column]).dropna()
                values[(column, "mean")], rows[(column, "mean")] = x.mean(), len(x)
        return values, rows

    def standard_error(self, rows, values: pd.Series | None = None) -> pd.Series:
        """The sampling error of each statistic's difference at ``rows`` rows: ``sd * sqrt(1/n + 1/n_ref)``.

        A mean uses the reference's sd (a corrupt batch's own spread must not widen its bounds). A share uses
        the proportion pooled over both batches when the batch's ``values`` are given: the two-proportion
        test, whose error under "no change" does not shrink when the reference happened to draw a small share.
        """
        rows = pd.Series(np.maximum(np.asarray(rows, dtype=float), 1), index=self.values.index) \
            if np.ndim(rows) else pd.Series(max(float(rows), 1.0), index=self.values.index)
        sd = self.sd.copy()
        if values is not None:
            shares = [key for key in self.values.index if key[1] != "mean"]
            pooled = (self.values[shares] * self.rows + values[shares] * rows[shares]) / (self.rows + rows[shares])
            sd[shares] = np.sqrt(pooled * (1 - pooled))
        return sd * np.sqrt(1 / rows + 1 / self.rows)

    def z_scores(self, batch: pd.DataFrame) -> pd.Series:
        values, rows = self.observed(batch)
        return (values - self.values) / self.standard_error(rows, values)


def critical_z(statistics: int, false_alarm_rate: float = FALSE_ALARM_RATE) -> float:
    """Bonferroni: the |z| each of ``statistics`` two-sided bounds allows, so that a clean batch trips any of
    them with probability at most ``false_alarm_rate``."""
    return float(norm.ppf(1 - false_alarm_rate / (2 * statistics)))


def batch_statistics(frame: pd.DataFrame, rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cut ``frame`` into consecutive batches of ``rows`` and return each batch's statistics and per-row sds,
    with the columns of :class:`ReferenceStats` (vectorised: thousands of batches in a second)."""
    batch = np.arange(len(frame)) // rows
    numbers = frame[NUMERIC].astype(float).groupby(batch)
    values = {(c, "mean"): numbers[c].mean() for c in NUMERIC}
    sd = {(c, "mean"): numbers[c].std() for c in NUMERIC}
    for column, levels in CATEGORIES.items():
        shares = pd.crosstab(batch, frame[column].astype(str), normalize="index").reindex(columns=levels, fill_value=0)
        for level in levels:
            values[(column, f"share of {level!r}")] = shares[level]
            sd[(column, f"share of {level!r}")] = np.sqrt(shares[level] * (1 - shares[level]))
    return pd.DataFrame(values), pd.DataFrame(sd)


def reference_trials(stream, *, pairs: int = 1000, rows: int = 2000, shifts=(0.1, 0.2, 0.3, 0.5),
                     month: int = -30) -> pd.DataFrame:
    """Simulate the reference bounds: for each of ``pairs`` (reference month, new month) pairs the largest
    |z| over every statistic, for a clean new month (``shift`` 0) and for new months from a downturn of each
    strength in ``shifts`` (the simulator's covariate shift). A bound at ``z`` raises a false alarm on a
    clean month when its largest |z| exceeds ``z``, and misses a shifted month when it does not.

    Months of a stationary stream are independent draws of one distribution, so each is a slice of one
    large draw; the reference and the new month are always different slices.
    """
    from dataclasses import replace

    from .simulator import Drift

    reference, sd = batch_statistics(stream.month(month, rows * pairs), rows)
    shares = np.array([statistic != "mean" for _, statistic in reference.columns])
    out = []
    for shift in (0.0, *shifts):
        world = replace(stream, seed=stream.seed + 1, drift=Drift(covariate=shift, ramp_months=0))
        new, _ = batch_statistics(world.month(max(month, 0) if shift else month, rows * pairs), rows)
        pooled = (reference.to_numpy() + new.to_numpy()) / 2               # n = n_ref = rows
        per_row = np.where(shares, np.sqrt(np.clip(pooled * (1 - pooled), 0, None)), sd.to_numpy())
        z = np.abs(new.to_numpy() - reference.to_numpy()) / (per_row * np.sqrt(2 / rows))
        out.append(pd.DataFrame({"shift": shift, "max_abs_z": np.nanmax(z, axis=1)}))
    return pd.concat(out, ignore_index=True)


def trial_rates(trials: pd.DataFrame, z: float) -> pd.Series:
    """From :func:`reference_trials`: the share of months each bound at ``z`` flags, by shift (shift 0: the
    false-alarm rate; any other shift: the detection rate, one minus the miss rate)."""
    return trials.assign(flagged=trials["max_abs_z"] > z).groupby("shift")["flagged"].mean()


def reference_checks(reference: pd.DataFrame, *, false_alarm_rate: float = FALSE_ALARM_RATE,
                     z: float | None = None) -> pa.DataFrameSchema:
    """A pandera schema of statistical bounds taken from ``reference`` (a known-good month).

    One check per numeric feature's mean and per category's share; the tolerance is ``z`` sampling errors
    of the difference (see the module's docstring); ``z`` defaults to the Bonferroni value for
    ``false_alarm_rate`` over all the bounds.
    """
    stats = ReferenceStats.of(reference)
    z = critical_z(len(stats.values), false_alarm_rate) if z is None else float(z)
    columns = {}
    for column in dict.fromkeys(c for c, _ in stats.values.index):
        checks = []
        for statistic in stats.values[column].index:
            key = (column, statistic)

            def within(series, key=key):
                frame = series.to_frame()
                return bool(abs(stats.z_scores(frame)[key]) <= z)
            checks.append(pa.Check(within, name=f"{statistic} outside reference bounds",
                                   error=f"{statistic} {stats.values[key]:.4g} ± {z:.2f} sampling errors"))
        columns[column] = pa.Column(None, checks, required=False, nullable=True)
    return pa.DataFrameSchema(columns, strict=False, name="reference bounds",
                              metadata={"reference": stats, "z": z})


# ---- validation and its report -------------------------------------------------------------------------------------
@dataclass
class ValidationReport:
    """What is wrong with a batch: one row per (check, column) with the rows affected, example values, what was
    expected and the first failing row indices. ``ok`` when there is nothing."""

    name: str
    rows: int
    problems: pd.DataFrame

    @property
    def ok(self) -> bool:
        return self.problems.empty

    def to_markdown(self) -> str:
        head = f"### Batch `{self.name}`: {self.rows} rows, "
        if self.ok:
            return head + "passes every check."
        shown = self.problems.assign(row_index=self.problems["row_index"].map(
            lambda idx: ", ".join(map(str, idx)) + (" ..." if len(idx) == SHOWN_INDICES else "")))
        return (head + f"**fails the contract**: {len(self.problems)} problem(s)\n\n"
                + shown.to_markdown(index=False))

    def to_dict(self) -> dict:
        return {"name": self.name, "rows": int(self.rows), "ok": self.ok,
                "problems": [{"check": str(p.check), "column": str(p.column), "rows": int(p.rows),
                              "examples": str(p.examples), "expected": str(p.expected),
                              "row_index": [int(i) for i in p.row_index]}
                             for p in self.problems.itertuples()]}


def validate(frame: pd.DataFrame, name: str = "batch", *, require_label: bool = True, reference=None,
             as_of=None, false_alarm_rate: float = FALSE_ALARM_RATE) -> ValidationReport:
    """Check ``frame`` against the data contract, and against bounds from ``reference`` (a known-good month,
    or the schema :func:`reference_checks` made from one) if given; every failure is collected.

    ``as_of`` is the export's date: nothing in it may be dated later (a label from the future).
    """
    frame = frame.reset_index(drop=True)
    schemas = [contract_schema(require_label=require_label, as_of=as_of)]
    if reference is not None:
        schemas.append(reference if isinstance(reference, pa.DataFrameSchema)
                       else reference_checks(reference, false_alarm_rate=false_alarm_rate))
    problems = [row for schema in schemas for row in _problems(schema, frame)]
    return ValidationReport(name, len(frame), pd.DataFrame(problems, columns=PROBLEM_COLUMNS))


def _problems(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> list[dict]:
    try:
        schema.validate(frame, lazy=True)
        return []
    except SchemaErrors as errors:
        cases = errors.failure_cases
    rules = schema.metadata.get("label_rules", []) if schema.metadata else []
    frame_level = (cases["schema_context"] == "DataFrameSchema") & cases["check_number"].notna()
    cases.loc[frame_level, "column"] = None   # pandera lists a frame-level failure once per column: count rows once
    missing = cases["check"] == "column_in_dataframe"
    cases.loc[missing, "column"] = cases.loc[missing, "failure_case"]   # a missing column names itself
    out = []
    keys = ["schema_context", "column", "check", "check_number"]
    for (context, column, check, number), group in cases.groupby(keys, dropna=False, sort=False):
        indices = sorted({int(i) for i in group["index"].dropna()})
        if context == "DataFrameSchema" and pd.notna(number) and int(number) < len(schema.checks):
            rule = rules[int(number)]            # a clock rule: report it on its label column
            name, column, expected = rule.name, rule.label, rule.expected
            source = "application_id" if "application_id" in frame else rule.label
            examples = frame.loc[indices, source].tolist() if indices else []
        elif context == "Column" and pd.notna(number):
            pandera_check = schema.columns[column].checks[int(number)]
            name, expected = pandera_check.name, pandera_check.error
            examples = group["failure_case"].tolist()
        else:                                      # pandera's built-in checks
            name, expected = BUILT_IN.get(str(check), (str(check), ""))
            examples = group["failure_case"].tolist()
            if check == "column_in_dataframe":
                examples = []
            elif "uniqueness" in str(check):
                column = "application_id"
        rows = len(indices) if indices else len(frame)
        if name.endswith("outside reference bounds"):
            examples, rows, expected = _observed(schema, frame, column, name)
        out.append({"check": name, "column": column, "rows": rows, "examples": _examples(examples),
                    "expected": expected, "row_index": indices[:SHOWN_INDICES]})
    return out


def _observed(schema, frame, column, name) -> tuple[list, int, str]:
    """A failed bound: the batch's value (and its z-score), its rows, and the tolerance at that many rows."""
    stats: ReferenceStats = schema.metadata["reference"]
    key = (column, name.removesuffix(" outside reference bounds"))
    values, rows = stats.observed(frame[[column]])
    z = stats.z_scores(frame[[column]])[key]
    tolerance = schema.metadata["z"] * stats.standard_error(rows, values)[key]
    expected = (f"{key[1]} {stats.values[key]:.4g} ± {tolerance:.3g} ({schema.metadata['z']:.2f} sampling errors "
                f"at {int(rows[key])} rows)")
    return [f"{values[key]:.4g} (z = {z:+.1f})"], int(rows[key]), expected


def _examples(values) -> str:
    unique = list(dict.fromkeys(str(v) for v in values))
    return ", ".join(unique[:3])


# ---- faulty exports: one per kind of fault the contract exists for (chapter 06, tests) ------------------------------
@dataclass(frozen=True)
class Fault:
    """A kind of bad export: what went wrong upstream, and how to make one from a good month."""

    name: str
    story: str
    make: object = field(repr=False)   # (export, world, as_of, rows: index of the rows hit) -> export


def _hit(export: pd.DataFrame, share: float, rng: np.random.Generator, where=None) -> pd.Index:
    pool = export.index if where is None else export.index[where]
    return pd.Index(rng.choice(pool, size=max(1, int(round(share * len(export)))), replace=False))


def _set(export, rows, column, values, dtype=None):
    out = export.copy()
    if dtype is not None:
        out[column] = out[column].astype(dtype)
    out.loc[rows, column] = values
    return out


def _declined_repaid(export, world, as_of, rows):
    """A join filled every missing outcome with 0: declined applicants 'repaid', dated as if matured."""
    out = export.copy()
    declined = ~_approved(out)
    for label in LABELS:
        out[label] = out[label].astype("Float64")
        out.loc[declined, label] = 0
        out.loc[declined, KNOWN[label]] = out.loc[declined, "application_date"] + LABEL_WINDOW[label][1]
    return out


def _labels_lost(export, world, as_of, rows):
    """The outcome join lost some loans: approved, window closed, and no label."""
    out = export.copy()
    loans = rows.intersection(out.index[_approved(out)])
    for label in LABELS:
        out[label] = out[label].astype("Float64")
        out.loc[loans, label] = pd.NA
        out.loc[loans, KNOWN[label]] = pd.NaT
    return out


def _from_the_future(export, world, as_of, rows):
    """The export job ran three months late but kept its name: outcomes known after as_of leaked in."""
    from .simulator import snapshot
    late = snapshot(world, as_of_date(as_of) + pd.DateOffset(months=3))
    return late[late["application_date"] <= as_of_date(as_of)].reset_index(drop=True)


def _shifted(export, world, as_of, rows):
    """A marketing campaign brought in a different population: every value valid, the mix moved."""
    from dataclasses import replace

    from .simulator import Drift, incumbent_policy, lend, snapshot
    # Applicants of a half-strength downturn (the simulator's covariate shift 0.5), applying on the same days
    # under the same ids; the incumbent policy decides them and the clock dates their outcomes again.
    moved = replace(world.attrs["stream"], drift=Drift(covariate=0.5, ramp_months=0)).month(0, rows=len(world))
    moved[["application_id", "month", "application_date"]] = world[["application_id", "month", "application_date"]]
    return snapshot(lend(moved, incumbent_policy(moved)), as_of)


def _swapped(export, world, as_of, rows):
    """A join mapped the outcome codes the wrong way round: every known 0 is a 1 and every 1 a 0."""
    out = export.copy()
    for label in LABELS:
        out[label] = 1 - out[label]
    return out


FAULTS = {fault.name: fault for fault in [
    Fault("missing column", "An upstream rename: debt_to_income arrives as dti",
          lambda e, w, a, r: e.rename(columns={"debt_to_income": "dti"})),
    Fault("wrong type", "A locale change: some incomes arrive as text with a thousands separator, '52,300'",
          lambda e, w, a, r: _set(e, r, "income", [f"{v:,.0f}" for v in e.loc[r, "income"]], object)),
    Fault("out of range", "A unit change: some debt-to-income ratios arrive in per cent",
          lambda e, w, a, r: _set(e, r, "debt_to_income", e.loc[r, "debt_to_income"] * 100)),
    Fault("nulls", "A failed join: some incomes are missing",
          lambda e, w, a, r: _set(e, r, "income", np.nan)),
    Fault("duplicate ids", "A retried export job appended some rows twice",
          lambda e, w, a, r: pd.concat([e, e.loc[r]], ignore_index=True)),
    Fault("unknown category", "A new spelling upstream: 'debt consolidation' with a space",
          lambda e, w, a, r: _set(e, r, "purpose", "debt consolidation", object)),
    Fault("label from the future", _from_the_future.__doc__, _from_the_future),
    Fault("label on a declined loan", _declined_repaid.__doc__, _declined_repaid),
    Fault("label missing after its window", _labels_lost.__doc__, _labels_lost),
    Fault("shifted distribution", _shifted.__doc__, _shifted),
    Fault("swapped labels", _swapped.__doc__, _swapped),
]}


def faulty_export(stream, month: int, fault: str, *, as_of, share: float = 0.03, seed: int = 0) -> pd.DataFrame:
    """``snapshot(stream.month(month), as_of)`` with one fault of :data:`FAULTS` (``share`` of the rows hit,
    where the fault hits rows). ``fault=None`` gives the clean export."""
    from .simulator import snapshot
    world = stream.month(month)
    world.attrs["stream"] = stream
    export = snapshot(world, as_of)
    if fault is None:
        return export
    if fault not in FAULTS:
        raise ValueError(f"fault must be one of {list(FAULTS)}, got {fault!r}")
    rng = np.random.default_rng([seed, month % 2**32])
    where = export["purpose"].astype(str).eq("debt_consolidation").to_numpy() if fault == "unknown category" else None
    return FAULTS[fault].make(export, world, as_of, _hit(export, share, rng, where)).reset_index(drop=True)
