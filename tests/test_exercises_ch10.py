"""Chapter 10's rollout exercise check: a plan is judged by simulating it, and a plan too small to gather
evidence is named for what happens to it (a good release rolled back as inconclusive), not for its duration."""
import pytest

from mlops_lab.checks import WrongAnswer
from mlops_lab.exercises import ch10


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_STRICT_CHECKS", "1")


def test_a_plan_within_the_budget_passes(capsys):
    ch10.check_rollout({"step_size": 0.25, "bake_s": 1.0})
    assert "correct" in capsys.readouterr().out.lower()


def test_a_plan_too_small_for_any_evidence_is_called_inconclusive():
    result = ch10.rollout_meets_budget(0.05, 0.5)
    assert not result["good_promoted"], "the precondition: 5 % steps of 0.5 s never gather the alarm's evidence"
    with pytest.raises(WrongAnswer, match="rolled back after .* s: .*inconclusive"):
        ch10.check_rollout({"step_size": 0.05, "bake_s": 0.5})
