"""The readout of every held-out instance of a grid: truth, classify-and-count, corrected, interval.

Reads each full-size design's ``per_instance.csv`` from MLflow (what the grid logged: every
held-out instance read out as one sample of known composition, corrected with error rates
measured on the other instances only) and prints one markdown table, with the design's MAE of
both estimates and the coverage of its 95 % intervals. On the Jurkat spec each instance is a
phase's montage, so this is the per-phase readout of the readout class (``positive: M``).

Usage: python benchmarks/readout_table.py EXPERIMENT --tracking-uri sqlite:///mlflow.db
Writes benchmarks/results/readout_<experiment>.csv.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd

from ifcml.experiments.compare import comparison
from ifcml.experiments.learning_curve import SIZE
from ifcml.experiments.mlflow_store import connect

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment")
    parser.add_argument("--tracking-uri", required=True)
    args = parser.parse_args()
    client = connect(args.tracking_uri, existing=True)
    designs, _ = comparison(client, args.experiment)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for _, design in designs[designs[SIZE] == "all"].iterrows():
            path = client.download_artifacts(design["run_id"], "per_instance.csv", tmp)
            table = pd.read_csv(path)
            positive = design["positive"]
            for _, row in table.iterrows():
                rows.append(
                    {
                        "design": f"{design['model']} | {design['channel set']}",
                        "instance": row["instance"],
                        "cells": int(row["cells"]),
                        "truth": row[f"reference_fraction_{positive}"],
                        "counted": row[f"predicted_fraction_{positive}"],
                        "corrected": row.get(f"corrected_fraction_{positive}"),
                        "low": row.get(f"corrected_low_{positive}"),
                        "high": row.get(f"corrected_high_{positive}"),
                        "method": row.get("correction"),
                    }
                )
    table = pd.DataFrame(rows)
    table["inside"] = (table["low"] <= table["truth"]) & (table["truth"] <= table["high"])
    RESULTS.mkdir(exist_ok=True)
    table.to_csv(RESULTS / f"readout_{args.experiment}.csv", index=False)
    print(f"readout class: {designs['positive'].iloc[0]}\n")
    print(table.to_string(index=False, float_format="{:.3f}".format))
    summary = table.groupby("design").apply(
        lambda d: pd.Series(
            {
                "counted MAE": (d["counted"] - d["truth"]).abs().mean(),
                "corrected MAE": (d["corrected"] - d["truth"]).abs().mean(),
                "coverage": d["inside"].mean(),
            }
        ),
        include_groups=False,
    )
    print()
    print(summary.to_string(float_format="{:.3f}".format))


if __name__ == "__main__":
    main()
