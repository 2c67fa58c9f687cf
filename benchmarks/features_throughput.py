"""Feature extraction throughput: cells/s per core for both engines and for the cp-measure
reference, on the same real cells, with start-up apart from the per-cell rate.

The real Jurkat cells (bright-field + dark-field, 40x40) are ingested once. Each engine is run
by the real ``ifcml features`` command in a child process pinned to 1 or 2 cores with as many
workers (peak memory = the largest process), each at two sizes: the cp-measure engine on the
cells and on the cells repeated (``--copies``), CellProfiler on its first N1 and N2 cells
(``--cellprofiler-cells``). The reference (``reference_engine.py``: cp-measure's own functions
run as ifcml's engine first ran them) is timed alike on one core. Two sizes give each its
per-cell rate (the slope: what 10^5-10^6 cells cost) and its start-up (the intercept: imports,
CellProfiler's start, compiled kernels loaded). The summary compares per-cell rates per core.
With ``--repeats N`` every size runs N times and the fastest run counts: on a shared machine
one disturbed run otherwise moves a slope, most of all CellProfiler's short ones.
With ``--dask-workers N`` the cp-measure engine also runs through a Dask LocalCluster of N
single-threaded worker processes (``ifcml features --scheduler``), checking that the table is
the one measured locally: once as Dask starts workers by default, once with the allocator
setting the README recommends for them (``WORKER_ENVIRONMENT``). Starting a LocalCluster
leaves Dask's worker environment (``MALLOC_TRIM_THRESHOLD_``, thread limits) in this process's
``os.environ``; it is put back, or every later run would inherit it (the large runs had been
measured 60 % slower that way).

Usage: python benchmarks/features_throughput.py [--engines cp-measure,cellprofiler,reference]
            [--cores 1 2] [--copies 1 3] [--cellprofiler-cells 256 1024]
            [--reference-cells 256 512] [--dask-workers 2] [--repeats 2]
Results are printed as JSON lines and written to benchmarks/results/features_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from unittest import mock

from child import run_child, run_ifcml
from ifcml.io.detect import open_source
from ifcml.io.sources import CellChunk
from ifcml.io.store import CellStore, write_store

ROOT = Path(__file__).resolve().parents[1]
JURKAT = ROOT.parent / "shared" / "data" / "jurkat_ifc" / "Experiment_1"
# Dask starts workers with MALLOC_TRIM_THRESHOLD_ set, which fixes glibc's mmap threshold at
# 128 KiB: every montage-sized temporary is then mapped and faulted in afresh (README, Dask)
WORKER_ENVIRONMENT = {"MALLOC_MMAP_THRESHOLD_": 4 * 2**20}


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


def through_dask(store: CellStore, out: Path, local: Path, workers: int, environment: dict) -> dict:
    """``ifcml features --scheduler`` on a LocalCluster of ``workers`` processes started with
    ``environment`` added to Dask's (start-up of the cluster excluded); the table must equal the
    one measured locally at ``local``."""
    import dask
    import pandas as pd
    from distributed import LocalCluster

    settings = {f"distributed.nanny.pre-spawn-environ.{key}": value for key, value in environment.items()}
    with (
        mock.patch.dict(os.environ),  # the cluster writes its workers' environment into ours
        dask.config.set(settings),
        LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster,
    ):
        command = [
            "features",
            str(store.path),
            "--out",
            str(out),
            "--overwrite",
            "--scheduler",
            cluster.scheduler_address,
        ]
        wall, peak = run_ifcml(command, os.cpu_count() or 1)
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(local))
    return {
        "engine": "cp-measure via Dask" + "".join(f", {key}={value}" for key, value in environment.items()),
        "cells": store.n_cells,
        "dask_workers": workers,
        "wall_s": round(wall, 1),
        "cells_per_s": round(store.n_cells / wall, 1),
        "same_table": True,
        "peak_rss_mib_client": round(peak),
    }


def per_cell(rows: list[dict]) -> dict:
    """The per-cell rate and start-up from runs of one engine on one number of cores at two
    sizes; of repeated runs of a size, the fastest (the one the machine disturbed least)."""
    fastest: dict[int, dict] = {}
    for row in rows:
        if row["cells"] not in fastest or row["wall_s"] < fastest[row["cells"]]["wall_s"]:
            fastest[row["cells"]] = row
    small, large = (fastest[n] for n in sorted(fastest)[:: len(fastest) - 1])
    seconds_per_cell = (large["wall_s"] - small["wall_s"]) / (large["cells"] - small["cells"])
    return {
        "engine": small["engine"],
        "cores": small["cores"],
        "cells_per_s": round(1 / seconds_per_cell, 1),
        "cells_per_s_per_core": round(1 / seconds_per_cell / small["cores"], 1),
        "start_up_s": round(small["wall_s"] - small["cells"] * seconds_per_cell, 1),
        "peak_rss_mib": max(row["peak_rss_mib"] for row in rows),
    }


def ratios(rates: list[dict]) -> list[dict]:
    """The cp-measure engine's per-cell rate per core over each other engine's, core for core."""
    ours = {r["cores"]: r["cells_per_s_per_core"] for r in rates if r["engine"] == "cp-measure"}
    return [
        {
            "ratio": f"cp-measure engine / {r['engine']}",
            "cores": r["cores"],
            "x": round(ours[r["cores"]] / r["cells_per_s_per_core"], 1),
        }
        for r in rates
        if r["engine"] != "cp-measure" and r["cores"] in ours
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", default="cp-measure,cellprofiler,reference")
    parser.add_argument("--cores", type=int, nargs="+", default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument(
        "--copies", type=int, nargs=2, default=[1, 3], help="cp-measure: repeats of the cells, two sizes"
    )
    parser.add_argument("--cellprofiler-cells", type=int, nargs=2, default=[256, 1024])
    parser.add_argument("--reference-cells", type=int, nargs=2, default=[256, 512], help="on one core")
    parser.add_argument("--dask-workers", type=int, default=0, help="also through a LocalCluster of N")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every size; the fastest counts")
    args = parser.parse_args()
    if not JURKAT.is_dir():
        raise SystemExit(f"needs the real Jurkat montages at {JURKAT}")
    engines = args.engines.split(",")
    runs: list[dict] = []

    def timed(engine: str, cells: int, cores: int, argv_or_args: list[str], ifcml: bool = True) -> None:
        for _ in range(args.repeats):
            once(engine, cells, cores, argv_or_args, ifcml)

    def once(engine: str, cells: int, cores: int, argv_or_args: list[str], ifcml: bool) -> None:
        wall, peak = (run_ifcml if ifcml else run_child)(argv_or_args, cores)
        row = {
            "engine": engine,
            "cells": cells,
            "cores": cores,
            "wall_s": round(wall, 1),
            "peak_rss_mib": round(peak),
        }
        print(json.dumps(row), flush=True)
        runs.append(row)

    with tempfile.TemporaryDirectory(dir=os.environ.get("IFCML_BENCH_TMP")) as tmp:
        work = Path(tmp)
        source = open_source(JURKAT, "montage", channels={3: "BF", 6: "DF"}, grid="30x30")
        jurkat = write_store([source], work / "jurkat")
        sizes = [("cp-measure", copies, None) for copies in args.copies]
        sizes += [("cellprofiler", 1, n) for n in args.cellprofiler_cells]
        for engine, copies, n in sizes:
            if engine not in engines:
                continue
            store = write_store([Repeated(jurkat, copies, n)], work / f"{engine}-{copies}-{n}")
            for cores in args.cores:
                out = work / f"f-{engine}-{copies}-{n}-{cores}.parquet"
                command = ["features", str(store.path), "--out", str(out), "--engine", engine, "--overwrite"]
                timed(engine, store.n_cells, cores, [*command, "--workers", str(cores)])
            if engine == "cp-measure" and args.dask_workers:
                for environment in ({}, WORKER_ENVIRONMENT):
                    row = through_dask(
                        store, work / f"f-dask-{copies}.parquet", out, args.dask_workers, environment
                    )
                    print(json.dumps(row), flush=True)
                    runs.append(row)
        if "reference" in engines:
            script = str(Path(__file__).with_name("reference_engine.py"))
            for n in args.reference_cells:
                timed(
                    "cp-measure functions (reference)",
                    n,
                    1,
                    [sys.executable, script, str(jurkat.path), str(n)],
                    ifcml=False,
                )
    groups: dict[tuple[str, int], list[dict]] = {}
    for row in runs:
        if "wall_s" in row and "dask_workers" not in row:
            groups.setdefault((row["engine"], row["cores"]), []).append(row)
    rates = [per_cell(rows) for rows in groups.values() if len({row["cells"] for row in rows}) >= 2]
    summary = {"runs": runs, "per_cell": rates, "ratios": ratios(rates)}
    for line in rates + summary["ratios"]:
        print(json.dumps(line), flush=True)
    out = ROOT / "benchmarks" / "results" / "features_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
