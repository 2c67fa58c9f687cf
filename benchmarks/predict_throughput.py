"""Readout throughput: cells per second of ``ifcml predict`` with an exported model.

For each model, exports the best design of that model from an experiment (default: the demo's,
from ``ifcml demo``), simulates new samples as an IDEAS-style TIFF export of the model's
channels, and runs the real ``ifcml predict`` in a child pinned to 1 or 2 cores (see
``child.py``) with as many workers, twice: from the raw files (reading, ingesting, measuring
or cropping, classifying, writing the CSVs) and from the same cells already in a CellStore.
``ifcml features`` runs on that store too: a classical readout is measurements plus a
classifier, so its cells/s is set against the measurements' on the same cells.

Every wall time includes start-up (imports, worker processes, loading the model); the
``marginal`` rows cancel it: (cells of the larger sample - cells of the smaller) / (difference
of their wall times), the rate a long sample sees.

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
            tiff, store = folder / f"tiff_{cells}", folder / f"store_{cells}"
            run_ifcml(
                ["simulate", str(tiff), "--patients", "1", "--timepoints", "day0",
                 "--cells-per-sample", str(cells), "--channels", "BF,DF", "--seed", "7"], 2,
            )  # fmt: skip
            run_ifcml(["ingest", str(tiff), "--out", str(store), "--channels", "1:BF,6:DF"], 2)
            samples[cells] = (tiff, store)

        def timed(command: str, source: str, cells: int, workers: int, args: list[str]) -> None:
            wall, peak = run_ifcml([*args, "--workers", str(workers)], workers)
            row = {
                "command": command,
                "from": source,
                "cells": cells,
                "cores": workers,
                "wall_s": round(wall, 1),
                "cells_per_s": round(cells / wall, 1),
                "peak_rss_mib_largest_process": round(peak),
            }
            print(json.dumps(row), flush=True)
            results.append(row)

        for model in options.models.split(","):
            model_dir = folder / f"{model}.model"
            run_ifcml(
                ["export", options.experiment, "--out", str(model_dir), "--model", model,
                 "--tracking-uri", options.tracking_uri], 2,
            )  # fmt: skip
            for cells, (tiff, store) in samples.items():
                for workers in [int(w) for w in options.workers.split(",")]:
                    for source, path, channels in (
                        ("raw files", tiff, ["--channels", "1:BF,6:DF"]),
                        ("store", store, []),
                    ):
                        out = folder / f"{model}_{cells}_{workers}_{source[0]}"
                        timed(
                            f"predict {model}",
                            source,
                            cells,
                            workers,
                            ["predict", str(model_dir), str(path), *channels, "--out", str(out)],
                        )
        for cells, (_, store) in samples.items():
            for workers in [int(w) for w in options.workers.split(",")]:
                out = folder / f"features_{cells}_{workers}.parquet"
                timed(
                    "features",
                    "store",
                    cells,
                    workers,
                    ["features", str(store), "--out", str(out), "--channels", "BF,DF"],
                )
        summary = marginal(results)
        for row in summary:
            print(json.dumps(row), flush=True)
        results += summary
    path = ROOT / "benchmarks" / "results" / "predict_throughput.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))


def marginal(rows: list[dict]) -> list[dict]:
    """Start-up cancelled: for each command, source and cores, the cells/s between the smallest
    and the largest sample."""
    out = []
    keys = {(r["command"], r["from"], r["cores"]) for r in rows if "wall_s" in r}
    for command, source, cores in sorted(keys):
        runs = sorted(
            (r["cells"], r["wall_s"])
            for r in rows
            if (r.get("command"), r.get("from"), r.get("cores")) == (command, source, cores)
        )
        (small, small_s), (large, large_s) = runs[0], runs[-1]
        if large > small and large_s > small_s:
            out.append(
                {
                    "command": command,
                    "from": source,
                    "cores": cores,
                    "marginal_cells_per_s": round((large - small) / (large_s - small_s), 1),
                    "startup_s": round(small_s - small * (large_s - small_s) / (large - small), 1),
                }
            )
    return out


if __name__ == "__main__":
    main()
