"""Recording evaluations in MLflow, the same way for every model and branch.

One parent run per (model, channel set), tagged with the branch; one nested run per held-out
unit, opened when its work starts and fed as it goes (each hyperopt trial's inner score, each
epoch's loss), finished with its tuned parameters, best inner score, number of trials and
metrics; pooled metrics with bootstrap intervals, the readout, and artifacts on the parent; the
model refitted on all usable cells, saved in its family's safe format (:mod:`ifcml.models.saved`:
skops, XGBoost's JSON, ``.keras``) as a logged model that carries the design's metrics.

Hyperopt trials are rows of a table artifact, not runs (a paper-size grid would otherwise log
about 12,000 trial runs and bury its 40 designs); ``log_trials`` logs them as nested runs too.
"""

from __future__ import annotations

import json
import os
import socket
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
from mlflow.entities import Metric, Param, Run  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models.model import ModelInfo  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from ifcml.cells import LABEL, metadata_columns  # noqa: E402
from ifcml.experiments import metrics  # noqa: E402
from ifcml.experiments.mlflow_ui import designs_view  # noqa: E402
from ifcml.experiments.results import Evaluation, FinalModel, FoldResult  # noqa: E402
from ifcml.models.saved import log_trained  # noqa: E402
from ifcml.models.tuning import Trial  # noqa: E402
from ifcml.progress import Progress  # noqa: E402

ERROR_TAG = "ifcml.error"  # why a run FAILED
OWNER_TAG = "ifcml.owner"  # host:pid of the process working on a run
DESIGN_TAG, TASK_TAG = "ifcml.design", "ifcml.task"  # a grid's design key; a fold's task key
EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow 3's UI opens GenAI pages unless it says:
MODEL_TRAINING = "custom_model_development"


def use_experiment(client: MlflowClient, name: str) -> str:
    """The id of experiment ``name`` (created if new), marked as a model-training experiment
    with the designs view (:mod:`ifcml.experiments.mlflow_ui`), and made the active one.

    With a SQLite store, a new experiment keeps its artifacts in ``mlartifacts/`` beside the
    database (MLflow's default would be ``./mlruns`` of whatever folder the command ran in).
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        uri = client.tracking_uri
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
        try:
            client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:  # another process created it first
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        experiment = client.get_experiment_by_name(name)
    wanted = {EXPERIMENT_KIND: MODEL_TRAINING, **designs_view()}
    for key, value in wanted.items():
        if experiment.tags.get(key) != value:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    mlflow.set_experiment(experiment_id=experiment.experiment_id)
    return experiment.experiment_id


def owner() -> str:
    """``host:pid`` of this process, as the :data:`OWNER_TAG` of runs it works on."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(run: Run) -> bool:
    """Whether the process named in ``run``'s owner tag is running (on this host; a process
    on another host cannot be checked and counts as gone)."""
    host, _, pid = run.data.tags.get(OWNER_TAG, "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


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
        corrected, both = metrics.best_corrected_readout(predictions, positive, seed)
        per_instance = per_instance.merge(corrected, on="instance")
        summary |= metrics.corrected_metrics(per_instance, positive) | both
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
    experiment_id = use_experiment(MlflowClient(), experiment)
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
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


def open_fold(client: MlflowClient, parent: str, name: str, tags: dict[str, str]) -> str:
    """A RUNNING run for held-out unit ``name``, nested under ``parent``, owned by this process.

    Written with the client API (no active-run state), so folds can be logged from any process.
    """
    experiment = client.get_run(parent).info.experiment_id
    run = client.create_run(
        experiment,
        run_name=f"held-out {name}",
        tags={**tags, "held_out": name, MLFLOW_PARENT_RUN_ID: parent, OWNER_TAG: owner()},
    )
    return run.info.run_id


def fold_progress(client: MlflowClient, run: str) -> tuple[Progress, set[int]]:
    """A :class:`Progress` that logs each trial's inner balanced accuracy and each epoch's
    values to ``run`` as they come (MLflow's charts then move while the work goes on), and
    the set of epochs it logged (so that :func:`finish_fold` does not log them twice)."""
    epochs: set[int] = set()

    def trial(number: int, loss: float) -> None:
        client.log_metric(run, "inner_balanced_accuracy", 1.0 - loss, step=number)

    def epoch(number: int, logs: dict[str, float]) -> None:
        now = int(time.time() * 1000)
        client.log_batch(run, metrics=[Metric(k, float(v), now, number) for k, v in logs.items()])
        epochs.add(number)

    return Progress(trial, epoch), epochs


def finish_fold(
    client: MlflowClient,
    run: str,
    fold: FoldResult,
    classes: list[str],
    logged_epochs: set[int] = frozenset(),
    log_trials: bool = False,
) -> None:
    """Metrics, tuned parameters, trials table and predictions of ``fold`` on ``run``, which
    then finishes; readable back by :func:`read_fold`. Trials become nested runs only with
    ``log_trials``."""
    p = fold.predictions
    values = metrics.cell_metrics(p["label"].to_numpy(), p["predicted"].to_numpy(), classes)
    for name in classes:
        values[f"reference_fraction_{name}"] = float((p["label"] == name).mean())
        values[f"predicted_fraction_{name}"] = float((p["predicted"] == name).mean())
    values |= {"train_seconds": fold.train_seconds, "predict_seconds": fold.predict_seconds, "cells": len(p)}
    if fold.trials:
        values |= {
            "inner_best_balanced_accuracy": 1.0 - min(t.loss for t in fold.trials),
            "n_trials": len(fold.trials),
        }
    now = int(time.time() * 1000)
    params = (
        {f"best_{k}": v for k, v in fold.params.items()} | fold.details | {"n_features": len(fold.features)}
    )
    curves = [
        Metric(name, float(value), now, step)
        for name, series in fold.curves.items()
        for step, value in enumerate(series)
        if step not in logged_epochs
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
        if fold.trials:
            _trials_table([fold]).to_csv(Path(tmp) / "trials.csv", index=False)
        client.log_artifacts(run, tmp)
    if log_trials:
        _log_trial_runs(client, run, fold.trials, now)
    client.set_terminated(run)


def _log_trial_runs(client: MlflowClient, fold_run: str, trials: list[Trial], now: int) -> None:
    """Each trial as a run nested under its fold (the opt-in ``log_trials``)."""
    parent = client.get_run(fold_run)
    own = {"held_out", OWNER_TAG, TASK_TAG}
    shared = {k: v for k, v in parent.data.tags.items() if not k.startswith("mlflow.") and k not in own}
    for trial in trials:
        trial_run = client.create_run(
            parent.info.experiment_id,
            run_name=f"trial {trial.number}",
            tags={**shared, "kind": "trial", MLFLOW_PARENT_RUN_ID: fold_run},
        ).info.run_id
        client.log_batch(
            trial_run,
            metrics=[Metric("loss", trial.loss, now, 0)],
            params=[Param(k, str(v)) for k, v in (trial.params or {"defaults": True}).items()],
        )
        client.set_terminated(trial_run)


def _trials_table(folds: list[FoldResult]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"held_out": f.name, "trial": t.number, "loss": t.loss, "inner_balanced_accuracy": 1 - t.loss}
            | t.params
            for f in folds
            for t in f.trials
        ]
    )


def read_fold(client: MlflowClient, run: str) -> FoldResult:
    """The :class:`FoldResult` that :func:`finish_fold` wrote into ``run``."""
    with tempfile.TemporaryDirectory() as tmp:
        record = json.loads(Path(client.download_artifacts(run, "fold.json", tmp)).read_text())
        predictions = pd.read_parquet(client.download_artifacts(run, "predictions.parquet", tmp))
    record["predictions"] = predictions
    record["trials"] = [Trial(**t) for t in record["trials"]]
    return FoldResult(**record)


def fail_run(client: MlflowClient, run: str, message: str) -> None:
    """End ``run`` as FAILED with ``message`` (tag ``ifcml.error``) saying why."""
    client.set_tag(run, ERROR_TAG, message[:4000])
    client.set_terminated(run, "FAILED")


def close_parent(
    parent: str, evaluation: Evaluation, final: FinalModel | None, *, positive: str | None, seed: int
) -> dict:
    """Pooled metrics, tables, and the final model with its spec and figures on ``parent``,
    which then finishes.

    The final model's ``inputs`` (how raw images become its input) go into its metadata, so
    that ``ifcml export`` can wrap it into a model that takes raw images.
    """
    summary, per_instance = summarise(evaluation, positive, seed)
    finite = {k: v for k, v in summary.items() if np.isfinite(v)}
    rates = None  # the readout's error rates over every held-out cell: the exported model corrects with them
    if positive in evaluation.classes:
        chosen = per_instance["correction"].iloc[0] if "correction" in per_instance else "acc"
        method = chosen if chosen in ("acc", "pacc") else "acc"
        rates = metrics.held_out_rates(evaluation.predictions, positive, method).as_dict()
    with mlflow.start_run(run_id=parent):
        _log_tables(evaluation, per_instance)
        if rates:
            mlflow.log_dict(rates, "readout_rates.json")
        figures = {}
        if final is not None:
            mlflow.log_dict(final.spec, "spec.yaml")
            figures |= final.figures
        if any(f.trials for f in evaluation.folds):
            figures["trials.png"] = _trials_figure(evaluation)
        for name, figure in figures.items():
            mlflow.log_figure(figure, name)
            plt.close(figure)
        model_id = None
        if final is not None:  # first, so that the metrics below are the logged model's too
            model_id = _log_model(final, evaluation.classes, rates).model_id
        mlflow.log_metrics(finite, model_id=model_id)
    return summary


def _trials_figure(evaluation: Evaluation):
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


def _log_tables(evaluation: Evaluation, per_instance: pd.DataFrame) -> None:
    predictions = evaluation.predictions
    confusion = metrics.confusion_table(predictions["label"], predictions["predicted"], evaluation.classes)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        confusion.to_csv(folder / "confusion_matrix.csv")
        per_instance.to_csv(folder / "per_instance.csv", index=False)
        predictions.to_parquet(folder / "predictions.parquet", index=False)
        _trials_table(evaluation.folds).to_csv(folder / "trials.csv", index=False)
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


def _log_model(final: FinalModel, classes: list[str], readout: dict | None) -> ModelInfo:
    """The final model in its family's safe format; its metadata says what ``ifcml export`` and
    ``predict`` need: the classes, its input columns or channels, how raw cells become them and
    the readout's error rates."""
    trained = final.trained
    metadata = {"classes": classes, "features": trained.features, "inputs": final.inputs, "readout": readout}
    return log_trained(final.flavor, trained.model, final.example, metadata)
