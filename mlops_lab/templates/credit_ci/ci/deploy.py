"""After approval: point the alias `champion` at the candidate (servers load models:/credit@champion).

CANDIDATE names the version (from the register job); the alias `candidate` must still point at it, so an
approval given for one version can never deploy another.
"""
import os
import sys

from mlflow import MlflowClient

from mlops_lab.registry import set_alias   # records the move: which version decided when

name, wanted = os.environ.get("MODEL_NAME", "credit"), os.environ.get("CANDIDATE", "")
client = MlflowClient()
candidate = client.get_model_version_by_alias(name, "candidate").version
if wanted and str(wanted) != str(candidate):
    sys.exit(f"deploy: approved version {wanted}, but the candidate is now version {candidate}; not deploying")
set_alias(name, "champion", candidate, client)
print(f"deploy: {name}@champion -> version {candidate}")
