"""Data tests: every raw export meets the data contract (the book's one pandera schema, mlops_lab.contract),
and the months this run learns and is judged on stay within the statistical bounds of a reference month."""
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops_lab.contract import FALSE_ALARM_RATE, reference_checks, validate

PROJECT = Path(__file__).resolve().parents[1]
PREPARE = yaml.safe_load((PROJECT / "params.yaml").read_text())["prepare"]
AS_OF = pd.Timestamp(PREPARE["as_of"])                      # the exports were taken on the training day
EXPORTS = {path.stem: path for path in sorted((PROJECT / "data" / "raw").glob("*.csv"))}


def months_used(as_of, window, lag_months=12):
    """The months this run reads (prepare's rule, written again): training, validation, then the test month,
    the newest whose every label is known on as_of."""
    test = as_of.to_period("M") - lag_months
    while test.end_time.normalize() + pd.DateOffset(months=lag_months) > as_of:
        test -= 1
    return [str(test - k) for k in range(window + 1, -1, -1)]


USED = months_used(AS_OF, PREPARE["window_months"])
REFERENCE, CHECKED = USED[0], USED[1:]       # the oldest training month is the reference; the rest are compared
# One run compares len(CHECKED) months: split the false-alarm rate so a clean run fails at most 1 % of the time.
BOUNDS = reference_checks(pd.read_csv(EXPORTS[REFERENCE]), false_alarm_rate=FALSE_ALARM_RATE / len(CHECKED))


@pytest.mark.parametrize("month", EXPORTS)
def test_export_meets_the_contract(month):
    report = validate(pd.read_csv(EXPORTS[month]), f"{month}.csv", as_of=AS_OF)
    assert report.ok, report.to_markdown()


@pytest.mark.parametrize("month", CHECKED)
def test_month_used_matches_the_reference(month):
    report = validate(pd.read_csv(EXPORTS[month]), f"{month}.csv", as_of=AS_OF, reference=BOUNDS)
    assert report.ok, report.to_markdown()
