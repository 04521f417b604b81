"""Chapter 13's exercise checks: a SageMaker request is judged by botocore's validator first, then by what it
means; the cost answer by the course kit's estimate."""
import copy

import pytest

from mlops_lab import sagemaker as sm
from mlops_lab.checks import WrongAnswer
from mlops_lab.exercises import ch13


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    monkeypatch.setenv("MLOPS_LAB_STRICT_CHECKS", "1")


def test_the_expected_request_is_one_sagemaker_accepts():
    assert sm.request_problems("sagemaker", "UpdateEndpoint", ch13.linear_rollout_request()) == []


def test_the_right_request_passes_and_an_empty_one_is_not_attempted(capsys):
    ch13.check_linear_rollout(ch13.linear_rollout_request())
    ch13.check_linear_rollout({"EndpointName": "credit-risk", "DeploymentConfig": ...})
    out = capsys.readouterr().out
    assert "[ex-13-1] correct" in out and "[ex-13-1] not attempted" in out


def test_a_request_sagemaker_would_refuse_is_named_by_botocore():
    request = copy.deepcopy(ch13.linear_rollout_request())
    request["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"] = ["credit-risk-error-rate"]   # not a dict
    with pytest.raises(WrongAnswer, match="(?s)SageMaker would refuse.*Alarms"):
        ch13.check_linear_rollout(request)


def test_a_valid_request_for_another_rollout_names_the_member_that_differs():
    request = copy.deepcopy(ch13.linear_rollout_request())
    routing = request["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    routing["LinearStepSize"]["Value"] = 20
    with pytest.raises(WrongAnswer, match=r"LinearStepSize\.Value should be 25, not 20"):
        ch13.check_linear_rollout(request)
    del request["DeploymentConfig"]["AutoRollbackConfiguration"]
    with pytest.raises(WrongAnswer, match="AutoRollbackConfiguration is missing"):
        ch13.check_linear_rollout(request)


def test_the_cost_answer_is_the_estimate_with_its_two_changes(capsys):
    expected = ch13.cost_without_shadow_two_instances()
    assert expected > sm.monthly_cost().iloc[-1]["usd_per_month"], "a second instance costs more than a shadow week"
    ch13.check_class_cost(round(expected, 2))
    assert "[ex-13-2] correct" in capsys.readouterr().out
    with pytest.raises(WrongAnswer, match="too low"):
        ch13.check_class_cost(sm.monthly_cost().iloc[-1]["usd_per_month"])


def test_the_alias_answers_are_judged_per_event(capsys):
    ch13.check_alias_moves(dict(ch13.ALIAS_MOVES))
    ch13.check_alias_moves({event: ... for event in ch13.ALIAS_MOVES})
    out = capsys.readouterr().out
    assert "[ex-13-3] correct" in out and "[ex-13-3] not attempted" in out
    with pytest.raises(WrongAnswer, match="1 of 4 not right: the canary passes"):
        ch13.check_alias_moves(dict(ch13.ALIAS_MOVES) | {"the canary passes": "challenger"})
    with pytest.raises(WrongAnswer, match="one of 'none'"):
        ch13.check_alias_moves(dict(ch13.ALIAS_MOVES) | {"the canary passes": "production"})
