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

Chapter 13's whole loop: :func:`loop_requests` lists, one row per request and in the loop's order, what each
step of the book becomes on SageMaker (pipeline definition, registry approval, endpoint guardrails, shadow
test, Model Monitor schedule, the EventBridge drift -> retrain rule of :func:`drift_retrain_rule`, the Projects
template) with the chapter, what the book runs there, and the problems botocore's model finds (none).
:func:`monthly_cost` estimates what that loop costs a month in us-east-1 for the credit model: one row per line
item (quantity, unit price from :data:`PRICES`, the assumption, the price's source, the assumptions it
depends on) and a total; :data:`COST_ASSUMPTIONS` holds the defaults a caller overrides by key.
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
                      "PutTargets": _pipeline_targets(name)})
    return rules


def _pipeline_targets(rule: str) -> dict:
    """``PutTargets``: the rule starts the Level 1 pipeline; a new version waits for a person's approval."""
    return {"Rule": rule, "Targets": [{
        "Id": "pipeline", "Arn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:pipeline/{PIPELINE}", "RoleArn": ROLE,
        "SageMakerPipelineParameters": {"PipelineParameterList": [
            {"Name": "ModelApprovalStatus", "Value": "PendingManualApproval"}]}}]}


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


def all_problems(service: str, operation: str, params: dict) -> list[str]:
    """:func:`request_problems`, and for SageMaker's ``CreatePipeline`` those of the definition it carries."""
    problems = request_problems(service, operation, params)
    if (service, operation) == ("sagemaker", "CreatePipeline") and "PipelineDefinition" in params:
        problems += definition_problems(json.loads(params["PipelineDefinition"]))
    return problems


def validate_request(service: str, operation: str, params: dict) -> None:
    """Raise :class:`InvalidRequest` listing every problem, or return None for a well-formed request."""
    problems = all_problems(service, operation, params)
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


# --- chapter 13: the whole loop on SageMaker ------------------------------------------------------------------
# Model Monitor runs each hourly execution as a processing job, and SageMaker sends EventBridge a "SageMaker
# Processing Job State Change" event for each job (source aws.sagemaker). The pattern assumes the event's detail
# is DescribeProcessingJob's answer, as it is for the training and transform job events the guide shows:
# ProcessingJobStatus, MonitoringScheduleArn (only a monitoring execution has one) and ExitMessage, in which the
# monitor container reports the outcome ("CompletedWithViolations: Job completed successfully with N
# violations."; ListMonitoringExecutions calls that status CompletedWithViolations). The job itself ends
# "Completed" either way, hence the prefix filter on ExitMessage. The guide gives no example of this event for a
# monitoring job, so check one in the account (EventBridge's sandbox, or TestEventPattern) before relying on it.
# Sources (read 2026-11): https://docs.aws.amazon.com/sagemaker/latest/dg/automating-sagemaker-with-eventbridge.html
# (the events SageMaker sends, processing job state change among them),
# https://docs.aws.amazon.com/eventbridge/latest/ref/events-ref-sagemaker.html (SageMaker's service events) and
# https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-interpreting-results.html (an execution's
# terminal states).
def drift_retrain_rule() -> dict:
    """``PutRule`` + ``PutTargets``: a data-quality execution of the endpoint's schedule that reports violations
    starts the Level 1 pipeline (chapter 12's drift -> retrain edge; the book's is an Alertmanager webhook)."""
    schedule = monitoring_schedule_request()["MonitoringScheduleName"]
    pattern = {"source": ["aws.sagemaker"], "detail-type": ["SageMaker Processing Job State Change"],
               "detail": {"MonitoringScheduleArn": [f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:monitoring-schedule/{schedule}"],
                          "ProcessingJobStatus": ["Completed"],
                          "ExitMessage": [{"prefix": "CompletedWithViolations"}]}}
    name = f"{PIPELINE}-drift"
    return {"PutRule": {"Name": name, "State": "ENABLED", "RoleArn": ROLE, "EventPattern": json.dumps(pattern),
                        "Description": "Retrain when Model Monitor reports data-quality violations"},
            "PutTargets": _pipeline_targets(name)}


def loop_requests(plan, alarm_names: list[str]) -> pd.DataFrame:
    """The book's loop as SageMaker requests: one row per request, in the loop's order, each with the step of
    the book it maps, the chapter, what the book runs there, and the problems :func:`all_problems` finds
    (an empty list: botocore's model of the service accepts it). ``plan`` is the rollout of chapter 10."""
    drift = drift_retrain_rule()
    rows = [
        ("pipeline definition", "07", "Prefect flow level1_pipeline: DVC stages, gate, register",
         "sagemaker.CreatePipeline", level1_pipeline_request()),
        ("model registry approval", "08", "manual approval job moves MLflow alias champion",
         "sagemaker.UpdateModelPackage", project_requests()["sagemaker.UpdateModelPackage"]),
        ("endpoint deployment guardrails", "10", "router: blue and green variants behind one URL",
         "sagemaker.CreateEndpointConfig", endpoint_config_request("credit-v1", "credit-v2", 0.0, 20)),
        ("endpoint deployment guardrails", "10", f"router {plan.strategy} rollout, rolled back on alarms",
         "sagemaker.UpdateEndpoint", update_endpoint_request(plan, alarm_names)),
        ("shadow test", "10", "router shadow mode: a copy of each request to green, answer never returned",
         "sagemaker.CreateInferenceExperiment", shadow_test_request("credit-v1", "credit-v2", 100)),
        ("model monitor schedule", "11", "Prometheus scrapes the router; PSI of its scores against the reference",
         "sagemaker.CreateMonitoringSchedule", monitoring_schedule_request()),
        ("EventBridge rule (drift -> retrain)", "12", "Prometheus rule + Alertmanager webhook -> Prefect event",
         "events.PutRule", drift["PutRule"]),
        ("EventBridge rule (drift -> retrain)", "12", "Prefect automation runs level1_pipeline",
         "events.PutTargets", drift["PutTargets"]),
        ("Projects template", "08", "template project credit_ci: GitHub Actions / GitLab CI running make ci",
         "sagemaker.CreateProject", project_requests()["sagemaker.CreateProject"]),
    ]
    records = []
    for step, chapter, book, key, request in rows:
        service, operation = key.split(".")
        records.append({"step": step, "book_chapter": chapter, "what_the_book_runs": book, "service": service,
                        "operation": operation, "request": request,
                        "problems": all_problems(service, operation, request)})
    return pd.DataFrame(records)


# --- chapter 13: what the loop costs a month in us-east-1 -----------------------------------------------------
_NOT_FETCHED = "AWS price list, {}, checked 2026-11 (not fetched)"
SAGEMAKER_PRICING = _NOT_FETCHED.format("https://aws.amazon.com/sagemaker/pricing/")
S3_PRICING = _NOT_FETCHED.format("https://aws.amazon.com/s3/pricing/")
CLOUDWATCH_PRICING = _NOT_FETCHED.format("https://aws.amazon.com/cloudwatch/pricing/")
EVENTBRIDGE_PRICING = _NOT_FETCHED.format("https://aws.amazon.com/eventbridge/pricing/")
# On-demand list prices in us-east-1: (USD, per what, source). The stored copies of AWS's pricing pages hold
# none of these figures, so each is the public list price as known in 2026-11, not read from a fetched page:
PRICES = {
    # SageMaker AI pricing, "Real-Time Inference", ml.m5.large, per instance-hour.
    "real-time inference ml.m5.large": (0.115, "instance-hour", SAGEMAKER_PRICING),
    # SageMaker AI pricing, "Processing" (Model Monitor's jobs are processing jobs), per instance-hour.
    "processing ml.m5.large": (0.115, "instance-hour", SAGEMAKER_PRICING),
    # SageMaker AI pricing, "Training", ml.m5.large, per instance-hour.
    "training ml.m5.large": (0.115, "instance-hour", SAGEMAKER_PRICING),
    # S3 pricing, S3 Standard, first 50 TB a month, per GB-month.
    "s3 standard": (0.023, "GB-month", S3_PRICING),
    # CloudWatch pricing, "Alarms", standard resolution (60 s), per alarm metric a month (a stored third-party
    # page, https://c3x.dev/resources/aws/aws_cloudwatch_metric_alarm, gives the same $0.10).
    "cloudwatch standard alarm": (0.10, "alarm-month", CLOUDWATCH_PRICING),
    # EventBridge pricing: events published by AWS services to the default bus, and scheduled rules, are free.
    "eventbridge aws service events": (0.0, "rule", EVENTBRIDGE_PRICING),
}
# What the estimate assumes; callers override any of them by key (monthly_cost({"endpoint_instances": 2})).
COST_ASSUMPTIONS = {
    "hours_per_month": 730,                # AWS's month: 365 * 24 / 12
    "endpoint_instances": 1,               # steady state: the champion's fleet only, after a blue/green switch
    "deployments_per_month": 1,            # one retrained model a month (chapter 07's schedule)
    "deployment_hours": 1.0,               # the green fleet beside blue: canary bakes + TerminationWaitInSeconds
    "requests_per_day": 164,               # the credit stream: 5,000 applications a month (simulator.CreditStream)
    "capture_percent": 20,                 # endpoint_requests' DataCaptureConfig.InitialSamplingPercentage
    "capture_kb_per_request": 2.0,         # one JSON line: the request's CSV, the score and the event metadata
    "capture_retention_days": 30,          # an S3 lifecycle rule deletes older captures
    "pipeline_runs_per_month": 1,          # the monthly schedule; a drift retrain adds one
    "processing_minutes_per_step": 6.0,    # a small processing job, instance start-up included (billed per second)
    "training_minutes_per_run": 10.0,
    "monitor_minutes_per_run": 6.0,        # each hourly execution of the data-quality schedule
    "shadow_days_per_month": 7,            # one shadow test a month, a week long
    "artifact_storage_gb": 50,             # the DVC remote, models, evaluation reports, baselines
    "cloudwatch_alarms": 3,                # the two rollback alarms of the rollout and the performance alarm
}


def _assumptions(overrides: dict | None) -> dict:
    unknown = sorted(set(overrides or {}) - set(COST_ASSUMPTIONS))
    if unknown:
        raise ValueError(f"unknown cost assumption(s) {', '.join(unknown)}; valid keys: "
                         f"{', '.join(sorted(COST_ASSUMPTIONS))}")
    merged = {**COST_ASSUMPTIONS, **(overrides or {})}
    bad = {key: value for key, value in merged.items()
           if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0}   # NaN too
    if bad:
        raise ValueError(f"cost assumptions must be numbers >= 0: {bad}")
    return merged


def _pipeline_instance_minutes(a: dict) -> tuple[float, str]:
    """Minutes of instance time of one run of the Level 1 pipeline, read from its definition, and its type."""
    steps = _all_steps(level1_pipeline_definition()["Steps"])
    processing = [s for s in steps if STEP_OPERATIONS.get(s["Type"]) == "CreateProcessingJob"]
    types = {s["Arguments"]["ProcessingResources"]["ClusterConfig"]["InstanceType"] for s in processing}
    types |= {s["Arguments"]["ResourceConfig"]["InstanceType"] for s in steps if s["Type"] == "Training"}
    # One line item at one price: right while every job runs on ml.m5.large and training costs what processing does.
    if types != {"ml.m5.large"} or PRICES["training ml.m5.large"][0] != PRICES["processing ml.m5.large"][0]:
        raise ValueError(f"the estimate prices the pipeline's jobs as ml.m5.large processing, the definition uses "
                         f"{sorted(types)}")
    minutes = len(processing) * a["processing_minutes_per_step"] + a["training_minutes_per_run"]
    text = (f"{len(processing)} processing steps x {a['processing_minutes_per_step']:g} min + training "
            f"{a['training_minutes_per_run']:g} min, all on ml.m5.large (training and processing cost the same)")
    return minutes, text


def _line_items(a: dict) -> list[tuple]:
    """(item, quantity, price key, price divisor, assumption, keys it depends on) for each line of the bill."""
    endpoint = endpoint_config_request("a", "b", 0.0, 20)["ProductionVariants"][0]["InstanceType"]
    monitor = monitoring_schedule_request()["MonitoringScheduleConfig"]["MonitoringJobDefinition"][
        "MonitoringResources"]["ClusterConfig"]["InstanceType"]
    captured_gb = (a["requests_per_day"] * a["capture_percent"] / 100 * a["capture_kb_per_request"]
                   * a["capture_retention_days"] / 1e6)
    pipeline_minutes, pipeline_text = _pipeline_instance_minutes(a)
    rules = len(trigger_rules()) + 2          # + drift_retrain_rule and the project's approval rule
    return [
        ("real-time endpoint", a["hours_per_month"] * a["endpoint_instances"], f"real-time inference {endpoint}", 1,
         f"{a['endpoint_instances']:g} {endpoint} instance(s) all month, {a['hours_per_month']:g} h",
         ("hours_per_month", "endpoint_instances")),
        ("blue/green deployment fleet", a["deployments_per_month"] * a["deployment_hours"] * a["endpoint_instances"],
         f"real-time inference {endpoint}", 1,
         f"green runs beside blue {a['deployment_hours']:g} h per deployment, {a['deployments_per_month']:g} a month",
         ("deployments_per_month", "deployment_hours", "endpoint_instances")),
        ("data capture storage (S3)", captured_gb, "s3 standard", 1,
         (f"{a['capture_percent']:g}% of {a['requests_per_day']:g} requests a day, "
          f"{a['capture_kb_per_request']:g} KB each, kept {a['capture_retention_days']:g} days"),
         ("requests_per_day", "capture_percent", "capture_kb_per_request", "capture_retention_days")),
        ("monthly pipeline run", a["pipeline_runs_per_month"] * pipeline_minutes, "processing ml.m5.large", 60,
         f"{a['pipeline_runs_per_month']:g} run(s): {pipeline_text}",
         ("pipeline_runs_per_month", "processing_minutes_per_step", "training_minutes_per_run")),
        ("Model Monitor hourly data-quality job", a["hours_per_month"] * a["monitor_minutes_per_run"],
         f"processing {monitor}", 60,
         f"one execution an hour, {a['monitor_minutes_per_run']:g} min each on {monitor} (the schedule's type)",
         ("hours_per_month", "monitor_minutes_per_run")),
        ("shadow test variant", a["shadow_days_per_month"] * 24, f"real-time inference {endpoint}", 1,
         f"one extra {endpoint} instance for {a['shadow_days_per_month']:g} days", ("shadow_days_per_month",)),
        ("S3 storage for DVC and artifacts", a["artifact_storage_gb"], "s3 standard", 1,
         f"{a['artifact_storage_gb']:g} GB in S3 Standard", ("artifact_storage_gb",)),
        ("CloudWatch alarms", a["cloudwatch_alarms"], "cloudwatch standard alarm", 1,
         f"{a['cloudwatch_alarms']:g} standard-resolution alarms", ("cloudwatch_alarms",)),
        ("EventBridge rules", rules, "eventbridge aws service events", 1,
         (f"free: AWS service events on the default bus and scheduled rules cost nothing ({rules} rules: "
          "3 pipeline triggers, drift -> retrain, approval -> deploy)"), ()),
    ]


def monthly_cost(assumptions: dict | None = None) -> pd.DataFrame:
    """The credit model's loop on SageMaker in us-east-1, per month: one row per line item, then a total.

    Quantities follow :data:`COST_ASSUMPTIONS` (override any by key; an unknown key or a negative value raises
    ValueError) and the instance types of the requests this module builds; prices come from :data:`PRICES`.
    ``depends_on`` names the assumptions each item moves with. The total's source lists every item's.
    """
    a = _assumptions(assumptions)
    rows = []
    for item, quantity, price_key, per, text, depends_on in _line_items(a):
        price, unit, source = PRICES[price_key]
        unit = unit.replace("hour", "minute") if per == 60 else unit
        rows.append({"item": item, "quantity": float(quantity), "unit": unit, "unit_price_usd": price / per,
                     "usd_per_month": quantity * price / per, "assumption": text, "source": source,
                     "depends_on": depends_on})
    table = pd.DataFrame(rows)
    total = {"item": "total", "quantity": None, "unit": "", "unit_price_usd": None,
             "usd_per_month": table["usd_per_month"].sum(), "assumption": "the sum of the items above",
             "source": "; ".join(dict.fromkeys(table["source"])), "depends_on": tuple(sorted(COST_ASSUMPTIONS))}
    return pd.concat([table, pd.DataFrame([total])], ignore_index=True)
