"""Export the registry's champion to champion/, where the pipeline's gate (validate_model) reads it.

The registry is reached through MLFLOW_TRACKING_URI, a secret of the CI project; without one (a fork's
pull request gets no secrets) or without a champion yet, the gate compares with the incumbent policy.
"""
import os
import sys

from mlops_lab.dvc_project import export_champion

name, uri = os.environ.get("MODEL_NAME", "credit"), os.environ.get("MLFLOW_TRACKING_URI")
if not uri:
    export_champion(".", None)
    sys.exit(print("champion: no MLFLOW_TRACKING_URI (no secrets here): the gate compares with the incumbent"))

import mlflow  # noqa: E402  (slow: only when there is a registry)
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

try:
    version = MlflowClient().get_model_version_by_alias(name, "champion")
except MlflowException:
    export_champion(".", None)
    sys.exit(print(f"champion: {name} has no champion yet: the gate compares with the incumbent"))
export_champion(".", mlflow.sklearn.load_model(f"models:/{name}/{version.version}"), version.version)
print(f"champion: {name} version {version.version} exported to champion/")
