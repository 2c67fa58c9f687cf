"""Recording evaluations in MLflow, the same way for every model and branch.

One parent run per (model, channel set), tagged with the branch; one nested run per held-out
unit with its tuned parameters and metrics, and under it one nested run per hyperopt trial;
pooled metrics with bootstrap intervals, the readout, and artifacts on the parent; the model
refitted on all usable cells, saved in a safe format (scikit-learn through skops with the
reviewed types below, XGBoost as JSON).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.entities import Metric, Param  # noqa: E402
from mlflow.models import infer_signature  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from ifcml.experiments import metrics  # noqa: E402
from ifcml.experiments.evaluate import Evaluation, FoldResult, Trained  # noqa: E402
from ifcml.features.table import LABEL, metadata_columns  # noqa: E402
from ifcml.models.tuning import Trial  # noqa: E402

ERROR_TAG = "ifcml.error"  # why a run FAILED

# Types skops must load besides scikit-learn's estimators: reviewed, nothing that runs code.
SKOPS_TRUSTED = ["numpy.dtype", "sklearn.tree._tree.Tree"]


def tracking_uri(explicit: str | None = None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` (SQLite) here."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def use_experiment(name: str) -> str:
    """Make ``name`` the active experiment (created if new) and return its id.

    With a SQLite store, a new experiment keeps its artifacts in ``mlartifacts/`` beside the
    database (MLflow's default would be ``./mlruns`` of whatever folder the command ran in).
    """
    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(name) is None:
        folder = Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts"
        mlflow.create_experiment(name, artifact_location=folder.resolve().as_uri())
    return mlflow.set_experiment(name).experiment_id


def summarise(evaluation: Evaluation, positive: str | None, seed: int) -> tuple[dict, pd.DataFrame]:
    """Pooled metrics (with bootstrap intervals) and the per-instance readout table."""
    predictions = evaluation.predictions
    truth, predicted = predictions["label"].to_numpy(), predictions["predicted"].to_numpy()
    summary = metrics.cell_metrics(truth, predicted, evaluation.classes)
    low, high = metrics.balanced_accuracy_ci(truth, predicted, seed=seed)
    summary |= {"balanced_accuracy_ci_low": low, "balanced_accuracy_ci_high": high}
    per_instance = metrics.readout(predictions, evaluation.classes)
    summary["instance_accuracy_mean"] = float(per_instance["accuracy"].mean())
    summary["instance_accuracy_median"] = float(per_instance["accuracy"].median())
    if len(per_instance) > 1:
        low, high = metrics.bootstrap_ci(per_instance["accuracy"].to_numpy(), seed=seed)
        summary |= {"instance_accuracy_ci_low": low, "instance_accuracy_ci_high": high}
    if positive in evaluation.classes:
        summary |= metrics.responder_calls(per_instance, positive)
    summary["train_seconds"] = float(sum(f.train_seconds for f in evaluation.folds))
    summary["predict_seconds_per_cell"] = float(
        sum(f.predict_seconds for f in evaluation.folds) / max(1, len(predictions))
    )
    return summary, per_instance


def open_parent(
    experiment: str,
    run_name: str,
    tags: dict[str, str],
    params: dict,
    dataset: pd.DataFrame,
    dataset_source: str,
    dataset_digest: str,
) -> str:
    """A parent run with its params and dataset, left RUNNING until :func:`close_parent`."""
    use_experiment(experiment)
    run = mlflow.start_run(run_name=run_name, tags=tags)
    try:
        mlflow.log_params(params)
        with warnings.catch_warnings():  # a local path matches two identical source types; ids are ints
            warnings.filterwarnings(
                "ignore", "The specified dataset source can be interpreted in multiple ways"
            )
            warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer column")  # cell ids
            source = mlflow.data.from_pandas(  # the cells evaluated; the digest names store + recipe
                dataset[metadata_columns(dataset)],
                source=dataset_source,
                targets=LABEL,
                name=Path(dataset_source).name,
                digest=dataset_digest,
            )
            mlflow.log_input(source, context="evaluation")
    finally:
        mlflow.end_run(status="RUNNING")
    return run.info.run_id


def log_fold(
    parent: str, fold: FoldResult, classes: list[str], tags: dict[str, str], own_tags: dict | None = None
) -> str:
    """One held-out unit as a finished run nested under ``parent``, readable by :func:`read_fold`.

    ``tags`` go on the fold's run and its trials' runs, ``own_tags`` on the fold's run only.

    Written with the client API (no active-run state), so folds can be logged from any process.
    """
    client = MlflowClient()
    experiment = client.get_run(parent).info.experiment_id
    run = client.create_run(
        experiment,
        run_name=f"held-out {fold.name}",
        tags={**tags, **(own_tags or {}), "held_out": fold.name, MLFLOW_PARENT_RUN_ID: parent},
    ).info.run_id
    p = fold.predictions
    values = metrics.cell_metrics(p["label"].to_numpy(), p["predicted"].to_numpy(), classes)
    for name in classes:
        values[f"reference_fraction_{name}"] = float((p["label"] == name).mean())
        values[f"predicted_fraction_{name}"] = float((p["predicted"] == name).mean())
    values |= {"train_seconds": fold.train_seconds, "predict_seconds": fold.predict_seconds, "cells": len(p)}
    now = int(time.time() * 1000)
    params = (
        {f"best_{k}": v for k, v in fold.params.items()} | fold.details | {"n_features": len(fold.features)}
    )
    curves = [
        Metric(name, float(value), now, step)
        for name, series in fold.curves.items()
        for step, value in enumerate(series)
    ]
    client.log_batch(
        run,
        metrics=[Metric(k, float(v), now, 0) for k, v in values.items()] + curves,
        params=[Param(k, str(v)) for k, v in params.items()],
    )
    with tempfile.TemporaryDirectory() as tmp:
        p.to_parquet(Path(tmp) / "predictions.parquet", index=False)
        record = asdict(fold) | {"predictions": None, "trials": [asdict(t) for t in fold.trials]}
        (Path(tmp) / "fold.json").write_text(json.dumps(record, default=str))
        client.log_artifacts(run, tmp)
    for trial in fold.trials:
        trial_run = client.create_run(
            experiment,
            run_name=f"trial {trial.number}",
            tags={**tags, "kind": "trial", MLFLOW_PARENT_RUN_ID: run},
        ).info.run_id
        client.log_batch(
            trial_run,
            metrics=[Metric("loss", trial.loss, now, 0)],
            params=[Param(k, str(v)) for k, v in (trial.params or {"defaults": True}).items()],
        )
        client.set_terminated(trial_run)
    client.set_terminated(run)
    return run


def read_fold(run: str) -> FoldResult:
    """The :class:`FoldResult` that :func:`log_fold` wrote into ``run``."""
    client = MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        record = json.loads(Path(client.download_artifacts(run, "fold.json", tmp)).read_text())
        predictions = pd.read_parquet(client.download_artifacts(run, "predictions.parquet", tmp))
    record["predictions"] = predictions
    record["trials"] = [Trial(**t) for t in record["trials"]]
    return FoldResult(**record)


def fail_run(run: str, message: str) -> None:
    """End ``run`` as FAILED with ``message`` (tag ``ifcml.error``) saying why."""
    client = MlflowClient()
    client.set_tag(run, ERROR_TAG, message[:4000])
    client.set_terminated(run, "FAILED")


def close_parent(
    parent: str,
    evaluation: Evaluation,
    *,
    positive: str | None,
    seed: int,
    spec: dict,
    final: Trained | None,
    dataset: pd.DataFrame,
    inputs: dict | None = None,
    figures: dict | None = None,
) -> dict:
    """Pooled metrics, tables, the spec, figures (file name -> matplotlib Figure) and the final
    model on ``parent``, which then finishes.

    ``inputs`` (how raw images become the model's input) goes into the model's metadata, so
    that ``ifcml export`` can wrap it into a model that takes raw images.
    """
    summary, per_instance = summarise(evaluation, positive, seed)
    with mlflow.start_run(run_id=parent):
        mlflow.log_metrics({k: v for k, v in summary.items() if np.isfinite(v)})
        _log_tables(evaluation, per_instance)
        mlflow.log_dict(spec, "spec.yaml")
        for name, figure in (figures or {}).items():
            mlflow.log_figure(figure, name)
            plt.close(figure)
        if final is not None:
            _log_model(final, dataset, evaluation.classes, spec, inputs)
    return summary


def _log_tables(evaluation: Evaluation, per_instance: pd.DataFrame) -> None:
    predictions = evaluation.predictions
    confusion = metrics.confusion_table(predictions["label"], predictions["predicted"], evaluation.classes)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        confusion.to_csv(folder / "confusion_matrix.csv")
        per_instance.to_csv(folder / "per_instance.csv", index=False)
        predictions.to_parquet(folder / "predictions.parquet", index=False)
        pd.DataFrame(
            [
                {"held_out": f.name, "trial": t.number, "loss": t.loss, **t.params}
                for f in evaluation.folds
                for t in f.trials
            ]
        ).to_csv(folder / "trials.csv", index=False)
        figure, axes = plt.subplots(
            figsize=(1.6 * len(evaluation.classes) + 2, 1.4 * len(evaluation.classes) + 1.5)
        )
        ConfusionMatrixDisplay(confusion.to_numpy(), display_labels=evaluation.classes).plot(
            ax=axes, colorbar=False
        )
        axes.set_title(f"{evaluation.model}: pooled over held-out units")
        figure.tight_layout()
        figure.savefig(folder / "confusion_matrix.png", dpi=120)
        plt.close(figure)
        mlflow.log_artifacts(tmp)


def _log_model(
    final: Trained, dataset: pd.DataFrame, classes: list[str], spec: dict, inputs: dict | None
) -> None:
    if spec.get("network"):
        _log_network(final, classes, spec, inputs)
        return
    example = dataset[final.features].head(5).astype(np.float64)
    metadata = {"classes": classes, "features": final.features, "inputs": inputs}
    with warnings.catch_warnings():  # outputs are class codes (metadata "classes" names them), never missing
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer column")
        signature = infer_signature(example, final.model.predict(example))
        common = {"name": "model", "signature": signature, "input_example": example, "metadata": metadata}
        if type(final.model).__module__.startswith("xgboost"):
            mlflow.xgboost.log_model(final.model, model_format="json", **common)
        else:
            mlflow.sklearn.log_model(
                final.model, serialization_format="skops", skops_trusted_types=SKOPS_TRUSTED, **common
            )


def _log_network(final: Trained, classes: list[str], spec: dict, inputs: dict | None) -> None:
    """The Keras model in its native ``.keras`` format; inputs are uint8 crops as float32."""
    import keras

    size = spec["crop"]["size"]
    example = np.zeros((2, size, size, len(final.features)), np.float32)
    metadata = {"classes": classes, "inputs": inputs}
    mlflow.keras.log_model(
        final.model,
        name="model",
        signature=infer_signature(example, keras.ops.convert_to_numpy(final.model(example))),
        metadata=metadata,
        save_exported_model=False,
    )
