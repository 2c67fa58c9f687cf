"""What a design's runs hold besides metrics: tables and figures, written to a folder.

Kept apart from :mod:`ifcml.experiments.tracking`, which logs them: these say what a run shows
(the pooled confusion matrix, the per-instance readout, the trials), not how MLflow stores it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from ifcml.experiments import metrics  # noqa: E402
from ifcml.experiments.results import Evaluation, FoldResult  # noqa: E402


def trials_table(folds: list[FoldResult]) -> pd.DataFrame:
    """One row per hyperopt trial of each held-out unit's search, with its parameters."""
    return pd.DataFrame(
        [
            {"held_out": f.name, "trial": t.number, "loss": t.loss, "inner_balanced_accuracy": 1 - t.loss}
            | t.params
            for f in folds
            for t in f.trials
        ]
    )


def trials_figure(evaluation: Evaluation):
    """Inner balanced accuracy against trial number, one line per held-out unit's search, and
    the best so far: where more trials stop paying off."""
    figure, axes = plt.subplots(figsize=(6.4, 3.6))
    for fold in evaluation.folds:
        scores = [1 - t.loss for t in fold.trials]
        axes.plot(range(len(scores)), scores, color="tab:blue", alpha=0.25, lw=0.8)
        axes.plot(range(len(scores)), np.maximum.accumulate(scores), color="tab:blue", lw=1.2)
    axes.set_xlabel("trial")
    axes.set_ylabel("inner balanced accuracy")
    axes.set_title(f"{evaluation.model}: hyperopt per held-out unit (thin: trial, thick: best so far)")
    figure.tight_layout()
    return figure


def write_tables(evaluation: Evaluation, per_instance: pd.DataFrame, folder: Path) -> None:
    """The pooled confusion matrix (CSV and figure), the per-instance readout, every held-out
    prediction and the trials, into ``folder``."""
    predictions = evaluation.predictions
    confusion = metrics.confusion_table(predictions["label"], predictions["predicted"], evaluation.classes)
    confusion.to_csv(folder / "confusion_matrix.csv")
    per_instance.to_csv(folder / "per_instance.csv", index=False)
    predictions.to_parquet(folder / "predictions.parquet", index=False)
    trials_table(evaluation.folds).to_csv(folder / "trials.csv", index=False)
    n = len(evaluation.classes)
    figure, axes = plt.subplots(figsize=(1.6 * n + 2, 1.4 * n + 1.5))
    ConfusionMatrixDisplay(confusion.to_numpy(), display_labels=evaluation.classes).plot(
        ax=axes, colorbar=False
    )
    axes.set_title(f"{evaluation.model}: pooled over held-out units")
    figure.tight_layout()
    figure.savefig(folder / "confusion_matrix.png", dpi=120)
    plt.close(figure)
