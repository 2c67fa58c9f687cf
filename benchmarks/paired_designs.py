"""Designs of one experiment compared on the same held-out cells: balanced accuracy of each, and
of each pair the difference with a paired bootstrap interval (cells resampled together).

Two designs of one grid share their folds, so their held-out predictions are of the same cells;
a paired interval is then much narrower than the two designs' own intervals side by side. Read
from the finished held-out runs in MLflow, so a design whose final refit is still running can
be compared too.

Usage: python benchmarks/paired_designs.py EXPERIMENT --tracking-uri URI [--models a,b,c]
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score

from ifcml.experiments.run import TRAIN_SIZE_TAG
from ifcml.experiments.tracking import Tracking

DRAWS = 1000


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("experiment")
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--models", default=None, help="Comma-separated model names (default: all).")
    args = parser.parse_args()
    tracking = Tracking(args.tracking_uri)
    predictions = held_out_predictions(tracking, args.experiment, args.models)
    rng = np.random.default_rng(0)
    rows = []
    for a, b in itertools.combinations(sorted(predictions), 2):
        cells = predictions[a].index.intersection(predictions[b].index)
        truth = predictions[a].loc[cells, "label"].to_numpy()
        first, second = (predictions[m].loc[cells, "predicted"].to_numpy() for m in (a, b))
        draws = [
            balanced_accuracy_score(truth[k], first[k]) - balanced_accuracy_score(truth[k], second[k])
            for k in (rng.integers(0, len(cells), len(cells)) for _ in range(DRAWS))
        ]
        low, high = np.percentile(draws, [2.5, 97.5])
        rows.append(
            {
                "a": a, "b": b, "cells": len(cells),
                "balanced_accuracy_a": balanced_accuracy_score(truth, first),
                "balanced_accuracy_b": balanced_accuracy_score(truth, second),
                "a_minus_b": balanced_accuracy_score(truth, first) - balanced_accuracy_score(truth, second),
                "ci_low": low, "ci_high": high,
            }
        )  # fmt: skip
    print(pd.DataFrame(rows).round(4).to_string(index=False))


def held_out_predictions(tracking: Tracking, experiment: str, models: str | None) -> dict[str, pd.DataFrame]:
    """Each full-size design's held-out predictions (finished folds), indexed by cell id."""
    experiment_id = tracking.experiment_id(experiment)
    parents = tracking.search([experiment_id], "tags.mlflow.parentRunId IS NULL and tags.kind IS NULL")
    wanted = set(models.split(",")) if models else None
    found = {}
    for parent in parents:
        model = parent.data.tags.get("model")
        if parent.data.tags.get(TRAIN_SIZE_TAG, "all") != "all" or (wanted and model not in wanted):
            continue
        folds = tracking.finished_by_fold(parent.info.run_id)
        frames = [tracking.read_fold(run.info.run_id).predictions for run in folds.values()]
        if frames:
            found[model] = pd.concat(frames).set_index("cell_id")
    return found


if __name__ == "__main__":
    main()
