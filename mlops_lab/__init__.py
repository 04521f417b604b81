"""The lab kit of the executable MLOps course book.

- :mod:`mlops_lab.chapter`   ``start_chapter``: fresh workspace, seeds, telemetry off, MLflow store
- :mod:`mlops_lab.simulator` ``CreditStream`` and ``Drift``: the running example (monthly credit batches), and
  the book's clock (``known_as_of``, ``snapshot``, ``lend``): which labels a lender knows on a date
- :mod:`mlops_lab.shell`     ``sh``: run git/dvc/mlflow visibly; raise on failure
- :mod:`mlops_lab.servers`   ``BackgroundServer``: HTTP servers on 127.0.0.1 that always get stopped
- :mod:`mlops_lab.checks`    exercise auto-checks that explain, and never punish a student
- :mod:`mlops_lab.figures`   the house style and figures with knobs that still show in static HTML
- :mod:`mlops_lab.dvc_project` the chapter-03 credit pipeline as a git + DVC project (build, retrain)
- :mod:`mlops_lab.registry`  fast model logging, aliases, the validation gate ``promote_if_better``
- :mod:`mlops_lab.lineage`   lineage from alias to run, commit and DVC hashes, in SageMaker's vocabulary
- :mod:`mlops_lab.serving`   the lean model server (MLflow pyfunc model, REST contract, /metrics)
- :mod:`mlops_lab.router`    the traffic router: rollouts with guardrails, shadow, A/B, data capture
- :mod:`mlops_lab.loadgen`   load generation, latency summaries, timeline figures
- :mod:`mlops_lab.canary`    canary judge and A/B statistics
- :mod:`mlops_lab.drift`     drift statistics and detectors
- :mod:`mlops_lab.monitoring` scraping, delayed labels, rolling metrics, alarms, reports
- :mod:`mlops_lab.contract`  THE data contract (one pandera schema), reference bounds, faulty exports
- :mod:`mlops_lab.model_tests` behavioural model tests, slices, the fairness gap
- :mod:`mlops_lab.ml_test_score` Breck et al.'s rubric and the chapters that earn each point
- :mod:`mlops_lab.gates`     the model gate: challenger vs champion beyond the noise, register only on a pass
- :mod:`mlops_lab.orchestration` the Level 1 pipeline on Prefect, with its schedule, new-data and alarm triggers
- :mod:`mlops_lab.sagemaker` chapter 07's pipeline and triggers as SageMaker/EventBridge requests, checked offline
- :mod:`mlops_lab.retraining` quarantine, retrain guard, retraining policies
- :mod:`mlops_lab.exercises` per-chapter checks
"""
import importlib

# Imported on first use (PEP 562), not with the package: a process that needs one light module (the router,
# started as a script with only the standard library and prometheus_client) does not pay for NumPy and pandas.
_EXPORTS = {"Chapter": "chapter", "start_chapter": "chapter", "CommandFailed": "shell", "sh": "shell",
            **{name: "simulator" for name in (
                "APPROVED", "CATEGORICAL", "EARLY_LABEL", "FEATURES", "NUMERIC", "TARGET", "CreditStream", "Drift",
                "LabelFromTheFuture", "check_known", "known_as_of", "lend", "month_end", "month_label",
                "month_start", "newest_complete_month", "snapshot")}}
__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value            # once: later lookups skip this function
    return value


def __dir__():
    return sorted([*globals(), *_EXPORTS])
