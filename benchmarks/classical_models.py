"""Balanced accuracy and tuning time of every classical model, leave-one-instance-out.

Runs ``ifcml.experiments.run.run_model`` (nested hyperopt tuning, MLflow logging into a
temporary SQLite store) for each model spec on a feature table, by default the demo's
(`ifcml demo` writes demo_output/features.parquet: 12 simulated samples x 300 cells).

Usage: python benchmarks/classical_models.py [FEATURES.parquet] [--channels BF,DF] [--max-evals 10]
Results are printed as JSON lines and written to benchmarks/results/classical_models.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ifcml.experiments.run import TrainOptions, run_model

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["naive_bayes", "linear_svm", "random_forest", "xgboost"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("features", nargs="?", default=str(ROOT / "demo_output" / "features.parquet"))
    parser.add_argument("--channels", default="BF,DF")
    parser.add_argument("--max-evals", type=int, default=10)
    parser.add_argument("--models", default=",".join(MODELS))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            started = time.perf_counter()
            options = TrainOptions(
                channels=args.channels.split(","),
                max_evals=args.max_evals,
                experiment="benchmark",
                uri=f"sqlite:///{tmp}/mlflow.db",
            )
            result = run_model(args.features, model, options)
            m = result.metrics
            row = {
                "model": model,
                "channels": args.channels,
                "max_evals": args.max_evals,
                "balanced_accuracy": round(m["balanced_accuracy"], 3),
                "ci": [round(m["balanced_accuracy_ci_low"], 3), round(m["balanced_accuracy_ci_high"], 3)],
                "readout_mae": round(m.get("readout_mae", float("nan")), 3),
                "sens_spec_25": [m.get("sensitivity_25pct"), m.get("specificity_25pct")],
                "sens_spec_10": [m.get("sensitivity_10pct"), m.get("specificity_10pct")],
                "tuning_and_fit_s": round(m["train_seconds"], 1),
                "wall_s_incl_final_refit_and_logging": round(time.perf_counter() - started, 1),
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    out = ROOT / "benchmarks" / "results" / "classical_models.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
