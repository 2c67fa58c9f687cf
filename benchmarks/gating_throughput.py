"""Gating and FCS export throughput: cells/s and peak memory of `ifcml gate` (the shipped
simulated panel: compensation, five populations, a Boolean gate; and the QC strategy) and of
`ifcml fcs`, on tables of 10^5 and 10^6 cells.

The tables are synthetic (random values in the panel's columns, plus 50 other feature columns
as a real table carries) so that the figures are about gating, not measuring. Each run is a
child process, so its peak memory (ru_maxrss) is its own.

Usage: python benchmarks/gating_throughput.py [--cells 100000 1000000]
Writes benchmarks/results/gating_throughput.csv and prints it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

RESULTS = Path(__file__).resolve().parent / "results"
PANEL = Path(__file__).resolve().parents[1] / "gates" / "simulated_panel.xml"
MARKERS = ("DAPI", "CD19", "CD10", "CD34", "CD45")


def synthetic_table(n: int, path: Path) -> None:
    rng = np.random.default_rng(0)
    columns = {"Metadata_cell_id": np.arange(n), "Metadata_instance": np.repeat("s1", n)}
    for marker in MARKERS:
        columns[f"Cells_Intensity_MeanIntensity_{marker}"] = rng.lognormal(np.log(0.002), 0.6, n)
    columns["Cells_AreaShape_Area"] = rng.normal(600, 120, n)
    columns["Cells_Quality_AspectRatio"] = rng.beta(20, 3, n)
    columns["Cells_Quality_GradientRMS_BF"] = rng.lognormal(np.log(0.001), 0.3, n)
    for k in range(50):
        columns[f"Cells_Texture_Other_BF_{k}"] = rng.normal(size=n)
    pd.DataFrame(columns).to_parquet(path, index=False)


def child(command: list[str]) -> dict:
    """Run one ifcml command in this process (a child of the benchmark); time and peak memory."""
    from ifcml.cli import main

    start = time.perf_counter()
    try:
        main(command)
    except SystemExit as exit_:
        if exit_.code:
            raise
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _in_child(command: list[str]) -> dict:
    code = (
        "import json; from benchmarks.gating_throughput import child; "
        f"print(json.dumps(child({json.dumps(command)})))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=RESULTS.parents[1], check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, nargs="+", default=[100_000, 1_000_000])
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for n in args.cells:
            table = work / f"cells_{n}.parquet"
            synthetic_table(n, table)
            qc = work / f"qc_{n}.xml"
            steps = {
                "qc (derive)": ["qc", table, "--out", qc],
                "gate: panel": ["gate", table, "--gates", PANEL, "--out", work / f"panel_{n}.parquet"],
                "gate: qc": ["gate", table, "--gates", qc, "--out", work / f"qc_{n}.parquet"],
                "fcs": ["fcs", table, "--out", work / f"cells_{n}.fcs"],
            }
            for step, command in steps.items():
                figures = _in_child([str(part) for part in command])
                rows.append({"cells": n, "step": step, **figures, "cells_per_s": n / figures["seconds"]})
                print(rows[-1], flush=True)
    result = pd.DataFrame(rows)
    result.to_csv(RESULTS / "gating_throughput.csv", index=False)
    print(result.to_string(index=False))


if __name__ == "__main__":
    main()
