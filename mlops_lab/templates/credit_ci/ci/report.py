"""The reviewer's report, CML style: the gate's verdict, metrics and params against the base branch, a plot.

On the forge, `cml comment create report.md` posts it to the pull request; here it is report.md (and
report.png), which the job log and the merge request's artifacts show.
"""
import argparse
import json
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--base", default="origin/main", help="the git revision to compare with")
parser.add_argument("--out", default="report.md")
args = parser.parse_args()


def dvc_diff(what: str) -> str:
    """`dvc metrics diff` or `dvc params diff` against the base, as a Markdown table."""
    result = subprocess.run(["dvc", what, "diff", args.base, "--md"], capture_output=True, text=True)
    return result.stdout.strip() or f"_no {what} changed against {args.base}_"


base_roc = subprocess.run(["git", "show", f"{args.base}:plots/roc.csv"], capture_output=True, text=True).stdout
fig, ax = plt.subplots(figsize=(4, 3.2))
if base_roc:
    base = pd.read_csv(pd.io.common.StringIO(base_roc))
    ax.plot(base["fpr"], base["tpr"], color="grey", label=args.base)
head = pd.read_csv("plots/roc.csv")
ax.plot(head["fpr"], head["tpr"], color="tab:blue", label="this branch")
ax.plot([0, 1], [0, 1], ls=":", color="lightgrey")
ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC, test month")
ax.legend(loc="lower right")
fig.tight_layout()
fig.savefig("report.png", dpi=100)

gate = json.loads(Path("reports/gate.json").read_text())
Path(args.out).write_text("\n\n".join([
    "## Model report",
    f"**Gate: {'passed' if gate['passed'] else 'REFUSED'}** against champion version "
    f"{gate['champion_version']} on {gate['holdout_month']}: {gate['reason']}",
    "### Metrics\n\n" + dvc_diff("metrics"),
    "### Parameters\n\n" + dvc_diff("params"),
    "### ROC\n\n![ROC of this branch and the base](report.png)",
]) + "\n")
print(Path(args.out).read_text())
