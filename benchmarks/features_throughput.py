"""Feature extraction throughput: cells/s per core for both engines on the same real cells.

The real Jurkat cells (bright-field + dark-field, 40x40) are ingested once, then measured by
the real ``ifcml features`` command in a child process pinned to 1 or 2 cores with as many
workers, for each engine (peak memory = the largest process). The cp-measure engine is also
run on the cells repeated (``--copies``) to see how it scales with the number of cells, and with
``--dask-workers N`` through a Dask LocalCluster of N single-threaded worker processes
(``ifcml features --scheduler``), checking that the table is the one measured locally.

Usage: python benchmarks/features_throughput.py [--engines cp-measure,cellprofiler]
                                                [--cores 1 2] [--copies 1 3] [--cellprofiler-cells 1024]
                                                [--dask-workers 2]
Results are printed as JSON lines and written to benchmarks/results/features_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from child import run_ifcml
from ifcml.io.detect import open_source
from ifcml.io.sources import CellChunk
from ifcml.io.store import CellStore, write_store

ROOT = Path(__file__).resolve().parents[1]
JURKAT = ROOT.parent / "shared" / "data" / "jurkat_ifc" / "Experiment_1"


class Repeated:
    """The first ``n`` cells of a store, repeated ``copies`` times (a Source for write_store)."""

    format = "repeated"
    has_masks = False

    def __init__(self, store: CellStore, copies: int, n: int | None = None):
        self.store, self.copies = store, copies
        self.n = min(n or store.n_cells, store.n_cells)
        self.name = f"{store.path.name} x{copies}"
        self.channels = dict(zip(store.meta["instrument_channels"], store.channels, strict=True))
        self.max_height, self.max_width = store.meta["canvas"]["height"], store.meta["canvas"]["width"]
        self.n_candidates = self.n * copies

    def provenance(self) -> dict:
        return {"format": self.format, "store": str(self.store.path), "copies": self.copies, "cells": self.n}

    def chunks(self, size: int):
        cells = self.store.cells.iloc[: self.n]
        for copy in range(self.copies):
            for start in range(0, self.n, size):
                rows = cells.iloc[start : start + size]
                images = self.store.images[start : start + len(rows)]
                yield CellChunk(
                    images=[
                        image[:, :h, :w]
                        for image, h, w in zip(images, rows["height"], rows["width"], strict=False)
                    ],
                    object_numbers=rows["object_number"].tolist(),
                    labels=rows["label"].tolist(),
                    instances=[f"copy{copy}"] * len(rows),
                    sources=rows["source"].tolist(),
                )


def through_dask(store: CellStore, out: Path, local: Path, workers: int) -> dict:
    """``ifcml features --scheduler`` on a LocalCluster of ``workers`` processes (start-up of
    the cluster excluded); the table must equal the one measured locally at ``local``."""
    import pandas as pd
    from distributed import LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster:
        command = ["features", str(store.path), "--out", str(out), "--scheduler", cluster.scheduler_address]
        wall, peak = run_ifcml(command, os.cpu_count() or 1)
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(local))
    return {
        "engine": "cp-measure via Dask",
        "cells": store.n_cells,
        "dask_workers": workers,
        "wall_s": round(wall, 1),
        "cells_per_s": round(store.n_cells / wall, 1),
        "same_table": True,
        "peak_rss_mib_client": round(peak),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default="cp-measure,cellprofiler")
    parser.add_argument("--cores", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument(
        "--copies", type=int, nargs="+", default=[1, 3], help="cp-measure: repeats of the cells"
    )
    parser.add_argument("--cellprofiler-cells", type=int, default=1024, help="cells CellProfiler measures")
    parser.add_argument("--dask-workers", type=int, default=0, help="also through a LocalCluster of N")
    args = parser.parse_args()
    if not JURKAT.is_dir():
        raise SystemExit(f"needs the real Jurkat montages at {JURKAT}")
    results = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("IFCML_BENCH_TMP")) as tmp:
        work = Path(tmp)
        source = open_source(JURKAT, "montage", channels={3: "BF", 6: "DF"}, grid="30x30")
        jurkat = write_store([source], work / "jurkat")
        cases = [("cp-measure", copies, None) for copies in args.copies]
        cases += [("cellprofiler", 1, args.cellprofiler_cells)]
        for engine, copies, n in cases:
            if engine not in args.engines.split(","):
                continue
            store = write_store([Repeated(jurkat, copies, n)], work / f"{engine}-{copies}-{n}")
            for cores in args.cores:
                out = work / f"f-{engine}-{copies}-{cores}.parquet"
                command = ["features", str(store.path), "--out", str(out), "--engine", engine]
                wall, peak = run_ifcml([*command, "--workers", str(cores)], cores)
                row = {
                    "engine": engine,
                    "cells": store.n_cells,
                    "cores": cores,
                    "wall_s": round(wall, 1),
                    "cells_per_s": round(store.n_cells / wall, 1),
                    "cells_per_s_per_core": round(store.n_cells / wall / cores, 1),
                    "peak_rss_mib": round(peak),
                }
                print(json.dumps(row), flush=True)
                results.append(row)
            if engine == "cp-measure" and args.dask_workers:
                row = through_dask(store, work / f"f-dask-{copies}.parquet", out, args.dask_workers)
                print(json.dumps(row), flush=True)
                results.append(row)
    out = ROOT / "benchmarks" / "results" / "features_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
