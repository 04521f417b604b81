"""Benchmark: runs logged per second on the class server (deploy/class_server.py) with a class at once.

    sudo -E .venv/bin/python tools/bench_class_server.py [--students 30] [--workers 2]

Starts a class server on loopback (throwaway secrets, free ports, Unix accounts named bench-class-*), runs
deploy/class_load.py's students without a restart, then reports: runs per second, the p50/p99 of one
metric-logging call, the server's peak memory (MLflow + PostgreSQL, PSS), and what the load left on disk per
run (database and artifacts): the inputs of the sizing table in instructors/class_server.md. Everything is
removed afterwards. Needs root, PostgreSQL and OpenSSH's server; without them it says so and measures nothing.
"""
import argparse
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "deploy"))
import class_load
import class_server

from mlops_lab.servers import free_port


def database_mb(settings, password: str) -> float:
    query = "SELECT pg_database_size('mlflow') + pg_database_size('mlflow_auth')"
    out = subprocess.run([class_server.postgres_bin("psql"), "-h", settings.host, "-p", str(settings.db_port), "-U",
                          "mlflow", "-d", "postgres", "-tAc", query], env={**os.environ, "PGPASSWORD": password},
                         capture_output=True, text=True, check=True).stdout
    return int(out) / 2**20


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_class_server: not measured: needs root (sudo -E), PostgreSQL and OpenSSH's server")
        return 0
    os.environ.update({name: secrets.token_urlsafe(18) for name in class_server.SECRETS})
    home = Path(tempfile.mkdtemp(prefix="bench-class-"))
    settings = class_server.Settings(home, name="bench-class", db_port=free_port(), mlflow_port=free_port(),
                                     ssh_port=free_port(), workers=args.workers)
    students = [f"bench-class-s{i:02d}" for i in range(1, args.students + 1)]
    try:
        class_server.up(settings, students)
        db_before = database_mb(settings, os.environ["CLASS_DB_PASSWORD"])
        result = class_load.run_class_load(settings, students, home / "load")
        runs = args.students * class_load.RUNS
        db_per_run = (database_mb(settings, os.environ["CLASS_DB_PASSWORD"]) - db_before) / runs
        print(f"class server, {args.students} students at once, {args.workers} MLflow workers, "
              f"{os.cpu_count()} CPUs (clients on the same machine)")
        print(f"  {runs} runs in {result.seconds:.1f} s: {result.runs_per_second:.2f} runs/s, "
              f"{len(result.latencies_ms) / result.seconds:.1f} metric calls/s")
        print(f"  one metric-logging call: p50 {result.latency(0.5):.0f} ms, p99 {result.latency(0.99):.0f} ms")
        print(f"  server peak memory (MLflow + PostgreSQL, PSS): {result.peak_server_mb:.0f} MB")
        print(f"  per run ({class_load.STEPS} metric steps, one {class_load.ARTIFACT_KB} KB artifact, one model "
              f"version): database {db_per_run * 1024:.1f} KB, artifacts "
              f"{folder_mb(settings.path('artifacts')) / runs * 1024:.1f} KB")
        print(f"  failed students: {sum(1 for code in result.exit_codes.values() if code != 0)}")
    finally:
        class_server.down(settings, purge=True)  # also after a failed `up`: whatever it created
    return 0


if __name__ == "__main__":
    sys.exit(main())
