"""The chapter 09 capacity check (ex-09-4): Little's law with the mean latency and headroom (issue 12, item 12)."""
import numpy as np
import pytest

from mlops_lab.checks import WrongAnswer
from mlops_lab.exercises import ch09


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_STRICT_CHECKS", "1")


# A skewed sample, as latencies are: mean 1.6 ms, median 1.0 ms, p99 about 7 ms.
LATENCIES_MS = np.array([1.0] * 90 + [7.0] * 10)


def test_workers_follow_from_the_mean_latency_and_the_headroom():
    # 2000/s x 1.6 ms = 3.2 workers busy on average; at most 70 % busy each: 3.2 / 0.7 = 4.57, so 5.
    assert ch09.workers_needed(LATENCIES_MS, target_rps=2000, max_busy=0.7) == 5


def test_the_right_answer_passes(capsys):
    ch09.check_concurrency(5, LATENCIES_MS, target_rps=2000, max_busy=0.7)
    assert "correct" in capsys.readouterr().out


@pytest.mark.parametrize("answer, reason", [
    (3, "median"),     # ceil(2000 x 1.0 ms / 0.7) = 3: a percentile, not the mean
    (4, "headroom"),   # ceil(2000 x 1.6 ms) = 4: every worker busy all the time
    (20, "percentile"),  # ceil(2000 x 7 ms / 0.7) = 20: the p99
    (9, "not"),
])
def test_wrong_answers_are_explained(answer, reason):
    with pytest.raises(WrongAnswer, match=reason):
        ch09.check_concurrency(answer, LATENCIES_MS, target_rps=2000, max_busy=0.7)


def test_not_attempted_does_not_raise(capsys):
    ch09.check_concurrency(..., LATENCIES_MS, target_rps=2000, max_busy=0.7)
    assert "not attempted" in capsys.readouterr().out
