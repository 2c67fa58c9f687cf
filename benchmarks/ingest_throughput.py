"""Ingest throughput (cells/s) and peak memory, and how they scale with the number of cells.

Each reader is measured by running the real ``ifcml ingest`` command in a child process
(peak memory = the child's maximum resident set size):

- montage: the real Jurkat montages of ../shared/data, linked N times to make larger inputs;
- cif: simulated cells (with their masks) written as one CIF file;
- tiff: the same simulated cells as an IDEAS-style per-cell TIFF export (one file per cell and channel).

Usage: python benchmarks/ingest_throughput.py [--cells 10000 100000] [--channels BF,DF,CD19]
                                              [--readers montage,cif,tiff]
Results are printed as JSON lines and written to benchmarks/results/ingest_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ifcml.io.cif import write_cif
from ifcml.simulate import PAPER_CHANNELS, SimulatedSource, SimulationSettings, write_tiff_export

ROOT = Path(__file__).resolve().parents[1]
JURKAT = ROOT.parent / "shared" / "data" / "jurkat_ifc" / "Experiment_1"
JURKAT_CELLS = 3419


def run_ingest(args: list[str]) -> tuple[float, float]:
    """Run ``ifcml ingest`` in a fresh child; return (wall seconds, the child's peak RSS in MiB)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(
            [sys.executable, "-m", "ifcml.cli", "ingest", *args], stdout=subprocess.DEVNULL, stderr=errors
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's own resource usage
        wall = time.perf_counter() - start
        if status:
            errors.seek(0)
            raise RuntimeError(f"ingest failed: {errors.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def result(reader: str, cells: int, channels: int, files: int, wall: float, peak: float, **extra) -> dict:
    return {
        "reader": reader, "cells": cells, "channels": channels, "files": files, "seconds": round(wall, 1),
        "cells_per_s": round(cells / wall), "peak_rss_mib": round(peak), **extra,
    }  # fmt: skip


def simulation(n_cells: int, channels: list[str]) -> SimulationSettings:
    per_sample = min(n_cells, 1000)
    return SimulationSettings(
        patients=max(1, n_cells // per_sample),
        timepoints=("day0",),
        cells_per_sample=per_sample,
        channels={k: v for k, v in PAPER_CHANNELS.items() if v in channels},
    )


def channel_spec(settings: SimulationSettings) -> str:
    return ",".join(f"{k}:{v}" for k, v in settings.channels.items())


def bench_montage(n_cells: int, work: Path) -> dict:
    copies = max(1, round(n_cells / JURKAT_CELLS))
    root = work / f"montage_{copies}"
    for i in range(copies):
        for phase in JURKAT.iterdir():
            target = root / phase.name
            target.mkdir(parents=True, exist_ok=True)
            for f in phase.iterdir():
                os.symlink(f, target / f"{f.stem.split('_')[0]}_copy{i:03d}{f.suffix}")
    out = work / f"store_montage_{copies}"
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
            str(out),
        ]
    )
    return result("montage", copies * JURKAT_CELLS, 3, copies * 21, wall, peak)


def bench_cif(n_cells: int, channels: list[str], work: Path) -> dict:
    settings = simulation(n_cells, channels)
    source = SimulatedSource(settings)
    path = work / f"cells_{n_cells}.cif"
    cells = (
        (number, image, mask)
        for chunk in source.chunks(256)
        for number, image, mask in zip(chunk.object_numbers, chunk.images, chunk.masks, strict=True)
    )
    write_cif(path, cells, channels=list(settings.channels))
    out = work / f"store_cif_{n_cells}"
    wall, peak = run_ingest([str(path), "--channels", channel_spec(settings), "--out", str(out)])
    return result("cif", source.n_candidates, len(settings.channels), 1, wall, peak)


def bench_tiff(n_cells: int, channels: list[str], work: Path) -> dict:
    settings = simulation(n_cells, channels)
    source = SimulatedSource(settings)
    raw = work / f"tiff_{n_cells}"
    t0 = time.perf_counter()
    write_tiff_export(source, raw)
    simulate_s = time.perf_counter() - t0
    sources = sorted(str(p) for p in raw.iterdir() if p.is_dir())
    out = work / f"store_tiff_{n_cells}"
    wall, peak = run_ingest([*sources, "--channels", channel_spec(settings), "--out", str(out)])
    n, c = source.n_candidates, len(settings.channels)
    return result("tiff", n, c, n * c, wall, peak, simulate_cells_per_s=round(n / simulate_s))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--channels", default="BF,DF,CD19", help="simulated channels (cif and tiff readers)")
    parser.add_argument("--readers", default="montage,cif,tiff")
    args = parser.parse_args()
    readers = args.readers.split(",")
    channels = args.channels.split(",")
    results = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("IFCML_BENCH_TMP")) as tmp:
        for n in args.cells:
            for reader in readers:
                if reader == "montage" and not JURKAT.is_dir():
                    print(f"montage skipped: {JURKAT} not found")
                    continue
                work = Path(tmp)
                measured = bench_montage(n, work) if reader == "montage" else (
                    bench_cif(n, channels, work) if reader == "cif" else bench_tiff(n, channels, work)
                )  # fmt: skip
                results.append(measured)
                print(json.dumps(measured), flush=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "ingest_throughput.json").write_text(
        json.dumps({"cores": os.cpu_count(), "results": results}, indent=2)
    )


if __name__ == "__main__":
    main()
