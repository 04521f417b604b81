"""The SageMaker request shapes chapter 07 shows are well formed, and the validator catches what SageMaker would refuse."""
import copy
import json

import pytest

from mlops_lab import sagemaker as sm


def definition_request(edit) -> dict:
    definition = sm.level1_pipeline_definition()
    edit(definition)
    return dict(sm.level1_pipeline_request(), PipelineDefinition=json.dumps(definition))


def test_the_level1_pipeline_and_its_triggers_are_well_formed():
    sm.validate_request("sagemaker", "CreatePipeline", sm.level1_pipeline_request())
    rules = sm.trigger_rules()
    assert [rule["trigger"] for rule in rules] == ["schedule", "new-data", "alarm"]
    for rule in rules:
        sm.validate_request("events", "PutRule", rule["PutRule"])
        sm.validate_request("events", "PutTargets", rule["PutTargets"])


def test_steps_table_lists_every_step_in_order_with_what_it_waits_for():
    table = sm.steps_table(sm.level1_pipeline_request())
    assert list(table["type"]) == ["QualityCheck", "Processing", "Training", "Processing", "ClarifyCheck",
                                   "Condition", "RegisterModel", "Fail"]
    after = dict(zip(table["step"], table["after"]))
    assert after["Train"] == "Prepare" and "Train" in after["Evaluate"] and "Evaluate" in after["GateBeatsChampion"]


@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["Steps"][2]["Arguments"]["HyperParameters"].update(C=1.0), "HyperParameters.C"),
    (lambda d: d["Steps"][2]["Arguments"]["ResourceConfig"].update(InstanceType="ml.m5.huge"), "ml.m5.huge"),
    (lambda d: d["Steps"][2]["Arguments"].pop("RoleArn"), "RoleArn"),
    (lambda d: d["Steps"][3]["Arguments"]["ProcessingInputs"][0]["S3Input"].update(S3Uri={"Get": "Steps.Training.X"}),
     "refers to no step 'Training'"),
    (lambda d: d["Parameters"][3].update(DefaultValue="Maybe"), "'Maybe' is not one of"),
    (lambda d: d["Steps"].append(copy.deepcopy(d["Steps"][1])), "used twice"),
], ids=["type", "enum", "required", "dangling-step", "parameter-default-enum", "duplicate-name"])
def test_validator_catches_what_sagemaker_would_refuse(edit, expected):
    with pytest.raises(sm.InvalidRequest, match=expected.replace("(", r"\(").replace(".", r"\.")):
        sm.validate_request("sagemaker", "CreatePipeline", definition_request(edit))


def test_eventbridge_rule_needs_a_name_and_valid_state():
    rule = dict(sm.trigger_rules()[0]["PutRule"], State="ON")
    del rule["Name"]
    problems = sm.request_problems("events", "PutRule", rule)
    assert any("Name" in p for p in problems) and any("'ON'" in p for p in problems)
