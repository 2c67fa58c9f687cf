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
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from child import run_ifcml
from ifcml.io.cif_writer import write_cif
from ifcml.simulate import PAPER_CHANNELS, SimulatedSource, SimulationSettings, write_tiff_export

ROOT = Path(__file__).resolve().parents[1]
JURKAT = ROOT.parent / "shared" / "data" / "jurkat_ifc" / "Experiment_1"
JURKAT_CELLS = 3419


@dataclass
class Input:
    """A prepared input: the ingest arguments (without --out) and what it holds."""

    reader: str
    args: list[str]
    cells: int
    channels: int
    files: int
    extra: dict


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


def montage_input(n_cells: int, work: Path) -> Input:
    copies = max(1, round(n_cells / JURKAT_CELLS))
    root = work / f"montage_{copies}"
    for i in range(copies):
        for phase in JURKAT.iterdir():
            target = root / phase.name
            target.mkdir(parents=True, exist_ok=True)
            for f in phase.iterdir():
                os.symlink(f, target / f"{f.stem.split('_')[0]}_copy{i:03d}{f.suffix}")
    args = [str(root), "--format", "montage", "--grid", "30x30", "--channels", "3:BF,4:DNA,6:DF"]
    return Input("montage", args, copies * JURKAT_CELLS, 3, copies * 21, {})


def cif_input(n_cells: int, channels: list[str], work: Path) -> Input:
    settings = simulation(n_cells, channels)
    source = SimulatedSource(settings)
    path = work / f"cells_{n_cells}.cif"
    cells = (
        (number, image, mask)
        for chunk in source.chunks(256)
        for number, image, mask in zip(chunk.object_numbers, chunk.images, chunk.masks, strict=True)
    )
    write_cif(path, cells, channels=list(settings.channels))
    args = [str(path), "--channels", channel_spec(settings)]
    return Input("cif", args, source.n_candidates, len(settings.channels), 1, {})


def tiff_input(n_cells: int, channels: list[str], work: Path) -> Input:
    settings = simulation(n_cells, channels)
    source = SimulatedSource(settings)
    raw = work / f"tiff_{n_cells}"
    t0 = time.perf_counter()
    write_tiff_export(source, raw)
    simulate_s = time.perf_counter() - t0
    sources = sorted(str(p) for p in raw.iterdir() if p.is_dir())
    n, c = source.n_candidates, len(settings.channels)
    extra = {"simulate_cells_per_s": round(n / simulate_s)}
    return Input("tiff", [*sources, "--channels", channel_spec(settings)], n, c, n * c, extra)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--channels", default="BF,DF,CD19", help="simulated channels (cif and tiff readers)")
    parser.add_argument("--readers", default="montage,cif,tiff")
    parser.add_argument("--cores", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    args = parser.parse_args()
    channels = args.channels.split(",")
    results = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("IFCML_BENCH_TMP")) as tmp:
        work = Path(tmp)
        for n in args.cells:
            for reader in args.readers.split(","):
                if reader == "montage" and not JURKAT.is_dir():
                    print(f"montage skipped: {JURKAT} not found")
                    continue
                if reader == "montage":
                    prepared = montage_input(n, work)
                elif reader == "cif":
                    prepared = cif_input(n, channels, work)
                else:
                    prepared = tiff_input(n, channels, work)
                for cores in args.cores:
                    out = work / f"store_{reader}_{n}_{cores}"
                    wall, peak = run_ifcml(["ingest", *prepared.args, "--out", str(out)], cores)
                    shutil.rmtree(out)
                    measured = {
                        "reader": reader, "cells": prepared.cells, "channels": prepared.channels,
                        "files": prepared.files, "cores": cores, "seconds": round(wall, 1),
                        "cells_per_s": round(prepared.cells / wall), "peak_rss_mib": round(peak),
                        **prepared.extra,
                    }  # fmt: skip
                    results.append(measured)
                    print(json.dumps(measured), flush=True)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "ingest_throughput.json").write_text(json.dumps({"results": results}, indent=2))


if __name__ == "__main__":
    main()
