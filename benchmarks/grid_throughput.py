"""Grid throughput: tasks per hour of ``ifcml grid`` with 1 and 2 local workers.

Runs the real command in a child process (see ``child.py``) on a small experiment over an
existing feature table (default: the demo's, from ``ifcml demo``): naive Bayes and linear SVM
(max_evals 3) on the label-free channels, leave-one-instance-out, each time into a fresh
SQLite tracking store. Start-up, data loading and MLflow logging are included.

Usage: python benchmarks/grid_throughput.py [FEATURES.parquet] [--workers 1,2]
Results: printed as JSON lines and written to benchmarks/results/grid_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import mlflow
import yaml

from child import run_ifcml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("features", nargs="?", default=str(ROOT / "demo_output" / "features.parquet"))
    parser.add_argument("--workers", default="1,2")
    options = parser.parse_args()
    results = []
    for workers in [int(w) for w in options.workers.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            spec = {
                "name": "grid_benchmark",
                "data": {"store": str(Path(tmp) / "unused"), "features": options.features},
                "models": ["naive_bayes", "linear_svm"],
                "channel_sets": {"label_free": ["BF", "DF"]},
                "max_evals": 3,
            }
            path = Path(tmp) / "grid.yaml"
            path.write_text(yaml.safe_dump(spec))
            uri = f"sqlite:///{tmp}/mlflow.db"
            wall, peak = run_ifcml(
                ["grid", str(path), "--tracking-uri", uri, "--workers", str(workers)], workers
            )
            mlflow.set_tracking_uri(uri)
            runs = mlflow.search_runs(experiment_names=["grid_benchmark"])
            tasks = int(runs["tags.ifcml.task"].notna().sum() + runs["tags.mlflow.parentRunId"].isna().sum())
            assert runs["status"].eq("FINISHED").all(), "a task failed"
            row = {
                "workers": workers,
                "tasks": tasks,
                "wall_s": round(wall, 1),
                "tasks_per_hour": round(tasks / wall * 3600),
                "peak_rss_mib_largest_process": round(peak),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    out = ROOT / "benchmarks" / "results" / "grid_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
