"""Micro-benchmark: what the registry helpers cost (chapters 04, 05, 10 and 12 call them many times).

    python tools/bench_registry.py [--repeat 3]

In a throwaway SQLite store: ``mlflow.sklearn.log_model`` with requirements inferred (MLflow imports the
model in a subprocess) against :func:`mlops_lab.registry.log_credit_model` (requirements given), then
registering, moving an alias, the validation gate on a holdout of about 3,400 labelled rows (the approved
loans of a 4000-application month, decided on 2024-04-01), and loading by alias.
Prints the best and median wall time of each.
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import timeit
import warnings
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402
import mlflow.sklearn  # noqa: E402

from mlops_lab import registry  # noqa: E402
from mlops_lab.chapter import Chapter  # noqa: E402
from mlops_lab.models import train  # noqa: E402
from mlops_lab.simulator import CreditStream, known_as_of, newest_complete_month  # noqa: E402

AS_OF = "2024-04-01"  # every decision's date: the newest month whose outcomes are all in is 2023-03


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        chapter = Chapter("bench", Path(folder), 0, f"sqlite:///{folder}/mlflow.db")
        names = registry.start_tracking(chapter, "bench", "bench-model")
        stream = CreditStream(seed=0, rows_per_month=4000)
        month = newest_complete_month(AS_OF)
        batch, holdout = stream.labelled([month], AS_OF), known_as_of(stream.month(month, replicate=1), AS_OF)
        model = train(batch, as_of=AS_OF)

        def inferred():
            with mlflow.start_run():
                mlflow.sklearn.log_model(model, name="model", input_example=registry.model_input(batch.head(3)))

        def explicit():
            with mlflow.start_run():
                registry.log_credit_model(model, batch)

        infos = []
        cases = {
            "log_model, requirements inferred": inferred,
            "log_credit_model, requirements given": explicit,
            "log_credit_model + register": lambda: infos.append(
                registry.log_credit_model(model, batch, registered_model_name=names.model)),
            "set_alias": lambda: registry.set_alias(names.model, "champion", 1),
            f"promote_if_better ({len(holdout)}-row holdout)": lambda: registry.promote_if_better(
                names.model, infos[-1].registered_model_version, holdout, as_of=AS_OF),
            "load_model by alias": lambda: registry.load_model(names.model, "champion"),
        }
        print(f"\n| registry operation ({args.repeat} repeats) | best s | median s |\n|---|---:|---:|")
        for name, action in cases.items():
            seconds = timeit.repeat(action, setup="gc.enable()", number=1, repeat=args.repeat)  # GC on, as in use
            print(f"| {name} | {min(seconds):.2f} | {statistics.median(seconds):.2f} |")
        mlflow.set_tracking_uri(None)


if __name__ == "__main__":
    main()
