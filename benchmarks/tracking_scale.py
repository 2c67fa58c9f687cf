"""MLflow at the demo's and the paper's size: what a grid logs and what reading it back costs.

For each size (demo: 5 designs x 12 held-out samples x 5 trials; paper: 40 designs x 19 x 20,
``experiments/doan2020_label_free.yaml``) a fresh SQLite store is written by ifcml's own logging
code (``paper_scale_store.py``) twice: trials as a table (now the default) and trials as nested
runs (as every grid logged before, now ``log_trials: true``). Reported per store: runs, database
size, logging time; how many designs the MLflow UI's default runs page (newest first, 100 runs a
page) shows first and how many "Load more" clicks show them all, against the designs view
ifcml's link opens; and ``ifcml compare`` (the real command in a child process, start-up
included, and its comparison alone in-process) against the old way of reading every run with
``mlflow.search_runs`` (time and peak RSS).

Usage: python benchmarks/tracking_scale.py [--sizes demo,paper]
Results: printed as JSON lines and written to benchmarks/results/tracking_scale.json.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from child import run_ifcml
from ifcml.experiments.compare import comparison
from ifcml.experiments.mlflow_ui import DESIGNS_FILTER
from ifcml.experiments.tracking import Tracking
from paper_scale_store import build

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"demo": {"samples": 12, "trials": 5, "designs": 5}, "paper": {"samples": 19, "trials": 20}}
UI_PAGE = 100  # runs the MLflow UI loads per page


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="demo,paper")
    options = parser.parse_args()
    results = []
    for size in options.sizes.split(","):
        for log_trials in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                row = measure(Path(tmp), size, log_trials)
            print(json.dumps(row), flush=True)
            results.append(row)
    out = ROOT / "benchmarks" / "results" / "tracking_scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


def measure(folder: Path, size: str, log_trials: bool) -> dict:
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    started = time.perf_counter()
    build(uri, experiment="scale", log_trials=log_trials, **SIZES[size])
    logging = time.perf_counter() - started
    tracking = Tracking(uri)
    experiment = tracking.experiment_id("scale")
    runs = tracking.search([experiment], "")
    newest_first = sorted(runs, key=lambda r: r.info.start_time, reverse=True)
    positions = [k for k, run in enumerate(newest_first) if "mlflow.parentRunId" not in run.data.tags]
    designs_view = tracking.search([experiment], DESIGNS_FILTER)
    started = time.perf_counter()
    comparison(tracking, "scale")
    compare_alone = time.perf_counter() - started
    wall, peak = run_ifcml(["compare", "scale", "--tracking-uri", uri, "--out", str(folder / "report")], 1)
    old_wall, old_peak = _old_read(uri)
    return {
        "size": size,
        "trials_as_runs": log_trials,
        "runs": len(runs),
        "database_mb": round((folder / "mlflow.db").stat().st_size / 2**20, 1),
        "logging_s": round(logging, 1),
        "default_page_designs_first_page": sum(p < UI_PAGE for p in positions),
        "default_page_load_more_clicks": math.ceil((max(positions) + 1) / UI_PAGE) - 1,
        "designs_view_first_page": min(UI_PAGE, len(designs_view)),
        "designs_view_clicks": math.ceil(len(designs_view) / UI_PAGE) - 1,
        "compare_command_s": round(wall, 1),
        "compare_command_peak_rss_mib": round(peak),
        "comparison_alone_s": round(compare_alone, 2),
        "old_read_every_run_s": round(old_wall, 1),
        "old_read_every_run_peak_rss_mib": round(old_peak),
    }


def _old_read(uri: str) -> tuple[float, float]:
    """What ``compare`` did before: ``mlflow.search_runs`` of every run, in a fresh process."""
    code = (
        "import mlflow, resource, time; t = time.perf_counter(); "
        f"mlflow.set_tracking_uri({uri!r}); mlflow.search_runs(experiment_names=['scale']); "
        "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    wall, peak = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    return float(wall), float(peak)


if __name__ == "__main__":
    main()
