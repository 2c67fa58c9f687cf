"""Ingest throughput (cells/s) and peak memory, and how they scale with the number of cells.

Two readers are measured, each by running the real ``ifcml ingest`` command in a child process
(peak memory = the child's maximum resident set size):

- tiff: a simulated IDEAS-style per-cell TIFF export (one file per cell and channel);
- montage: the real Jurkat montages of ../shared/data, linked N times to make larger inputs.

Usage: python benchmarks/ingest_throughput.py [--cells 10000 100000] [--channels BF,DF,CD19]
Results are printed as a table and written as JSON to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ifcml.simulate import PAPER_CHANNELS, SimulatedSource, SimulationSettings, write_tiff_export

ROOT = Path(__file__).resolve().parents[1]
JURKAT = ROOT.parent / "shared" / "data" / "jurkat_ifc" / "Experiment_1"
JURKAT_CELLS = 3419


def run_ingest(args: list[str]) -> tuple[float, float]:
    """Run ``ifcml ingest`` in a fresh child; return (wall seconds, child peak RSS in MiB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ifcml.cli", "ingest", *args], check=True, capture_output=True)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(peak, before) / 1024


def bench_tiff(n_cells: int, channels: list[str], work: Path) -> dict:
    names = {k: v for k, v in PAPER_CHANNELS.items() if v in channels}
    per_sample = 1000
    settings = SimulationSettings(
        patients=max(1, n_cells // per_sample),
        timepoints=("day0",),
        cells_per_sample=per_sample,
        channels=names,
    )
    raw = work / f"tiff_{n_cells}"
    t0 = time.perf_counter()
    write_tiff_export(SimulatedSource(settings), raw)
    simulate_s = time.perf_counter() - t0
    sources = sorted(str(p) for p in raw.iterdir() if p.is_dir())
    spec = ",".join(f"{k}:{v}" for k, v in names.items())
    wall, peak = run_ingest([*sources, "--channels", spec, "--out", str(work / f"store_tiff_{n_cells}")])
    n = settings.patients * per_sample
    return {
        "reader": "tiff",
        "cells": n,
        "channels": len(names),
        "files": n * len(names),
        "seconds": round(wall, 1),
        "cells_per_s": round(n / wall),
        "peak_rss_mib": round(peak),
        "simulate_cells_per_s": round(n / simulate_s),
    }


def bench_montage(n_cells: int, work: Path) -> dict:
    copies = max(1, round(n_cells / JURKAT_CELLS))
    root = work / f"montage_{copies}"
    for i in range(copies):
        for phase in JURKAT.iterdir():
            target = root / f"{phase.name}"
            target.mkdir(parents=True, exist_ok=True)
            for f in phase.iterdir():
                os.symlink(f, target / f"{f.stem.split('_')[0]}_copy{i:03d}{f.suffix}")
    wall, peak = run_ingest(
        [
            str(root),
            "--format",
            "montage",
            "--grid",
            "30x30",
            "--channels",
            "3:BF,4:DNA,6:DF",
            "--out",
            str(work / f"store_montage_{copies}"),
        ]
    )
    n = copies * JURKAT_CELLS
    return {
        "reader": "montage",
        "cells": n,
        "channels": 3,
        "files": copies * 21,
        "seconds": round(wall, 1),
        "cells_per_s": round(n / wall),
        "peak_rss_mib": round(peak),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--channels", default="BF,DF,CD19", help="simulated channels for the tiff reader")
    parser.add_argument("--readers", default="montage,tiff")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("IFCML_BENCH_TMP")) as tmp:
        for n in args.cells:
            if "montage" in args.readers and JURKAT.is_dir():
                results.append(bench_montage(n, Path(tmp)))
                print(json.dumps(results[-1]), flush=True)
            if "tiff" in args.readers:
                results.append(bench_tiff(n, args.channels.split(","), Path(tmp)))
                print(json.dumps(results[-1]), flush=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "ingest_throughput.json").write_text(
        json.dumps({"cores": os.cpu_count(), "results": results}, indent=2)
    )


if __name__ == "__main__":
    main()
