"""The SageMaker requests of chapters 07, 08, 10 and 11 are well formed, and the validator catches what AWS would refuse."""
import copy
import json
import re

import pytest

from mlops_lab import sagemaker as sm
from mlops_lab.router import RolloutPlan


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


# Chapter 08: SageMaker Projects with GitLab

def matches(pattern: dict, event: dict) -> bool:
    """EventBridge matching for exact-value patterns: every field named must hold one of the listed values."""
    for key, wanted in pattern.items():
        if key not in event:
            return False
        if isinstance(wanted, dict):
            if not (isinstance(event[key], dict) and matches(wanted, event[key])):
                return False
        elif event[key] not in wanted:
            return False
    return True


def package_event(status: str, group: str = "credit-risk") -> dict:
    """A "SageMaker Model Package State Change" event as EventBridge delivers it (fields abridged)."""
    arn = f"arn:aws:sagemaker:us-east-1:123456789012:model-package/{group}/3"
    return {"version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
            "detail-type": "SageMaker Model Package State Change", "source": "aws.sagemaker",
            "account": "123456789012", "time": "2024-04-02T09:00:00Z", "region": "us-east-1", "resources": [arn],
            "detail": {"ModelPackageGroupName": group, "ModelPackageVersion": 3, "ModelPackageArn": arn,
                       "ModelPackageStatus": "Completed", "ModelApprovalStatus": status}}


def test_project_requests_are_well_formed():
    requests = sm.project_requests()
    assert list(requests) == ["sagemaker.CreateProject", "events.PutRule", "events.PutTargets",
                              "sagemaker.UpdateModelPackage", "codepipeline.CreatePipeline"]
    for key, request in requests.items():
        sm.validate_request(*key.split("."), request)


def test_the_project_names_the_token_secret_never_the_token():
    details = sm.project_requests()["sagemaker.CreateProject"]["ServiceCatalogProvisioningDetails"]
    parameters = {p["Key"]: p["Value"] for p in details["ProvisioningParameters"]}
    assert {"GitLabServer", "ModelBuildCodeRepositoryName", "ModelDeployCodeRepositoryName"} <= set(parameters)
    assert parameters["SecretName"].startswith("arn:aws:secretsmanager:")
    assert not any(word in json.dumps(details).lower() for word in ("glpat-", "private_token", "password"))


def test_the_approval_rule_calls_the_lambda_that_starts_the_deploy_pipeline():
    requests = sm.project_requests()
    assert requests["events.PutTargets"]["Rule"] == requests["events.PutRule"]["Name"]
    assert requests["events.PutTargets"]["Targets"][0]["Arn"].startswith("arn:aws:lambda:")
    assert requests["sagemaker.UpdateModelPackage"]["ModelApprovalStatus"] == "Approved"


def test_the_event_pattern_matches_an_approval_only():
    rule = sm.project_requests()["events.PutRule"]
    pattern = json.loads(rule["EventPattern"])
    assert matches(pattern, package_event("Approved"))
    assert not matches(pattern, package_event("PendingManualApproval"))
    assert not matches(pattern, package_event("Rejected"))
    assert not matches(pattern, package_event("Approved", group="fraud"))
    # The same pattern and event are a well-formed TestEventPattern request (shape only: AWS is never called).
    sm.validate_request("events", "TestEventPattern",
                        {"EventPattern": rule["EventPattern"], "Event": json.dumps(package_event("Approved"))})


def test_the_codepipeline_waits_for_a_manual_approval_before_production():
    stages = sm.project_requests()["codepipeline.CreatePipeline"]["pipeline"]["stages"]
    assert [s["name"] for s in stages] == ["Source", "Build", "DeployStaging", "ManualApproval", "DeployProd"]
    approval = stages[3]["actions"][0]["actionTypeId"]
    assert (approval["category"], approval["provider"]) == ("Approval", "Manual")


def _pop(*path):
    def edit(request):
        for key in path[:-1]:
            request = request[key]
        request.pop(path[-1])
    return edit


def _set(value, *path):
    def edit(request):
        for key in path[:-1]:
            request = request[key]
        request[path[-1]] = value
    return edit


@pytest.mark.parametrize("key, edit, expected", [
    ("sagemaker.CreateProject", _pop("ProjectName"), 'Missing required parameter in input: "ProjectName"'),
    ("sagemaker.CreateProject", _pop("ServiceCatalogProvisioningDetails", "ProductId"), '"ProductId"'),
    ("events.PutRule", _pop("Name"), 'Missing required parameter in input: "Name"'),
    ("events.PutRule", _set("ON", "State"), "'ON' is not one of"),
    ("events.PutTargets", _pop("Targets", 0, "Arn"), '"Arn"'),
    ("sagemaker.UpdateModelPackage", _pop("ModelPackageArn"), '"ModelPackageArn"'),
    ("sagemaker.UpdateModelPackage", _set("OK", "ModelApprovalStatus"), "ModelApprovalStatus: 'OK' is not one of"),
    ("codepipeline.CreatePipeline", _pop("pipeline", "roleArn"), '"roleArn"'),
    ("codepipeline.CreatePipeline", _set("Approve", "pipeline", "stages", 3, "actions", 0, "actionTypeId", "category"),
     "category: 'Approve' is not one of"),
], ids=["project-name", "product-id", "rule-name", "rule-state", "target-arn", "package-arn", "approval-status",
        "pipeline-role", "action-category"])
def test_a_broken_project_request_is_refused_with_the_problem_named(key, edit, expected):
    request = copy.deepcopy(sm.project_requests()[key])
    edit(request)
    with pytest.raises(sm.InvalidRequest, match=re.escape(expected)):
        sm.validate_request(*key.split("."), request)


def test_the_gitlab_template_mapping_covers_the_nine_jobs_in_order():
    table = sm.gitlab_template_mapping()
    assert list(table.index) == ["lint", "unit tests", "data tests", "dvc repro", "model tests", "gate", "report",
                                 "register", "deploy (manual)"]
    assert list(table.columns) == ["chapter 08 (GitHub Actions / GitLab CI)", "SageMaker Projects + GitLab",
                                   "what differs"]
    cells = table.to_numpy().ravel()
    assert all(isinstance(cell, str) and cell.strip() and "\n" not in cell for cell in cells)


# --- chapters 10 and 11: rollouts, shadow tests, capture and monitoring --------------------------------------
ALARMS = ["credit-green-5xx", "credit-green-p99"]
PLANS = [RolloutPlan("all_at_once", final_bake_s=5), RolloutPlan("canary", canary_size=0.2, bake_s=3),
         RolloutPlan("linear", step_size=0.25, bake_s=2.5)]


@pytest.mark.parametrize("plan", PLANS, ids=lambda plan: plan.strategy)
def test_every_endpoint_request_is_well_formed(plan):
    for key, request in sm.endpoint_requests(plan, ALARMS).items():
        service, operation = key.split(" ")[0].split(".")
        sm.validate_request(service, operation, request)


@pytest.mark.parametrize("plan", PLANS, ids=lambda plan: plan.strategy)
def test_every_strategy_bakes_and_rolls_back_on_the_alarms(plan):
    config = sm.deployment_config(plan, ALARMS)
    routing = config["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert routing["Type"] == sm.ROUTING_TYPES[plan.strategy]
    bake = plan.final_bake_s if plan.strategy == "all_at_once" else plan.bake_s
    assert routing["WaitIntervalInSeconds"] == -(-bake // 1) > 0        # rounded up, never shortened
    assert [alarm["AlarmName"] for alarm in config["AutoRollbackConfiguration"]["Alarms"]] == ALARMS


def test_canary_and_linear_sizes_are_capacity_percentages():
    canary = sm.deployment_config(PLANS[1], ALARMS)["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    linear = sm.deployment_config(PLANS[2], ALARMS)["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]
    assert canary["CanarySize"] == {"Type": "CAPACITY_PERCENT", "Value": 20}
    assert linear["LinearStepSize"] == {"Type": "CAPACITY_PERCENT", "Value": 25}


@pytest.mark.parametrize("plan, expected", [
    (RolloutPlan("canary", canary_size=0.6), "canary is at most 50%"),
    (RolloutPlan("linear", step_size=0.05), "linear step is 10% to 50%"),
    (RolloutPlan("linear", step_size=1.0), "linear step is 10% to 50%")])
def test_a_plan_sagemaker_cannot_run_is_refused(plan, expected):
    with pytest.raises(ValueError, match=expected):
        sm.deployment_config(plan, ALARMS)


def test_the_validator_checks_the_maxima_botocore_skips():
    request = sm.update_endpoint_request(RolloutPlan("canary", bake_s=4000), ALARMS)   # a bake over an hour
    with pytest.raises(sm.InvalidRequest, match="WaitIntervalInSeconds: 4000 is above the maximum 3600"):
        sm.validate_request("sagemaker", "UpdateEndpoint", request)
    too_many = sm.update_endpoint_request(PLANS[1], [f"alarm-{k}" for k in range(11)])  # at most 10 alarms
    with pytest.raises(sm.InvalidRequest, match="Alarms: 11 items, above the maximum 10"):
        sm.validate_request("sagemaker", "UpdateEndpoint", too_many)


def test_a_rolling_update_replaces_the_fleet_in_batches_and_rolls_back_at_once():
    policy = sm.rolling_update_request(0.25, 300, ALARMS)["DeploymentConfig"]["RollingUpdatePolicy"]
    assert policy["MaximumBatchSize"] == {"Type": "CAPACITY_PERCENT", "Value": 25}
    assert policy["RollbackMaximumBatchSize"]["Value"] == 100


def test_the_shadow_test_copies_the_champions_traffic_to_the_challenger():
    request = sm.shadow_test_request("credit-v1", "credit-v2", 100)
    assert request["Type"] == "ShadowMode"
    assert request["ShadowModeConfig"] == {"SourceModelVariantName": "blue", "ShadowModelVariants": [
        {"ShadowModelVariantName": "green", "SamplingPercentage": 100}]}
    broken = copy.deepcopy(request)
    broken["Type"] = "Shadow"
    with pytest.raises(sm.InvalidRequest, match="'Shadow' is not one of ShadowMode"):
        sm.validate_request("sagemaker", "CreateInferenceExperiment", broken)


def test_a_rollout_plan_writes_its_own_deployment_config():
    from mlops_lab.router import Alarm

    plan = RolloutPlan("canary", canary_size=0.2, bake_s=3)
    config = plan.to_sagemaker((Alarm("error_rate", 0.05), Alarm("p99_latency", 0.2)))
    assert config == sm.deployment_config(plan, ["credit-risk-green-error_rate", "credit-risk-green-p99_latency"])
    sm.validate_request("sagemaker", "UpdateEndpoint", {"EndpointName": "credit-risk",
                                                        "EndpointConfigName": "credit-risk-green",
                                                        "DeploymentConfig": config})


# --- chapter 13: the whole loop on SageMaker, and what it costs a month ---------------------------------------
LOOP_STEPS = ["pipeline definition", "model registry approval", "endpoint deployment guardrails", "shadow test",
              "model monitor schedule", "EventBridge rule (drift -> retrain)", "Projects template"]


def loop_table():
    return sm.loop_requests(PLANS[1], ALARMS)


def test_the_loop_has_one_step_per_stage_of_the_book_in_order():
    table = loop_table()
    assert list(table.columns) == ["step", "book_chapter", "what_the_book_runs", "service", "operation", "request",
                                   "problems"]
    assert list(dict.fromkeys(table["step"])) == LOOP_STEPS
    assert all(re.fullmatch(r"\d\d", chapter) for chapter in table["book_chapter"])
    assert all(isinstance(cell, str) and cell.strip() for cell in table["what_the_book_runs"])


def test_every_request_of_the_loop_is_well_formed():
    table = loop_table()
    assert [p for p in table["problems"] if p] == []
    for service, operation, request in zip(table["service"], table["operation"], table["request"]):
        sm.validate_request(service, operation, request)


def test_a_loop_request_missing_a_required_member_is_caught_with_the_member_named():
    from botocore.session import get_session

    for service, operation, request in zip(*(loop_table()[c] for c in ("service", "operation", "request"))):
        required = get_session().get_service_model(service).operation_model(operation).input_shape.required_members
        assert required, f"{service}.{operation} has no required member to remove"
        for member in required:
            broken = {key: value for key, value in request.items() if key != member}
            with pytest.raises(sm.InvalidRequest, match=re.escape(f'Missing required parameter in input: "{member}"')):
                sm.validate_request(service, operation, broken)


def test_the_loop_reuses_the_chapters_builders():
    table = loop_table().set_index("operation")
    assert table.loc["CreatePipeline", "request"] == sm.level1_pipeline_request()
    assert table.loc["UpdateEndpoint", "request"] == sm.update_endpoint_request(PLANS[1], ALARMS)
    assert table.loc["CreateMonitoringSchedule", "request"] == sm.monitoring_schedule_request()
    assert table.loc["CreateProject", "request"] == sm.project_requests()["sagemaker.CreateProject"]


def matches_with_prefix(pattern: dict, event: dict) -> bool:
    """EventBridge matching for exact values and ``{"prefix": ...}`` filters (what the drift rule uses)."""
    for key, wanted in pattern.items():
        if key not in event:
            return False
        if isinstance(wanted, dict):
            if not (isinstance(event[key], dict) and matches_with_prefix(wanted, event[key])):
                return False
        elif not any(event[key] == w if not isinstance(w, dict) else
                     isinstance(event[key], str) and event[key].startswith(w["prefix"]) for w in wanted):
            return False
    return True


def monitoring_job_event(exit_message: str, status: str = "Completed",
                         schedule: str = "credit-risk-data-quality") -> dict:
    """A "SageMaker Processing Job State Change" event of a monitoring execution (fields abridged)."""
    arn = "arn:aws:sagemaker:us-east-1:123456789012:processing-job/model-monitoring-202404021000-5c1f1b6d"
    return {"version": "0", "id": "0d1f3b9e-6a55-4f4b-8d2a-3c1e9b7f2a10",
            "detail-type": "SageMaker Processing Job State Change", "source": "aws.sagemaker",
            "account": "123456789012", "time": "2024-04-02T10:21:40Z", "region": "us-east-1", "resources": [arn],
            "detail": {"ProcessingJobArn": arn, "ProcessingJobStatus": status, "ExitMessage": exit_message,
                       "MonitoringScheduleArn":
                           f"arn:aws:sagemaker:us-east-1:123456789012:monitoring-schedule/{schedule}"}}


def test_the_drift_rule_starts_the_pipeline_on_a_monitoring_run_with_violations_only():
    rule = sm.drift_retrain_rule()
    pattern = json.loads(rule["PutRule"]["EventPattern"])
    violations = "CompletedWithViolations: Job completed successfully with 3 violations."
    assert matches_with_prefix(pattern, monitoring_job_event(violations))
    assert not matches_with_prefix(pattern, monitoring_job_event("Completed: Job completed successfully with no violations."))
    assert not matches_with_prefix(pattern, monitoring_job_event(violations, schedule="fraud-data-quality"))
    assert not matches_with_prefix(pattern, monitoring_job_event("Error: the analyzer failed", status="Failed"))
    target = rule["PutTargets"]["Targets"][0]
    assert rule["PutTargets"]["Rule"] == rule["PutRule"]["Name"]
    assert target["Arn"] == f"arn:aws:sagemaker:us-east-1:123456789012:pipeline/{sm.PIPELINE}"
    assert "SageMakerPipelineParameters" in target
    sm.validate_request("events", "TestEventPattern", {"EventPattern": rule["PutRule"]["EventPattern"],
                                                       "Event": json.dumps(monitoring_job_event(violations))})


def test_the_drift_rule_watches_the_schedule_the_loop_creates():
    pattern = json.loads(sm.drift_retrain_rule()["PutRule"]["EventPattern"])
    schedule = sm.monitoring_schedule_request()["MonitoringScheduleName"]
    assert pattern["detail"]["MonitoringScheduleArn"] == [
        f"arn:aws:sagemaker:us-east-1:123456789012:monitoring-schedule/{schedule}"]


COST_COLUMNS = ["item", "quantity", "unit", "unit_price_usd", "usd_per_month", "assumption", "source", "depends_on"]


def test_the_monthly_cost_lists_every_line_item_with_a_total():
    table = sm.monthly_cost()
    assert list(table.columns) == COST_COLUMNS
    assert list(table["item"]) == ["real-time endpoint", "blue/green deployment fleet", "data capture storage (S3)",
                                   "monthly pipeline run", "Model Monitor hourly data-quality job",
                                   "shadow test variant", "S3 storage for DVC and artifacts", "CloudWatch alarms",
                                   "EventBridge rules", "total"]
    items, total = table.iloc[:-1], table.iloc[-1]
    assert total["usd_per_month"] == pytest.approx(items["usd_per_month"].sum(), abs=1e-9)
    assert items["usd_per_month"].to_numpy() == pytest.approx((items["quantity"] * items["unit_price_usd"]).to_numpy())


def test_every_cost_row_names_its_source_and_no_quantity_is_negative():
    table = sm.monthly_cost()
    assert all(re.search(r"https://aws\.amazon\.com/\S+", source) for source in table["source"])
    items = table.iloc[:-1]
    assert (items["quantity"] >= 0).all() and (items["unit_price_usd"] >= 0).all()
    assert all(isinstance(text, str) and text.strip() for text in items["assumption"])
    eventbridge = items.set_index("item").loc["EventBridge rules"]
    assert eventbridge["usd_per_month"] == 0 and "free" in eventbridge["assumption"]


def test_the_unit_prices_come_from_one_dict_and_the_requests_instance_types():
    table = sm.monthly_cost().set_index("item")
    endpoint_type = sm.endpoint_config_request("a", "b", 0.0, 20)["ProductionVariants"][0]["InstanceType"]
    monitor_type = sm.monitoring_schedule_request()["MonitoringScheduleConfig"]["MonitoringJobDefinition"][
        "MonitoringResources"]["ClusterConfig"]["InstanceType"]
    assert table.loc["real-time endpoint", "unit_price_usd"] == sm.PRICES[f"real-time inference {endpoint_type}"][0]
    assert table.loc["Model Monitor hourly data-quality job", "unit_price_usd"] == \
        sm.PRICES[f"processing {monitor_type}"][0] / 60
    assert monitor_type in table.loc["Model Monitor hourly data-quality job", "assumption"]


def _changed(before, after) -> set:
    items = before["item"].iloc[:-1]
    return {item for item, a, b in zip(items, before["usd_per_month"], after["usd_per_month"]) if a != b}


def test_two_endpoint_instances_change_exactly_the_items_that_run_on_the_endpoint_fleet():
    steady, doubled = sm.monthly_cost(), sm.monthly_cost({"endpoint_instances": 2})
    assert _changed(steady, doubled) == {"real-time endpoint", "blue/green deployment fleet"}
    def endpoint(table):
        return table.set_index("item").loc["real-time endpoint", "usd_per_month"]

    assert endpoint(doubled) == pytest.approx(2 * endpoint(steady))
    assert doubled["usd_per_month"].iloc[-1] > steady["usd_per_month"].iloc[-1]


def test_each_assumption_changes_exactly_the_items_that_say_they_depend_on_it():
    steady = sm.monthly_cost()
    for key, value in sm.COST_ASSUMPTIONS.items():
        changed = _changed(steady, sm.monthly_cost({key: value * 2 if value else 1}))
        declared = {item for item, keys in zip(steady["item"].iloc[:-1], steady["depends_on"].iloc[:-1])
                    if key in keys}
        assert changed == declared and declared, f"{key} moves {changed}, the table says {declared}"


def test_a_bad_assumption_is_refused_with_the_valid_keys_named():
    with pytest.raises(ValueError, match="endpoint_instance.*valid keys.*endpoint_instances.*hours_per_month"):
        sm.monthly_cost({"endpoint_instance": 2})
    with pytest.raises(ValueError, match="shadow_days_per_month.*-1"):
        sm.monthly_cost({"shadow_days_per_month": -1})
    assert sm.COST_ASSUMPTIONS["endpoint_instances"] == 1          # the caller's override did not leak
