"""The book's SageMaker mappings as SageMaker would take them: request shapes checked offline, never sent.

:func:`level1_pipeline_request` builds the ``CreatePipeline`` request whose ``PipelineDefinition`` (the JSON
that the SageMaker Python SDK compiles from ``Pipeline(steps=[...]).definition()``) holds the steps of the
chapter's pipeline: data validation (``QualityCheck``, Model Monitor's analyzer against a supplied baseline),
training (``Training``), evaluation of candidate and champion (``Processing`` with a property file), a bias
check (``ClarifyCheck``), the model gate (``Condition``) and ``RegisterModel`` with an approval status, or
``Fail``. :func:`trigger_rules` builds the EventBridge rules that start it: a monthly schedule, new data in the
bucket, a CloudWatch alarm.

Chapter 08's CI/CD as a SageMaker Project with GitLab: :func:`project_requests` builds the requests keyed
``"service.Operation"``: ``CreateProject`` from the GitLab MLOps template (a Service Catalog product), the
EventBridge rule that calls the Lambda starting the GitLab model-deploy pipeline when a version of the model
package group is approved, the ``UpdateModelPackage`` that approves it, and CodePipeline's
``CreatePipeline`` for the same deploy pipeline. :func:`gitlab_template_mapping` maps the AWS sample template
(aws-samples/sagemaker-custom-project-templates, ``mlops-template-gitlab``) job by job onto the chapter's.

Chapters 10 and 11's endpoint: :func:`endpoint_requests` builds ``CreateEndpointConfig`` (blue and green
production variants, data capture), ``UpdateEndpoint`` with a blue/green ``DeploymentConfig`` made from a
``RolloutPlan`` (:func:`deployment_config`: all at once, canary or linear, each bake watched by the rollback
alarms) or a rolling one (:func:`rolling_update_request`), a shadow test (``CreateInferenceExperiment``) and
Model Monitor's data-quality schedule (``CreateMonitoringSchedule``).

:func:`validate_request` checks a request against botocore's copy of the service's API model, offline:
required members, types, enum values and maxima (botocore's own validator skips those two). Pipeline *expressions*
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
    """What botocore's validator does not check: enum values, and maxima (numbers, string and list lengths)."""
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        return [p for key, item in value.items() if key in shape.members
                for p in _enum_problems(shape.members[key], item, f"{where}.{key}")]
    if isinstance(shape, ListShape) and isinstance(value, list):
        most = shape.metadata.get("max")
        too_long = [f"{where}: {len(value)} items, above the maximum {most}"] if most and len(value) > most else []
        return too_long + [p for i, item in enumerate(value)
                           for p in _enum_problems(shape.member, item, f"{where}[{i}]")]
    if isinstance(shape, MapShape) and isinstance(value, dict):
        return [p for key, item in value.items() for p in _enum_problems(shape.value, item, f"{where}.{key}")]
    if getattr(shape, "enum", None) and isinstance(value, str) and value not in shape.enum:
        allowed = ", ".join(shape.enum[:4]) + (f", ... ({len(shape.enum)} values)" if len(shape.enum) > 4 else "")
        return [f"{where}: {value!r} is not one of {allowed}"]
    most = shape.metadata.get("max")
    size = len(value) if isinstance(value, str) else value if isinstance(value, (int, float)) else None
    if most is not None and size is not None and not isinstance(value, bool) and size > most:
        return [f"{where}: {value!r} is above the maximum {most}" if not isinstance(value, str)
                else f"{where}: {len(value)} characters, above the maximum {most}"]
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


# Chapter 08: SageMaker Projects with GitLab ------------------------------------------------------------------

PROJECT = "credit-risk"
GITLAB = "https://gitlab.com"
GITLAB_GROUP = "credit-team"
# The token never appears in a request: the template's Lambdas read it from Secrets Manager by this ARN.
GITLAB_TOKEN_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:sagemaker-projects/gitlab-token-a1B2c3"
TRIGGER_LAMBDA = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:sagemaker-{PROJECT}-gitlab-trigger"
PIPELINE_ROLE = f"arn:aws:iam::{ACCOUNT}:role/credit-risk-codepipeline"
STACK_ROLE = f"arn:aws:iam::{ACCOUNT}:role/credit-risk-cloudformation"
# The model package group's only state change that should ship a model.
APPROVED_PATTERN = {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Model Package State Change"],
                    "detail": {"ModelPackageGroupName": [MODEL_GROUP], "ModelApprovalStatus": ["Approved"]}}


def _action(name: str, category: str, provider: str, configuration: dict, inputs=(), outputs=(),
            run_order: int = 1) -> dict:
    """One CodePipeline action; the owner is AWS for every built-in provider used here."""
    return {"name": name, "actionTypeId": {"category": category, "owner": "AWS", "provider": provider,
                                           "version": "1"},
            "runOrder": run_order, "configuration": configuration,
            "inputArtifacts": [{"name": a} for a in inputs], "outputArtifacts": [{"name": a} for a in outputs]}


def _deploy_stack(name: str, stage: str) -> dict:
    """A CloudFormation deploy of the endpoint template the build exported, with that stage's config."""
    return _action(name, "Deploy", "CloudFormation", {
        "ActionMode": "REPLACE_ON_FAILURE", "StackName": f"sagemaker-{PROJECT}-deploy-{stage}",
        "TemplatePath": "BuildArtifact::template-export.yml",
        "TemplateConfiguration": f"BuildArtifact::{stage}-config-export.json", "RoleArn": STACK_ROLE},
        inputs=["BuildArtifact"])


def deploy_codepipeline() -> dict:
    """CodePipeline's ``CreatePipeline`` for the model-deploy repository: the GitLab CI file, AWS-native.

    Source (GitLab through a CodeConnections connection), Build (CodeBuild exports the endpoint template),
    DeployStaging (CloudFormation, then a CodeBuild test of the staging endpoint), ManualApproval (an
    Approval action: the pipeline waits until someone approves in the console or API), DeployProd.
    """
    connection = f"arn:aws:codeconnections:{REGION}:{ACCOUNT}:connection/0a1b2c3d-4e5f-6789-abcd-ef0123456789"
    stages = [
        ("Source", [_action("ModelDeployRepo", "Source", "CodeStarSourceConnection", {
            "ConnectionArn": connection, "FullRepositoryId": f"{GITLAB_GROUP}/{PROJECT}-model-deploy",
            "BranchName": "main"}, outputs=["SourceArtifact"])]),
        ("Build", [_action("ExportEndpointTemplate", "Build", "CodeBuild",
                           {"ProjectName": f"{PROJECT}-model-deploy-build"},
                           inputs=["SourceArtifact"], outputs=["BuildArtifact"])]),
        ("DeployStaging", [_deploy_stack("DeployStagingEndpoint", "staging"),
                           _action("TestStagingEndpoint", "Test", "CodeBuild",
                                   {"ProjectName": f"{PROJECT}-test-staging"}, inputs=["SourceArtifact"],
                                   run_order=2)]),
        ("ManualApproval", [_action("ApproveProduction", "Approval", "Manual", {
            "CustomData": "Staging endpoint passed its tests: approve to deploy the model to production."})]),
        ("DeployProd", [_deploy_stack("DeployProdEndpoint", "prod")]),
    ]
    return {"pipeline": {
        "name": f"{PROJECT}-model-deploy", "roleArn": PIPELINE_ROLE, "pipelineType": "V2",
        "artifactStore": {"type": "S3", "location": f"{PROJECT}-pipeline-artifacts"},
        "stages": [{"name": name, "actions": actions} for name, actions in stages]}}


def project_requests() -> dict[str, dict]:
    """The requests behind a SageMaker Project with GitLab, keyed ``"service.Operation"``.

    Each one passes :func:`validate_request` (``validate_request(*key.split("."), request)``).
    """
    rule = f"{PROJECT}-model-approved"
    return {
        # The GitLab MLOps template is a Service Catalog product: the IDs are the product's in your account.
        # SageMaker fills in SageMakerProjectName and SageMakerProjectId; these are the template's own inputs.
        "sagemaker.CreateProject": {
            "ProjectName": PROJECT,
            "ProjectDescription": "Credit risk model: model-build and model-deploy repositories in GitLab",
            "ServiceCatalogProvisioningDetails": {
                "ProductId": "prod-abcdefgh12345", "ProvisioningArtifactId": "pa-abcdefgh12345",
                "ProvisioningParameters": [{"Key": key, "Value": value} for key, value in {
                    "GitLabServer": GITLAB,
                    "RepositoryBaseUrl": f"{GITLAB}/{GITLAB_GROUP}",
                    "ModelBuildCodeRepositoryName": f"{PROJECT}-model-build",
                    "ModelDeployCodeRepositoryName": f"{PROJECT}-model-deploy",
                    "GitLabGroupID": "None",   # the template's spelling of "the root group"
                    # The post's (2021) template takes the secret as a parameter; today's bakes its name in.
                    "SecretName": GITLAB_TOKEN_SECRET}.items()]}},
        # Only an approval ships: registering a version (PendingManualApproval) must not start a deploy.
        "events.PutRule": {"Name": rule, "State": "ENABLED", "EventPattern": json.dumps(APPROVED_PATTERN),
                           "Description": "Start the GitLab model-deploy pipeline when a version is approved"},
        # A Lambda target needs no RoleArn: its resource policy lets events.amazonaws.com invoke it.
        "events.PutTargets": {"Rule": rule, "Targets": [{"Id": "gitlab-model-deploy", "Arn": TRIGGER_LAMBDA}]},
        # The manual approval on SageMaker's side: a person (or the CLI in their name) flips the status.
        "sagemaker.UpdateModelPackage": {
            "ModelPackageArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:model-package/{MODEL_GROUP}/3",
            "ModelApprovalStatus": "Approved",
            "ApprovalDescription": "Gate passed (AUC gain above the noise); report reviewed on the merge request"},
        "codepipeline.CreatePipeline": deploy_codepipeline(),
    }


def gitlab_template_mapping() -> pd.DataFrame:
    """The AWS GitLab template (model-build + model-deploy repositories) mapped onto chapter 08's jobs."""
    rows = [
        ("lint", "ruff check on every pull/merge request",
         "none: the model-build CI has one stage, `training`",
         "tox.ini in the seed code names flake8, but no CI job runs it"),
        ("unit tests", "pytest tests/test_features.py (code layer)",
         "none: the seed code ships no tests",
         "a broken feature function is found only when SageMaker training fails"),
        ("data tests", "pytest tests/test_data.py: the data contract, failing rows named",
         "none: preprocessing imputes missing values, checks nothing",
         "no data contract; chapter 07's QualityCheck step would be the place"),
        ("dvc repro", "dvc repro on the runner: prepare, featurize, train, evaluate",
         "`training` job: run-pipeline starts the SageMaker Pipeline",
         "compute on SageMaker; the runner holds IAM user keys as GitLab variables, not OIDC"),
        ("model tests", "pytest tests/test_model.py: behavioural tests of the candidate",
         "evaluation ProcessingStep writes the MSE to evaluation.json",
         "one metric on a holdout, no behavioural tests"),
        ("gate", "challenger vs the registered champion (chapter 07's gate)",
         "ConditionStep: MSE <= 6.0, else the version is not registered",
         "a fixed threshold, not a comparison with the champion"),
        ("report", "CML-style Markdown: metrics and params diff vs main, a plot",
         "none: metrics are read in Studio's pipeline and registry pages",
         "nothing is posted on the merge request"),
        ("register", "on main only: register in MLflow through the gate",
         "RegisterModel step, status PendingManualApproval",
         "the training job has no rules:, so a push to any branch can register"),
        ("deploy (manual)", "approval (environment / when: manual) moves alias champion",
         "approve in registry, EventBridge, Lambda; deploy CI: build, staging, test, prod (manual)",
         "two approvals (registry, then the prod job); 'test staging' only echoes"),
    ]
    columns = ["chapter 08 (GitHub Actions / GitLab CI)", "SageMaker Projects + GitLab", "what differs"]
    return pd.DataFrame([row[1:] for row in rows], columns=columns,
                        index=pd.Index([row[0] for row in rows], name="job"))


# --- chapters 10 and 11: the endpoint, its rollouts, shadow tests and monitoring ----------------------------
ENDPOINT = "credit-risk"
INSTANCE_TYPE = "ml.m5.large"
CAPTURE = f"{BUCKET}/capture"
# SageMaker's own limits on a blue/green traffic shift, as fractions of the green fleet's capacity: a canary is
# at most half of it, a linear step between a tenth and a half (deployment guardrails' documentation).
CANARY_MAX = 0.5
LINEAR_STEP = (0.1, 0.5)
ROUTING_TYPES = {"all_at_once": "ALL_AT_ONCE", "canary": "CANARY", "linear": "LINEAR"}


def _capacity(fraction: float) -> dict:
    return {"Type": "CAPACITY_PERCENT", "Value": int(round(fraction * 100))}


def _seconds(value: float) -> int:
    return int(-(-value // 1))                   # whole seconds, rounded up: a bake is never shortened


def deployment_config(plan, alarm_names: list[str], *, termination_wait_s: int = 600) -> dict:
    """A :class:`mlops_lab.router.RolloutPlan` as ``UpdateEndpoint``'s ``DeploymentConfig``.

    Every strategy bakes and rolls back automatically on SageMaker, all at once included: the alarms in
    ``AutoRollbackConfiguration`` are watched during every bake. SageMaker has one ``WaitIntervalInSeconds`` for
    every bake, so the plan's ``bake_s`` sets it (its ``final_bake_s`` for all at once, whose only bake is the
    last). Raises ValueError for a plan SageMaker would refuse (a canary above half the fleet, a linear step
    outside a tenth to a half)."""
    if plan.strategy == "canary" and plan.canary_size > CANARY_MAX:
        raise ValueError(f"SageMaker's canary is at most {CANARY_MAX:.0%} of the new fleet, "
                         f"the plan asks {plan.canary_size:.0%}")
    if plan.strategy == "linear" and not LINEAR_STEP[0] <= plan.step_size <= LINEAR_STEP[1]:
        raise ValueError(f"SageMaker's linear step is {LINEAR_STEP[0]:.0%} to {LINEAR_STEP[1]:.0%} of the new "
                         f"fleet, the plan asks {plan.step_size:.0%}")
    bake = plan.final_bake_s if plan.strategy == "all_at_once" else plan.bake_s
    routing = {"Type": ROUTING_TYPES[plan.strategy], "WaitIntervalInSeconds": _seconds(bake)}
    if plan.strategy == "canary":
        routing["CanarySize"] = _capacity(plan.canary_size)
    if plan.strategy == "linear":
        routing["LinearStepSize"] = _capacity(plan.step_size)
    return {"BlueGreenUpdatePolicy": {"TrafficRoutingConfiguration": routing,
                                      "TerminationWaitInSeconds": termination_wait_s},
            "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in alarm_names]}}


def update_endpoint_request(plan, alarm_names: list[str], config: str = f"{ENDPOINT}-green") -> dict:
    """``UpdateEndpoint``: move the endpoint to the green configuration as ``plan`` says, guarded by alarms."""
    return {"EndpointName": ENDPOINT, "EndpointConfigName": config,
            "DeploymentConfig": deployment_config(plan, alarm_names)}


def rolling_update_request(batch: float, wait_s: int, alarm_names: list[str],
                           config: str = f"{ENDPOINT}-green") -> dict:
    """``UpdateEndpoint`` with a rolling deployment: the fleet is replaced ``batch`` of its capacity at a time
    (no second full fleet, unlike blue/green), baking ``wait_s`` after each batch, rolled back on an alarm."""
    return {"EndpointName": ENDPOINT, "EndpointConfigName": config, "DeploymentConfig": {
        "RollingUpdatePolicy": {"MaximumBatchSize": _capacity(batch), "WaitIntervalInSeconds": wait_s,
                                "RollbackMaximumBatchSize": _capacity(1.0)},
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": name} for name in alarm_names]}}}


def endpoint_config_request(champion: str, challenger: str, challenger_weight: float,
                            capture_percent: int) -> dict:
    """``CreateEndpointConfig``: blue and green production variants with their weights, and data capture."""
    variants = [{"VariantName": name, "ModelName": model, "InstanceType": INSTANCE_TYPE,
                 "InitialInstanceCount": 1, "InitialVariantWeight": weight}
                for name, model, weight in (("blue", champion, 1 - challenger_weight),
                                            ("green", challenger, challenger_weight))]
    return {"EndpointConfigName": f"{ENDPOINT}-green", "ProductionVariants": variants,
            "DataCaptureConfig": {"EnableCapture": True, "InitialSamplingPercentage": capture_percent,
                                  "DestinationS3Uri": CAPTURE,
                                  "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]}}


def shadow_test_request(champion: str, challenger: str, sampling_percent: int) -> dict:
    """``CreateInferenceExperiment`` of type ShadowMode: a copy of ``sampling_percent`` of the champion's
    traffic goes to the challenger, whose answers are captured and never returned."""
    def variant(name, model):
        return {"ModelName": model, "VariantName": name, "InfrastructureConfig": {
            "InfrastructureType": "RealTimeInference",
            "RealTimeInferenceConfig": {"InstanceType": INSTANCE_TYPE, "InstanceCount": 1}}}

    return {"Name": f"{ENDPOINT}-shadow", "Type": "ShadowMode", "RoleArn": ROLE, "EndpointName": ENDPOINT,
            "ModelVariants": [variant("blue", champion), variant("green", challenger)],
            "DataStorageConfig": {"Destination": f"{CAPTURE}/shadow"},
            "ShadowModeConfig": {"SourceModelVariantName": "blue", "ShadowModelVariants": [
                {"ShadowModelVariantName": "green", "SamplingPercentage": sampling_percent}]}}


def monitoring_schedule_request(schedule: str = "cron(0 * ? * * *)") -> dict:
    """``CreateMonitoringSchedule``: Model Monitor's data-quality job on the captured requests, every hour,
    against the baseline statistics and constraints of the training data."""
    return {"MonitoringScheduleName": f"{ENDPOINT}-data-quality", "MonitoringScheduleConfig": {
        "ScheduleConfig": {"ScheduleExpression": schedule}, "MonitoringType": "DataQuality",
        "MonitoringJobDefinition": {
            "BaselineConfig": {"ConstraintsResource": {"S3Uri": f"{BUCKET}/baseline/constraints.json"},
                               "StatisticsResource": {"S3Uri": f"{BUCKET}/baseline/statistics.json"}},
            "MonitoringInputs": [{"EndpointInput": {"EndpointName": ENDPOINT,
                                                    "LocalPath": "/opt/ml/processing/input"}}],
            "MonitoringOutputConfig": {"MonitoringOutputs": [{"S3Output": {
                "S3Uri": f"{BUCKET}/monitoring", "LocalPath": "/opt/ml/processing/output"}}]},
            "MonitoringResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": "ml.m5.large",
                                                      "VolumeSizeInGB": 20}},
            "MonitoringAppSpecification": {"ImageUri": MONITOR_IMAGE},
            "RoleArn": ROLE}}}


def endpoint_requests(plan, alarm_names: list[str]) -> dict[str, dict]:
    """Every request chapters 10 and 11 map onto, keyed ``"service.Operation"`` (two UpdateEndpoint ones)."""
    return {"sagemaker.CreateEndpointConfig": endpoint_config_request("credit-v1", "credit-v2", 0.0, 20),
            "sagemaker.UpdateEndpoint": update_endpoint_request(plan, alarm_names),
            "sagemaker.UpdateEndpoint (rolling)": rolling_update_request(0.25, 300, alarm_names),
            "sagemaker.CreateInferenceExperiment": shadow_test_request("credit-v1", "credit-v2", 100),
            "sagemaker.CreateMonitoringSchedule": monitoring_schedule_request()}
