"""What a verified read costs: the same cells in a store with a CRC-32C per chunk (schema 2) and
in one without (schema 1), read side by side in one run.

Measures, per store: raw reads (``CellStore.read`` over every chunk, cells/s), ``ifcml info
--verify`` (every chunk checked and the SHA-256 recomputed), ``ifcml features``' throughput
(``write_features``, one worker) and, given an exported model, ``ifcml predict``'s
(``write_predictions``, one worker). Simulated label-free cells (BF, DF).

Usage: python benchmarks/verified_read.py [--cells 20000] [--measured 1000] [--repeats 3]
           [--measure-repeats 2] [--model demo_output/model]
Results: printed as JSON lines and written to benchmarks/results/verified_read.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import zarr
from zarr.codecs import BloscCodec

from ifcml.deploy.predict import write_predictions
from ifcml.executors import Running
from ifcml.features.table import write_features
from ifcml.io.store import CellStore, write_store
from ifcml.simulate import SimulatedSource, SimulationSettings

ROOT = Path(__file__).resolve().parents[1]


def unchecked_copy(store: CellStore, out: Path) -> CellStore:
    """The same store as schema 1 wrote it: the same chunks, compressed alike, no checksums."""
    shutil.copytree(store.path, out, ignore=shutil.ignore_patterns("images.zarr"))
    group = zarr.open_group(out / "images.zarr", mode="w")
    source = store.images
    target = group.create_array(
        "images", shape=source.shape, chunks=source.chunks, dtype=source.dtype, fill_value=0,
        compressors=[BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")],
    )  # fmt: skip
    step = source.chunks[0]
    for start in range(0, store.n_cells, step):
        target[start : start + step] = source[start : start + step]
    meta = json.loads((out / "meta.json").read_text())
    (out / "meta.json").write_text(json.dumps({**meta, "schema_version": 1}))
    return CellStore(out)


def rate(cells: int, action, repeats: int) -> float:
    """Cells per second of ``action``, best of ``repeats`` (the least disturbed run)."""
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - began)
    return cells / best


def read_all(store: CellStore) -> None:
    step = store.images.chunks[0]
    for start in range(0, store.n_cells, step):
        store.read(start, min(start + step, store.n_cells))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=20000)
    parser.add_argument("--measured", type=int, default=1000, help="cells measured by features and predict")
    parser.add_argument("--repeats", type=int, default=3, help="runs of reads and verify (best counts)")
    parser.add_argument("--measure-repeats", type=int, default=2, help="runs of features and predict")
    parser.add_argument("--model", type=Path, default=None, help="an exported model folder, for predict")
    options = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def simulated(cells: int, name: str) -> CellStore:
            settings = SimulationSettings(
                patients=1, timepoints=("day0",), cells_per_sample=cells, channels={1: "BF", 6: "DF"}, seed=7
            )
            return write_store([SimulatedSource(settings)], folder / name)

        big, small = simulated(options.cells, "big"), simulated(options.measured, "small")
        pairs = {
            "read": (big, unchecked_copy(big, folder / "big_v1")),
            "measure": (small, unchecked_copy(small, folder / "small_v1")),
        }
        for checked, label in ((0, "crc32c"), (1, "none")):
            store = pairs["read"][checked]
            row = {"checksums": label, "cells": store.n_cells}
            row["read_cells_per_s"] = rate(store.n_cells, lambda s=store: read_all(s), options.repeats)
            row["verify_cells_per_s"] = rate(store.n_cells, store.verify, options.repeats)
            measured = pairs["measure"][checked]
            row["features_cells_per_s"] = rate(
                measured.n_cells,
                lambda s=measured, k=label: write_features(
                    s.path, folder / f"f_{k}.parquet", run=Running(overwrite=True)
                ),
                options.measure_repeats,
            )
            if options.model:
                row["predict_cells_per_s"] = rate(
                    measured.n_cells,
                    lambda s=measured, k=label: write_predictions(
                        options.model, [s], folder / f"p_{k}_{time.time()}"
                    ),
                    options.measure_repeats,
                )
            print(json.dumps(row), flush=True)
            results.append(row)
    out = ROOT / "benchmarks" / "results" / "verified_read.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
