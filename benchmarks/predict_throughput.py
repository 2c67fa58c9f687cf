"""Readout throughput: cells per second of ``ifcml predict`` with an exported model, from raw files.

For each model, exports the best design of that model from an experiment (default: the demo's,
from ``ifcml demo``), simulates new samples as an IDEAS-style TIFF export of the model's
channels, and runs the real ``ifcml predict`` in a child pinned to 1 or 2 cores (see
``child.py``) with as many workers: reading the files, ingesting, measuring (classical) or
cropping (networks), classifying and writing the CSVs, start-up included.

Usage: python benchmarks/predict_throughput.py [--models linear_svm,compact_cnn]
           [--cells 1000,4000] [--workers 1,2] [--experiment demo]
           [--tracking-uri sqlite:///demo_output/mlflow.db]
Results: printed as JSON lines and written to benchmarks/results/predict_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from child import run_ifcml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="linear_svm,compact_cnn")
    parser.add_argument("--cells", default="1000,4000")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--experiment", default="demo")
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'demo_output' / 'mlflow.db'}")
    options = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        samples = {}
        for cells in [int(n) for n in options.cells.split(",")]:
            samples[cells] = folder / f"tiff_{cells}"
            run_ifcml(
                ["simulate", str(samples[cells]), "--patients", "1", "--timepoints", "day0",
                 "--cells-per-sample", str(cells), "--channels", "BF,DF", "--seed", "7"], 2,
            )  # fmt: skip
        for model in options.models.split(","):
            model_dir = folder / f"{model}.model"
            run_ifcml(
                ["export", options.experiment, "--out", str(model_dir), "--model", model,
                 "--tracking-uri", options.tracking_uri], 2,
            )  # fmt: skip
            for cells, tiff in samples.items():
                for workers in [int(w) for w in options.workers.split(",")]:
                    out = folder / f"{model}_{cells}_{workers}"
                    wall, peak = run_ifcml(
                        ["predict", str(model_dir), str(tiff), "--channels", "1:BF,6:DF",
                         "--workers", str(workers), "--out", str(out)], workers,
                    )  # fmt: skip
                    row = {
                        "model": model,
                        "cells": cells,
                        "cores": workers,
                        "wall_s": round(wall, 1),
                        "cells_per_s": round(cells / wall, 1),
                        "peak_rss_mib_largest_process": round(peak),
                    }
                    print(json.dumps(row), flush=True)
                    results.append(row)
    path = ROOT / "benchmarks" / "results" / "predict_throughput.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
