"""main only: register the model the gate passed as a new version, with the alias `candidate`.

Deployment is a separate, approved step (ci/deploy.py). Writes CANDIDATE=<version> to candidate.env (a
GitLab dotenv report) and to $GITHUB_OUTPUT (a GitHub step output) for the deploy job.
"""
import json
import os
import sys
from pathlib import Path

import joblib

gate = json.loads(Path("reports/gate.json").read_text())
if not gate["passed"]:
    sys.exit(f"register: the gate refused this model ({gate['reason']}); nothing registered")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

from mlops_lab.registry import PIP_REQUIREMENTS, set_alias  # noqa: E402  (requirements given: MLflow need not infer them)

name = os.environ.get("MODEL_NAME", "credit")
commit = os.environ.get("GITHUB_SHA") or os.environ.get("CI_COMMIT_SHA", "")
with mlflow.start_run(run_name=f"ci {commit[:8]}"):
    mlflow.log_metrics({k: v for k, v in json.loads(Path("metrics.json").read_text()).items()
                        if isinstance(v, (int, float))})
    info = mlflow.sklearn.log_model(joblib.load("models/model.joblib"), name="model",
                                    pip_requirements=PIP_REQUIREMENTS)
tags = {"git_commit": commit, "gate.reason": gate["reason"], "gate.champion_version": str(gate["champion_version"])}
version = mlflow.register_model(info.model_uri, name, tags=tags)
set_alias(name, "candidate", version.version, MlflowClient())
Path("candidate.env").write_text(f"CANDIDATE={version.version}\n")
if os.environ.get("GITHUB_OUTPUT"):
    with open(os.environ["GITHUB_OUTPUT"], "a") as out:
        out.write(f"candidate={version.version}\n")
print(f"register: {name} version {version.version} (alias candidate), commit {commit[:8]}")
