"""The numbers the paper reports, computed once for every model and branch.

Cell level: accuracy, balanced accuracy, per-class precision / recall / F1, confusion matrix.
Instance level (each held-out sample): accuracy and the predicted vs reference fraction of each
class, the residual-disease readout. Across instances: sensitivity and specificity of the
slow-early-responder call (positive-class fraction at or above a cutoff, 25 % and 10 % in the
paper). Bootstrap confidence intervals where the paper gives point values.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
)

from ifcml.experiments.results import Evaluation
from ifcml.readout import CUTOFFS, ErrorRates, class_fractions, error_rates, estimate


def cell_metrics(truth: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy and per-class precision / recall / F1 over all given cells."""
    with warnings.catch_warnings():  # a held-out sample may lack a class the model predicts
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        metrics = {
            "accuracy": float(accuracy_score(truth, predicted)),
            "balanced_accuracy": float(balanced_accuracy_score(truth, predicted)),
        }
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, predicted, labels=classes, zero_division=0
    )
    for name, p, r, f in zip(classes, precision, recall, f1, strict=True):
        metrics |= {f"precision_{name}": float(p), f"recall_{name}": float(r), f"f1_{name}": float(f)}
    return metrics


def confusion_table(truth: np.ndarray, predicted: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Rows: reference class; columns: predicted class; cell counts."""
    counts = confusion_matrix(truth, predicted, labels=classes)
    return pd.DataFrame(
        counts, index=pd.Index(classes, name="reference"), columns=pd.Index(classes, name="predicted")
    )


def readout(predictions: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """Per instance: cells, accuracy, and reference vs predicted fraction of every class.

    ``predictions`` has columns instance, label (reference) and predicted.
    """
    rows = []
    for instance, part in predictions.groupby("instance", sort=True):
        row = {
            "instance": instance,
            "cells": len(part),
            "accuracy": float((part["label"] == part["predicted"]).mean()),
        }
        row |= class_fractions(part["label"], classes, "reference_fraction_")
        row |= class_fractions(part["predicted"], classes, "predicted_fraction_")
        rows.append(row)
    return pd.DataFrame(rows)


def responder_calls(table: pd.DataFrame, positive: str, cutoffs=CUTOFFS) -> dict[str, float]:
    """Sensitivity / specificity of 'positive fraction >= cutoff' across instances (NaN if undefined)."""
    reference = table[f"reference_fraction_{positive}"].to_numpy()
    predicted = table[f"predicted_fraction_{positive}"].to_numpy()
    metrics = {"readout_mae": float(np.mean(np.abs(predicted - reference)))}
    for cutoff in cutoffs:
        truth, call = reference >= cutoff, predicted >= cutoff
        tag = f"{round(cutoff * 100)}pct"
        metrics[f"sensitivity_{tag}"] = (
            float((call & truth).sum() / truth.sum()) if truth.any() else float("nan")
        )
        metrics[f"specificity_{tag}"] = (
            float((~call & ~truth).sum() / (~truth).sum()) if (~truth).any() else float("nan")
        )
    return metrics


def held_out_rates(predictions: pd.DataFrame, positive: str, method: str = "pacc") -> ErrorRates:
    """The design's error rates for the readout class over all its held-out cells (stored with
    the design and its exported model), to correct with ``method`` (pacc or acc)."""
    probability = predictions.get(f"probability_{positive}")
    units = predictions["instance"]
    rates = error_rates(predictions["label"], predictions["predicted"], positive, probability, units)
    return dataclasses.replace(rates, method=method)


def best_corrected_readout(
    predictions: pd.DataFrame, positive: str, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, float]]:
    """:func:`corrected_readout` by the form (PACC or ACC) whose corrected fractions are nearer the
    held-out instances' reference ones, and the error of each form."""
    forms = ("pacc", "acc") if f"probability_{positive}" in predictions else ("acc",)
    reference = predictions.groupby("instance")["label"].apply(lambda x: float((x == positive).mean()))
    tables, errors = {}, {}
    for form in forms:
        tables[form] = corrected_readout(predictions, positive, seed, form)
        corrected = tables[form].set_index("instance")[f"corrected_fraction_{positive}"]
        errors[f"corrected_readout_mae_{form}"] = float((corrected - reference).abs().mean())
    best = min(forms, key=lambda form: np.nan_to_num(errors[f"corrected_readout_mae_{form}"], nan=np.inf))
    return tables[best], errors


def corrected_readout(
    predictions: pd.DataFrame, positive: str, seed: int = 0, method: str = "pacc"
) -> pd.DataFrame:
    """Per held-out instance: its corrected fraction of ``positive`` and 95 % interval, with error
    rates measured on the other instances' held-out cells only (never its own cells). A design
    whose held-out cells all belong to one instance (k-fold inside one sample) has no other
    instance to measure them on: no corrected estimate, and ``correction`` says why."""
    rows = []
    for k, (instance, part) in enumerate(predictions.groupby("instance", sort=True)):
        others = predictions[predictions["instance"] != instance]
        rates = held_out_rates(others, positive, method)
        probability = part.get(f"probability_{positive}")
        result = estimate(part["predicted"].to_numpy() == positive, rates, probability, seed + k)
        rows.append(
            {
                "instance": instance,
                f"corrected_fraction_{positive}": result.corrected,
                f"corrected_low_{positive}": result.low,
                f"corrected_high_{positive}": result.high,
                "correction": result.method,
            }
        )
    return pd.DataFrame(rows)


def corrected_metrics(table: pd.DataFrame, positive: str) -> dict[str, float]:
    """MAE of the corrected readout and how often the interval holds the reference fraction."""
    reference = table[f"reference_fraction_{positive}"].to_numpy()
    corrected = table[f"corrected_fraction_{positive}"].to_numpy()
    low, high = table[f"corrected_low_{positive}"].to_numpy(), table[f"corrected_high_{positive}"].to_numpy()
    estimable = np.isfinite(corrected)
    if not estimable.any():
        return {}
    inside = (low <= reference) & (reference <= high)
    return {
        "corrected_readout_mae": float(np.mean(np.abs(corrected - reference)[estimable])),
        "readout_interval_coverage": float(inside[estimable].mean()),
    }


def bootstrap_ci(values: np.ndarray, statistic=np.mean, n: int = 2000, seed: int = 0, level: float = 0.95):
    """Percentile bootstrap interval of ``statistic`` over ``values`` (resampled with replacement)."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    samples = rng.choice(values, size=(n, len(values)), replace=True)
    estimates = np.apply_along_axis(statistic, 1, samples)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(estimates, tail)), float(np.percentile(estimates, 100 - tail))


def balanced_accuracy_ci(
    truth: np.ndarray, predicted: np.ndarray, n: int = 1000, seed: int = 0, level: float = 0.95
):
    """Bootstrap interval of the pooled balanced accuracy, resampling cells (vectorised)."""
    classes, truth_codes = np.unique(np.asarray(truth), return_inverse=True)
    correct = np.asarray(truth) == np.asarray(predicted)
    k = len(classes)
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(truth_codes), size=(n, len(truth_codes)))
    offsets = np.arange(n)[:, None] * k + truth_codes[index]  # (resample, class) bins
    totals = np.bincount(offsets.ravel(), minlength=n * k).reshape(n, k)
    hits = np.bincount(offsets.ravel(), weights=correct[index].ravel(), minlength=n * k).reshape(n, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimates = np.nanmean(np.where(totals > 0, hits / totals, np.nan), axis=1)  # classes present
    tail = (1 - level) / 2 * 100
    return float(np.percentile(estimates, tail)), float(np.percentile(estimates, 100 - tail))


def summarise(evaluation: Evaluation, positive: str | None, seed: int) -> tuple[dict, pd.DataFrame]:
    """Pooled metrics (with bootstrap intervals) and the per-instance readout table."""
    predictions = evaluation.predictions
    truth, predicted = predictions["label"].to_numpy(), predictions["predicted"].to_numpy()
    summary = cell_metrics(truth, predicted, evaluation.classes)
    low, high = balanced_accuracy_ci(truth, predicted, seed=seed)
    summary |= {"balanced_accuracy_ci_low": low, "balanced_accuracy_ci_high": high}
    per_instance = readout(predictions, evaluation.classes)
    summary["instance_accuracy_mean"] = float(per_instance["accuracy"].mean())
    summary["instance_accuracy_median"] = float(per_instance["accuracy"].median())
    if len(per_instance) > 1:
        low, high = bootstrap_ci(per_instance["accuracy"].to_numpy(), seed=seed)
        summary |= {"instance_accuracy_ci_low": low, "instance_accuracy_ci_high": high}
    if positive in evaluation.classes:
        summary |= responder_calls(per_instance, positive)
        corrected, both = best_corrected_readout(predictions, positive, seed)
        per_instance = per_instance.merge(corrected, on="instance")
        summary |= corrected_metrics(per_instance, positive) | both
    summary["train_seconds"] = float(sum(f.train_seconds for f in evaluation.folds))
    summary["predict_seconds_per_cell"] = float(
        sum(f.predict_seconds for f in evaluation.folds) / max(1, len(predictions))
    )
    return summary, per_instance
