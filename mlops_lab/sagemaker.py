"""Chapter 07's Level 1 pipeline as SageMaker would take it: request shapes checked offline, never sent.

:func:`level1_pipeline_request` builds the ``CreatePipeline`` request whose ``PipelineDefinition`` (the JSON
that the SageMaker Python SDK compiles from ``Pipeline(steps=[...]).definition()``) holds the steps of the
chapter's pipeline: data validation (``QualityCheck``, Model Monitor's analyzer against a supplied baseline),
training (``Training``), evaluation of candidate and champion (``Processing`` with a property file), a bias
check (``ClarifyCheck``), the model gate (``Condition``) and ``RegisterModel`` with an approval status, or
``Fail``. :func:`trigger_rules` builds the EventBridge rules that start it: a monthly schedule, new data in the
bucket, a CloudWatch alarm.

:func:`validate_request` checks a request against botocore's copy of the service's API model, offline:
required members, types, and enum values (botocore's own validator skips enums). Pipeline *expressions*
(``{"Get": "Steps.Train..."}``, ``{"Std:JsonGet": ...}``) are resolved by SageMaker at run time, so each step's
``Arguments`` are checked with a placeholder string in their place, and every expression must point at a step
or a parameter that exists. The account, bucket and role are examples (``123456789012``); image URIs are the
ones ``sagemaker.image_uris.retrieve`` gives in us-east-1.
"""
from __future__ import annotations

import json
from functools import lru_cache

import pandas as pd
from botocore.model import ListShape, MapShape, StructureShape
from botocore.session import get_session
from botocore.validate import ParamValidator

ACCOUNT, REGION = "123456789012", "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/credit-pipeline"
BUCKET = "s3://credit-warehouse"
PIPELINE = "credit-level1"
MODEL_GROUP = "credit-risk"
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
MONITOR_IMAGE = "156813124566.dkr.ecr.us-east-1.amazonaws.com/sagemaker-model-monitor-analyzer"
CLARIFY_IMAGE = "205585389593.dkr.ecr.us-east-1.amazonaws.com/sagemaker-clarify-processing:1.0"
# The request each step type's Arguments follow (the job's name is set by the pipeline at run time).
STEP_OPERATIONS = {"Processing": "CreateProcessingJob", "QualityCheck": "CreateProcessingJob",
                   "ClarifyCheck": "CreateProcessingJob", "Training": "CreateTrainingJob",
                   "RegisterModel": "CreateModelPackage"}
GENERATED = {"CreateProcessingJob": "ProcessingJobName", "CreateTrainingJob": "TrainingJobName"}


class InvalidRequest(ValueError):
    """A request SageMaker or EventBridge would refuse: the message lists every problem."""


def _get(path: str) -> dict:
    return {"Get": path}


def _processing(script: str, inputs: dict, outputs: dict, image: str = SKLEARN_IMAGE,
                instance: str = "ml.m5.large") -> dict:
    """A processing job's arguments: one container running ``script`` on S3 inputs, writing S3 outputs."""
    return {
        "ProcessingResources": {"ClusterConfig": {"InstanceType": instance, "InstanceCount": 1,
                                                  "VolumeSizeInGB": 30}},
        "AppSpecification": {"ImageUri": image, "ContainerEntrypoint": ["python3", f"/opt/ml/processing/code/{script}"]},
        "RoleArn": ROLE,
        "ProcessingInputs": [{"InputName": name, "AppManaged": False,
                              "S3Input": {"S3Uri": uri, "LocalPath": f"/opt/ml/processing/{name}",
                                          "S3DataType": "S3Prefix", "S3InputMode": "File"}}
                             for name, uri in inputs.items()],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": name, "AppManaged": False,
                                                "S3Output": {"S3Uri": uri, "LocalPath": f"/opt/ml/processing/{name}",
                                                             "S3UploadMode": "EndOfJob"}}
                                               for name, uri in outputs.items()]},
        "StoppingCondition": {"MaxRuntimeInSeconds": 1800},
    }


def level1_pipeline_definition() -> dict:
    """The pipeline definition JSON (version 2020-12-01) of chapter 07's Level 1 pipeline."""
    data = _get("Parameters.InputData")
    register = {"Name": "RegisterCandidate", "Type": "RegisterModel", "Arguments": {
        "ModelPackageGroupName": MODEL_GROUP,
        "ModelApprovalStatus": _get("Parameters.ModelApprovalStatus"),
        "InferenceSpecification": {
            "Containers": [{"Image": SKLEARN_IMAGE, "ModelDataUrl": _get("Steps.Train.ModelArtifacts.S3ModelArtifacts")}],
            "SupportedContentTypes": ["text/csv"], "SupportedResponseMIMETypes": ["text/csv"],
            "SupportedRealtimeInferenceInstanceTypes": ["ml.m5.large"], "SupportedTransformInstanceTypes": ["ml.m5.large"]},
        "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                         "S3Uri": f"{BUCKET}/evaluation/evaluation.json"}}},
        "CustomerMetadataProperties": {"as_of": _get("Parameters.AsOf")}}}
    gate = {"Name": "GateBeatsChampion", "Type": "Condition", "Arguments": {
        "Conditions": [{"Type": "GreaterThan",
                        "LeftValue": {"Std:JsonGet": {"PropertyFile": _get("Steps.Evaluate.PropertyFiles.Evaluation"),
                                                      "Path": "gate.auc_gain_lower_bound"}},
                        "RightValue": _get("Parameters.AucMargin")}],
        "IfSteps": [register],
        "ElseSteps": [{"Name": "RejectCandidate", "Type": "Fail",
                       "Arguments": {"ErrorMessage": "the candidate does not beat the champion beyond the noise"}}]}}
    return {
        "Version": "2020-12-01", "Metadata": {},
        "Parameters": [{"Name": "AsOf", "Type": "String", "DefaultValue": "2024-04-01"},
                       {"Name": "InputData", "Type": "String", "DefaultValue": f"{BUCKET}/exports/"},
                       {"Name": "AucMargin", "Type": "Float", "DefaultValue": 0.0},
                       {"Name": "ModelApprovalStatus", "Type": "String", "DefaultValue": "PendingManualApproval"}],
        "Steps": [
            {"Name": "ValidateData", "Type": "QualityCheck", "CheckType": "DATA_QUALITY", "SkipCheck": False,
             "FailOnViolation": True, "RegisterNewBaseline": False, "ModelPackageGroupName": MODEL_GROUP,
             "SuppliedBaselineConstraints": f"{BUCKET}/baseline/constraints.json",
             "Arguments": {**_processing("analyzer", {"baseline_dataset_input": data},
                                         {"quality_check_output": f"{BUCKET}/data-quality/"}, MONITOR_IMAGE),
                           "AppSpecification": {"ImageUri": MONITOR_IMAGE}}},
            {"Name": "Prepare", "Type": "Processing", "DependsOn": ["ValidateData"],
             "Arguments": _processing("prepare.py", {"exports": data}, {"train": f"{BUCKET}/prepared/train/",
                                                                        "holdout": f"{BUCKET}/prepared/holdout/"})},
            {"Name": "Train", "Type": "Training", "Arguments": {
                "AlgorithmSpecification": {"TrainingImage": SKLEARN_IMAGE, "TrainingInputMode": "File"},
                "HyperParameters": {"C": "1.0", "as_of": _get("Parameters.AsOf")},
                "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {
                    "S3DataType": "S3Prefix", "S3DataDistributionType": "FullyReplicated",
                    "S3Uri": _get("Steps.Prepare.ProcessingOutputConfig.Outputs['train'].S3Output.S3Uri")}}}],
                "OutputDataConfig": {"S3OutputPath": f"{BUCKET}/models/"},
                "ResourceConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large", "VolumeSizeInGB": 30},
                "RoleArn": ROLE, "StoppingCondition": {"MaxRuntimeInSeconds": 3600}}},
            {"Name": "Evaluate", "Type": "Processing",
             "PropertyFiles": [{"PropertyFileName": "Evaluation", "OutputName": "evaluation",
                                "FilePath": "evaluation.json"}],
             "Arguments": _processing("evaluate.py", {
                 "model": _get("Steps.Train.ModelArtifacts.S3ModelArtifacts"),
                 "holdout": _get("Steps.Prepare.ProcessingOutputConfig.Outputs['holdout'].S3Output.S3Uri")},
                 {"evaluation": f"{BUCKET}/evaluation/"})},
            {"Name": "CheckBias", "Type": "ClarifyCheck", "CheckType": "DATA_BIAS", "SkipCheck": False,
             "RegisterNewBaseline": False, "ModelPackageGroupName": MODEL_GROUP,
             "Arguments": _processing("clarify", {"dataset": data}, {"analysis_result": f"{BUCKET}/clarify/"},
                                      CLARIFY_IMAGE)},
            gate,
        ],
    }


def level1_pipeline_request() -> dict:
    """The ``CreatePipeline`` request: the definition travels as a JSON string."""
    return {"PipelineName": PIPELINE, "PipelineDisplayName": "Credit risk, Level 1 continuous training",
            "PipelineDefinition": json.dumps(level1_pipeline_definition()), "RoleArn": ROLE,
            "ClientRequestToken": "credit-level1-v1-2024-04-01-create-request", "ParallelismConfiguration":
                {"MaxParallelExecutionSteps": 2}}


def trigger_rules() -> list[dict]:
    """EventBridge ``PutRule`` + ``PutTargets`` pairs: each trigger of chapter 07 starts the pipeline."""
    pipeline_arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:pipeline/{PIPELINE}"
    patterns = {
        "schedule": {"ScheduleExpression": "cron(0 6 1 * ? *)"},   # 06:00 UTC on the 1st of every month
        "new-data": {"EventPattern": json.dumps({
            "source": ["aws.s3"], "detail-type": ["Object Created"],
            "detail": {"bucket": {"name": ["credit-warehouse"]}, "object": {"key": [{"prefix": "exports/"}]}}})},
        "alarm": {"EventPattern": json.dumps({
            "source": ["aws.cloudwatch"], "detail-type": ["CloudWatch Alarm State Change"],
            "detail": {"alarmName": ["credit-model-performance"], "state": {"value": ["ALARM"]}}})},
    }
    rules = []
    for trigger, pattern in patterns.items():
        name = f"{PIPELINE}-{trigger}"
        rules.append({"trigger": trigger,
                      "PutRule": {"Name": name, "State": "ENABLED", "RoleArn": ROLE, **pattern},
                      "PutTargets": {"Rule": name, "Targets": [{
                          "Id": "pipeline", "Arn": pipeline_arn, "RoleArn": ROLE,
                          "SageMakerPipelineParameters": {"PipelineParameterList": [
                              {"Name": "ModelApprovalStatus", "Value": "PendingManualApproval"}]}}]}})
    return rules


@lru_cache(maxsize=None)
def _service(name: str):
    return get_session().get_service_model(name)


def _enum_problems(shape, value, where: str) -> list[str]:
    """Enum values botocore's validator does not check."""
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        return [p for key, item in value.items() if key in shape.members
                for p in _enum_problems(shape.members[key], item, f"{where}.{key}")]
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _enum_problems(shape.member, item, f"{where}[{i}]")]
    if isinstance(shape, MapShape) and isinstance(value, dict):
        return [p for key, item in value.items() for p in _enum_problems(shape.value, item, f"{where}.{key}")]
    if getattr(shape, "enum", None) and isinstance(value, str) and value not in shape.enum:
        allowed = ", ".join(shape.enum[:4]) + (f", ... ({len(shape.enum)} values)" if len(shape.enum) > 4 else "")
        return [f"{where}: {value!r} is not one of {allowed}"]
    return []


def request_problems(service: str, operation: str, params: dict) -> list[str]:
    """Every way ``params`` breaks ``operation``'s input shape (empty: the request is well formed)."""
    shape = _service(service).operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    problems = report.generate_report().splitlines() if report.has_errors() else []
    return [p.strip() for p in problems] + _enum_problems(shape, params, operation)


def validate_request(service: str, operation: str, params: dict) -> None:
    """Raise :class:`InvalidRequest` listing every problem, or return None for a well-formed request."""
    problems = request_problems(service, operation, params)
    if operation == "CreatePipeline" and "PipelineDefinition" in params:
        problems += definition_problems(json.loads(params["PipelineDefinition"]))
    if problems:
        raise InvalidRequest(f"{service}.{operation}: " + "; ".join(problems))


def _all_steps(steps: list[dict]) -> list[dict]:
    """Top-level steps and the steps nested in a condition's branches."""
    found = []
    for step in steps:
        found.append(step)
        arguments = step.get("Arguments", {})
        found += _all_steps(arguments.get("IfSteps", []) + arguments.get("ElseSteps", []))
    return found


PLACEHOLDER = "<resolved at run time>"


def _placeholders(value, references: list, defaults: dict | None = None):
    """Replace each pipeline expression by what it resolves to, collecting what it references.

    A parameter becomes its default value (so the default is checked too); anything else, a placeholder.
    """
    defaults = defaults or {}
    if isinstance(value, dict):
        if "Get" in value:
            references.append(value["Get"])
            return defaults.get(value["Get"], PLACEHOLDER)
        if any(key.startswith("Std:") for key in value):
            _placeholders(list(value.values()), references)
            return PLACEHOLDER
        return {key: _placeholders(item, references, defaults) for key, item in value.items()}
    if isinstance(value, list):
        return [_placeholders(item, references, defaults) for item in value]
    return value


def definition_problems(definition: dict) -> list[str]:
    """Each step's arguments against its job request; each expression against the steps and parameters."""
    steps = _all_steps(definition.get("Steps", []))
    names = [step["Name"] for step in steps]
    parameters = {p["Name"] for p in definition.get("Parameters", [])}
    defaults = {f"Parameters.{p['Name']}": p["DefaultValue"] for p in definition.get("Parameters", [])
                if p.get("Type") == "String" and "DefaultValue" in p}
    problems = [f"step name {n!r} used twice" for n in set(names) if names.count(n) > 1]
    for step in steps:
        references: list[str] = []
        arguments = _placeholders(step.get("Arguments", {}), references, defaults)
        operation = STEP_OPERATIONS.get(step["Type"])
        if operation:
            arguments = {GENERATED[operation]: PLACEHOLDER, **arguments} if operation in GENERATED else arguments
            problems += [f"step {step['Name']}: {p}" for p in request_problems("sagemaker", operation, arguments)]
        for path in references:
            kind, _, rest = path.partition(".")
            target = rest.split(".")[0]
            if (kind == "Steps" and target not in names) or (kind == "Parameters" and target not in parameters):
                problems.append(f"step {step['Name']}: {path!r} refers to no {kind[:-1].lower()} {target!r}")
    return problems


def steps_table(request: dict) -> pd.DataFrame:
    """One row per step of a ``CreatePipeline`` request: its type, the API it runs, what it waits for."""
    definition = json.loads(request["PipelineDefinition"])
    rows = []
    for step in _all_steps(definition["Steps"]):
        references: list[str] = []
        _placeholders(step.get("Arguments", {}), references)
        upstream = sorted({r.split(".")[1] for r in references if r.startswith("Steps.")} | set(step.get("DependsOn", [])))
        rows.append({"step": step["Name"], "type": step["Type"], "runs": STEP_OPERATIONS.get(step["Type"], "-"),
                     "check": step.get("CheckType", "-"), "after": ", ".join(upstream) or "-"})
    return pd.DataFrame(rows)
