"""A tracking store of the paper's size, written by ifcml's own logging code.

``experiments/doan2020_label_free.yaml`` asks for 5 models x 8 channel sets, each held out over
19 samples with 20 hyperopt trials per fold: 40 designs and 760 fold runs (plus 15,200 trial
runs when trials are logged as runs). Training all that takes days; what the MLflow UI,
``ifcml compare`` and a resumed grid meet is only what the logging layer writes. So recorded
fold results (seeded predictions of 3 classes whose accuracy differs by design, 20 trials each)
go through the same calls the grid makes: :class:`~ifcml.experiments.tracking.Tracking`'s
``open_parent``, ``open_fold`` / ``finish_fold`` and ``close_parent``. Used by
``tracking_scale.py`` and by the paper-scale UI test.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ifcml.experiments.results import Evaluation, FoldResult
from ifcml.experiments.tracking import DESIGN_TAG, TASK_TAG, Tracking
from ifcml.models.tuning import Trial

MODELS = ["naive_bayes", "random_forest", "linear_svm", "xgboost", "resnet50"]
CHANNEL_SETS = ["all", "no_p65", "no_CD45", "no_CD19", "no_CD34", "no_CD10", "no_DAPI", "label_free"]
CLASSES = ["leukemic", "normal", "other"]


def build(
    uri: str,
    experiment: str = "doan2020_label_free",
    samples: int = 19,
    trials: int = 20,
    cells: int = 60,
    log_trials: bool = False,
    designs: int | None = None,
) -> dict[str, float]:
    """Log the paper's grid (or its first ``designs`` designs) into ``uri``; returns each
    design's name -> pooled balanced accuracy."""
    tracking = Tracking(uri)
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {
            "Metadata_cell_id": np.arange(samples * cells),
            "Metadata_instance": np.repeat([f"P{k:02d}" for k in range(samples)], cells),
            "Metadata_label": rng.choice(CLASSES, samples * cells),
        }
    )
    pooled = {}
    grid = [(m, c) for m in MODELS for c in CHANNEL_SETS][:designs]
    for number, (model, channel_set) in enumerate(grid):
        skill = 0.55 + 0.4 * rng.random()  # each design its own accuracy
        name = f"{model} | {channel_set}"
        tags = {
            "branch": "deep" if model == "resnet50" else "classical",
            "model": model,
            "channel_set": channel_set,
            "split": "leave-one-instance-out",
            "confounded": "no",
        }
        design = f"paper{number:04d}"
        parent = tracking.open_parent(
            experiment, name, {**tags, DESIGN_TAG: design}, {"model": model}, table, "paper.parquet", design
        )
        evaluation = Evaluation(model, CLASSES)
        for instance, cells_of in table.groupby("Metadata_instance"):
            fold = _recorded_fold(instance, cells_of, skill, trials, rng)
            run = tracking.open_fold(
                parent, instance, {**tags, DESIGN_TAG: design, TASK_TAG: f"{design}/{instance}"}
            )
            tracking.finish_fold(run, fold, CLASSES, log_trials=log_trials)
            evaluation.folds.append(fold)
        summary = tracking.close_parent(parent, evaluation, None, positive="leukemic", seed=0)
        pooled[name] = summary["balanced_accuracy"]
    return pooled


def _recorded_fold(instance: str, cells: pd.DataFrame, skill: float, trials: int, rng) -> FoldResult:
    truth = cells["Metadata_label"].to_numpy()
    wrong = rng.random(len(truth)) > skill
    predicted = np.where(wrong, rng.choice(CLASSES, len(truth)), truth)
    predictions = pd.DataFrame(
        {
            "cell_id": cells["Metadata_cell_id"].to_numpy(),
            "instance": instance,
            "label": truth,
            "predicted": predicted,
        }
    )
    losses = 1 - skill + 0.1 * rng.random(trials)
    search = [Trial(k, {"C": float(10 ** rng.uniform(-3, 2))}, float(loss)) for k, loss in enumerate(losses)]
    best = min(search, key=lambda t: t.loss)
    return FoldResult(instance, predictions, best.params, search, ["f1", "f2"], 1.0, 0.01)
