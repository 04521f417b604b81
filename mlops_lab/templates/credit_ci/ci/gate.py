"""Fail the pipeline when the model gate (dvc stage validate_model) refused the candidate."""
import json
import sys
from pathlib import Path

gate = json.loads(Path("reports/gate.json").read_text())
print(Path("reports/gate.md").read_text())
print("gate.json:", json.dumps(gate))          # one line: the verdict survives in the job's log
if not gate["passed"]:
    sys.exit(f"gate: REFUSED against champion version {gate['champion_version']}: {gate['reason']}")
print(f"gate: passed against champion version {gate['champion_version']}")
