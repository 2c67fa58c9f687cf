"""The readout of a grid's held-out cells, sample by sample: truth, classify-and-count, and both
corrected estimates (ACC and PACC) with their 95 % intervals.

Reads each full-size design's pooled held-out predictions from MLflow (every cell predicted by a
model that never saw it) and reads out each unit as one sample of known composition, correcting
it with error rates measured on the other units' cells only (:func:`corrected_readout`). The unit
is the instance by default; ``--unit source --store STORE`` takes a column of the store's cells
table instead. On the Jurkat spec, whose cells are one instance, ``--unit source`` makes each
phase's montage one sample (truth 1 for the mitotic montages, 0 for G1, S and G2 with
``positive: M``).

Usage: python benchmarks/readout_table.py EXPERIMENT --tracking-uri URI [--unit source --store S]
Writes benchmarks/results/readout_<experiment>_<unit>.csv and prints the tables.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from ifcml.experiments.compare import comparison
from ifcml.experiments.learning_curve import SIZE
from ifcml.experiments.metrics import corrected_readout
from ifcml.experiments.tracking import Tracking
from ifcml.io.store import CellStore

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--unit", default="instance", help="instance, or a column of the store's cells table")
    parser.add_argument("--store", type=Path, help="The store whose cells table has --unit")
    args = parser.parse_args()
    tracking = Tracking(args.tracking_uri, existing=True)
    designs, _ = comparison(tracking, args.experiment)
    units = CellStore(args.store).cells.set_index("cell_id")[args.unit] if args.store else None
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for _, design in designs[designs[SIZE] == "all"].iterrows():
            predictions = pd.read_parquet(
                tracking.client.download_artifacts(design["run_id"], "predictions.parquet", tmp)
            )
            if units is not None:
                predictions["instance"] = predictions["cell_id"].map(units).astype(str)
            table = readout(predictions, design["positive"])
            tables.append(table.assign(design=f"{design['model']} | {design['channel set']}"))
    table = pd.concat(tables, ignore_index=True)
    RESULTS.mkdir(exist_ok=True)
    table.to_csv(RESULTS / f"readout_{args.experiment}_{args.unit}.csv", index=False)
    print(f"readout class: {designs['positive'].iloc[0]}; one sample per {args.unit}\n")
    print(table.to_string(index=False, float_format="{:.3f}".format))
    print()
    print(summary(table).to_string(float_format="{:.3f}".format))


def readout(predictions: pd.DataFrame, positive: str) -> pd.DataFrame:
    """Per unit (the ``instance`` column): cells, truth, counted, and each corrected form."""
    grouped = predictions.groupby("instance", sort=True)
    table = pd.DataFrame(
        {
            "cells": grouped.size(),
            "truth": grouped["label"].apply(lambda labels: float((labels == positive).mean())),
            "counted": grouped["predicted"].apply(lambda called: float((called == positive).mean())),
        }
    )
    forms = ("acc", "pacc") if f"probability_{positive}" in predictions else ("acc",)
    for form in forms:
        corrected = corrected_readout(predictions, positive, method=form).set_index("instance")
        table[form] = corrected[f"corrected_fraction_{positive}"]
        table[f"{form}_interval"] = [
            f"{low:.3f}-{high:.3f}"
            for low, high in zip(
                corrected[f"corrected_low_{positive}"], corrected[f"corrected_high_{positive}"], strict=True
            )
        ]
        table[f"{form}_inside"] = (corrected[f"corrected_low_{positive}"] <= table["truth"]) & (
            table["truth"] <= corrected[f"corrected_high_{positive}"]
        )
    return table.reset_index(names="sample")


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per design: mean absolute error of each estimate and how often each interval holds the truth."""
    rows = {}
    for design, part in table.groupby("design", sort=False):
        row = {"counted MAE": (part["counted"] - part["truth"]).abs().mean()}
        for form in ("acc", "pacc"):
            if form in part:
                row[f"{form} MAE"] = (part[form] - part["truth"]).abs().mean()
                row[f"{form} coverage"] = part[f"{form}_inside"].mean()
        rows[design] = row
    return pd.DataFrame(rows).T


if __name__ == "__main__":
    main()
