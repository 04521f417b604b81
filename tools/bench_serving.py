"""Benchmark: the serving path of chapters 09-10, printed as a Markdown table.

    python tools/bench_serving.py [--requests 1000] [--seconds 5] [--skip-mlflow]

In one run, on 127.0.0.1, with the same registered model:

- one-row latency (p50, p99) calling the lean model server directly and through the router, interleaved in
  rounds so both see the same machine load; the router's overhead is the difference (target: <= 1 ms p50);
- sustained requests per second through the router (8 clients, as fast as they can, zero errors expected);
- ``mlflow models serve`` against the lean server: one-row p50/p99, start-up time and resident memory
  (target: the lean path at least 4x faster at p50), twice: serving the very same pyfunc model
  (``CreditScorer``: the server's own cost), and serving the scikit-learn flavour that chapter 04's registry
  logs (``mlops_lab.registry.log_credit_model``: the path the issue's 8.6 ms reference measured, whose
  pipeline validates its input on every call).

Every server is started by ``BackgroundServer`` and stopped at the end.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlops_lab import CreditStream  # noqa: E402
from mlops_lab.loadgen import payloads, rss_mb, run_load, summarize  # noqa: E402
from mlops_lab.models import train  # noqa: E402
from mlops_lab.router import router_command  # noqa: E402
from mlops_lab.servers import BackgroundServer  # noqa: E402
from mlops_lab.chapter import Chapter  # noqa: E402
from mlops_lab.registry import start_tracking  # noqa: E402
from mlops_lab.serving import log_credit_scorer, request_frame  # noqa: E402


def register(folder: Path) -> tuple[str, str]:
    """Register the same fitted pipeline twice: as the lean CreditScorer pyfunc and as chapter 04's sklearn model."""
    import mlflow
    from mlflow import MlflowClient

    from mlops_lab.registry import log_credit_model

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    start_tracking(Chapter("bench_serving", folder, 0, uri), "bench_serving", "credit")
    stream = CreditStream(seed=0, rows_per_month=3000)
    training = stream.training_window("2024-01-01", months=1)
    pipeline = train(training, as_of="2024-01-01")
    with mlflow.start_run():
        version = log_credit_scorer(pipeline, training.head(100), "credit")
        sklearn_info = log_credit_model(pipeline, training, name="sklearn", registered_model_name="credit-sklearn")
    client = MlflowClient()
    client.set_registered_model_alias("credit", "champion", version.version)
    client.set_registered_model_alias("credit-sklearn", "champion", sklearn_info.registered_model_version)
    return "models:/credit@champion", "models:/credit-sklearn@champion"


def started(server: BackgroundServer) -> tuple[BackgroundServer, float]:
    t = time.perf_counter()
    server.start()
    return server, time.perf_counter() - t


def percentiles(latencies_s) -> tuple[float, float]:
    ms = np.asarray(latencies_s) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="one-row requests per path")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the sustained-load run")
    parser.add_argument("--skip-mlflow", action="store_true", help="do not start `mlflow models serve`")
    args = parser.parse_args()
    python = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        model_uri, sklearn_uri = register(Path(tmp))
        bodies = payloads(request_frame(CreditStream(seed=1).month(6, rows=500)), rows_per_request=1)
        servers = []
        try:
            lean, lean_start = started(BackgroundServer(
                [python, "-m", "mlops_lab.serving", "--model-uri", model_uri, "--port", "{port}"],
                name="lean", health_path="/ping"))
            servers.append(lean)
            router, _ = started(BackgroundServer(router_command(lean.url), name="router", health_path="/ping"))
            servers.append(router)

            # Direct and routed, interleaved in rounds: both paths see the same background load.
            direct, routed = [], []
            run_load(lean.url, bodies, rate=None, requests=100, concurrency=1)
            run_load(router.url, bodies, rate=None, requests=100, concurrency=1)
            rounds = 10
            for _ in range(rounds):
                direct.append(run_load(lean.url, bodies, rate=None, requests=args.requests // rounds, concurrency=1))
                routed.append(run_load(router.url, bodies, rate=None, requests=args.requests // rounds,
                                       concurrency=1))
            d50, d99 = percentiles(np.concatenate([log["latency_s"] for log in direct]))
            r50, r99 = percentiles(np.concatenate([log["latency_s"] for log in routed]))
            sustained = summarize(run_load(router.url, bodies, rate=None, duration_s=args.seconds, concurrency=8))
            lean_rss, router_rss = rss_mb(lean.process.pid), rss_mb(router.process.pid)

            mlflow_rows = {}
            for label, uri in ([] if args.skip_mlflow else [("same pyfunc model", model_uri),
                                                             ("scikit-learn flavour (chapter 04)", sklearn_uri)]):
                env = {"PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
                mlflow_server, mlflow_start = started(BackgroundServer(
                    [python, "-m", "mlflow", "models", "serve", "-m", uri, "--env-manager", "local",
                     "--host", "127.0.0.1", "--port", "{port}", "--workers", "1"],
                    name="mlflow-serve", health_path="/ping", env=env, startup_timeout=120))
                servers.append(mlflow_server)
                run_load(mlflow_server.url, bodies, rate=None, requests=100, concurrency=1)
                log = run_load(mlflow_server.url, bodies, rate=None, requests=args.requests // 2, concurrency=1)
                assert summarize(log)["errors"] == 0 and (log["status"] == 200).all(), f"{label}: requests failed"
                mlflow_rows[label] = (*percentiles(log["latency_s"]), rss_mb(mlflow_server.process.pid), mlflow_start)
                mlflow_server.stop()
        finally:
            for server in servers:
                server.stop()

    print(f"\n| serving path ({os.cpu_count()} cores, one-row requests) | p50 ms | p99 ms | notes |")
    print("|---|---:|---:|---|")
    print(f"| lean model server, direct | {d50:.2f} | {d99:.2f} | {lean_rss:.0f} MB, healthy in {lean_start:.1f} s |")
    print(f"| through the router | {r50:.2f} | {r99:.2f} | router {router_rss:.0f} MB |")
    print(f"| **router overhead** | **{r50 - d50:.2f}** | {r99 - d99:.2f} | target <= 1 ms at p50 |")
    print(f"| sustained through the router, 8 clients | {sustained['p50_ms']:.2f} | {sustained['p99_ms']:.2f} | "
          f"**{sustained['rps']:.0f} requests/s**, {sustained['errors']} errors in {sustained['requests']} |")
    for label, (m50, m99, mlflow_rss, mlflow_start) in mlflow_rows.items():
        print(f"| `mlflow models serve`, {label} | {m50:.2f} | {m99:.2f} | {mlflow_rss:.0f} MB, healthy in "
              f"{mlflow_start:.1f} s; lean path **{m50 / d50:.1f}x** faster at p50 ({m99 / d99:.1f}x at p99) |")


if __name__ == "__main__":
    main()
