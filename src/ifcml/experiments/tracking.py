"""MLflow behind one object: :class:`Tracking`, made for a tracking URI given explicitly.

It owns everything ifcml does with a tracking store: experiments (marked as model training, with
the designs view of :mod:`ifcml.experiments.mlflow_ui`), searches read to the last page, design
and fold runs and their tags, metrics and artifacts, the grid's claims on tasks, logged models
and registered exports. Nothing else in ifcml sets MLflow's process-wide tracking URI: the
fluent calls that need it (starting a run, logging a model) run inside :meth:`Tracking._fluent`,
which points MLflow at this object's store and back.

A run's record: one parent run per design, tagged with the branch; one nested run per held-out
unit, opened when its work starts and fed as it goes (each hyperopt trial's inner score, each
epoch's loss), finished with its tuned parameters, best inner score, number of trials and
metrics; pooled metrics with bootstrap intervals, the readout, and artifacts on the parent; the
model refitted on all usable cells, saved in its family's safe format (:mod:`ifcml.models.saved`)
as a logged model that carries the design's metrics. Hyperopt trials are rows of a table
artifact, not runs (a paper-size grid would otherwise log about 12,000 trial runs and bury its
40 designs); ``log_trials`` logs them as nested runs too.

Claims hold for a tracking server too, since they go through MLflow, never the local disk: a
design's parent is the earliest top-level run with its key; a fold run names its owner process
(``host:pid``), so a resuming grid leaves the runs of a live process on this host alone; of two
finished runs of one fold the earliest stays. A new SQLite store is created under a file lock
(MLflow's schema migration breaks a database that two processes create at once).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from ifcml.cells import LABEL, metadata_columns
from ifcml.errors import InputError
from ifcml.experiments.mlflow_ui import check_metric, designs_view
from ifcml.experiments.results import Evaluation, FinalModel, FoldResult
from ifcml.models.tuning import Trial
from ifcml.progress import Progress
from ifcml.readout import class_fractions

ERROR_TAG = "ifcml.error"  # why a run FAILED
OWNER_TAG = "ifcml.owner"  # host:pid of the process working on a run
DESIGN_TAG, TASK_TAG = "ifcml.design", "ifcml.task"  # a grid's design key; a fold's task key
EXPERIMENT_KIND = "mlflow.experimentKind"  # MLflow 3's UI opens GenAI pages unless it says:
MODEL_TRAINING = "custom_model_development"
SEARCH_PAGE = 1000  # runs per search request
SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks", "file")


def epoch_metric(name: str) -> str:
    """A training curve's metric name: ``epoch_accuracy`` is the network's accuracy on its fit
    cells at each epoch; plain ``accuracy`` is the held-out unit's (Keras names both so)."""
    return f"epoch_{name}"


def tracking_uri(explicit: str | None = None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``mlflow.db`` (SQLite) here."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


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


class Tracking:
    """The tracking store at ``uri`` (default: :func:`tracking_uri`). Readers (``existing``)
    refuse a SQLite store that does not exist rather than create an empty one at a misspelt path."""

    def __init__(self, uri: str | None = None, existing: bool = False):
        self.uri = tracking_uri(uri)
        scheme = urlparse(self.uri).scheme
        if scheme not in SCHEMES:
            raise InputError(
                f"tracking URI {self.uri!r}: unsupported scheme {scheme!r}; use sqlite:///PATH.db, "
                "http(s)://HOST:PORT of an MLflow server, or a database URL (postgresql://, mysql://)"
            )
        database = Path(self.uri.removeprefix("sqlite:///"))
        if existing and scheme == "sqlite" and not database.is_file():
            raise InputError(
                f"{self.uri}: no MLflow store there ({database} does not exist); check --tracking-uri"
            )
        _create_once(self.uri)
        self.client = MlflowClient(self.uri)

    @contextmanager
    def _fluent(self, experiment_id: str | None = None) -> Iterator[None]:
        """MLflow's process-wide state pointed at this store (and ``experiment_id``) meanwhile,
        then back to what the process had. The fluent API (active runs, logging models) reads it,
        and so does MLflow's lookup of a run's logged model even where a tracking URI is given.
        MLflow refuses to resume a run of another experiment than the active one, and keeps that
        one in a module global that its public API can set but not read."""
        from mlflow.tracking import fluent

        previous_uri, previous_experiment = mlflow.get_tracking_uri(), fluent._active_experiment_id
        mlflow.set_tracking_uri(self.uri)
        if experiment_id is not None:
            mlflow.set_experiment(experiment_id=experiment_id)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(previous_uri)
            fluent._active_experiment_id = previous_experiment

    # -- experiments and searches -------------------------------------------------------------

    def use_experiment(self, name: str) -> str:
        """The id of experiment ``name`` (created if new), marked as a model-training experiment
        with the designs view. With a SQLite store, a new experiment keeps its artifacts in
        ``mlartifacts/`` beside the database (MLflow's default would be ``./mlruns`` of whatever
        folder the command ran in)."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            location = None
            if self.uri.startswith("sqlite:///"):
                folder = Path(self.uri.removeprefix("sqlite:///")).parent / "mlartifacts"
                location = folder.resolve().as_uri()
            try:
                self.client.create_experiment(name, artifact_location=location)
            except MlflowException as exc:  # another process created it first
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            experiment = self.client.get_experiment(self.experiment_id(name))
        self._tag_experiment(experiment, {EXPERIMENT_KIND: MODEL_TRAINING, **designs_view()})
        return experiment.experiment_id

    def experiment_id(self, name: str) -> str:
        """The id of the existing experiment ``name``, or an error naming the store."""
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            raise InputError(f"no MLflow experiment {name!r} at {self.uri}")
        return experiment.experiment_id

    def add_view(self, name: str, metric: str) -> None:
        """Save the designs view sorted by ``metric`` in experiment ``name``, so its link opens it."""
        check_metric(metric)
        self._tag_experiment(self.client.get_experiment(self.experiment_id(name)), designs_view(metric))

    def _tag_experiment(self, experiment, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            if experiment.tags.get(key) != value:
                self.client.set_experiment_tag(experiment.experiment_id, key, value)

    def search(self, experiment_ids: list[str], filter_string: str) -> list[Run]:
        """Every run matching ``filter_string``, page after page (never one page of results: a
        resumed grid once lost its designs' parents that way)."""
        runs: list[Run] = []
        token = None
        while True:
            page = self.client.search_runs(
                experiment_ids, filter_string, max_results=SEARCH_PAGE, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def download(self, artifact_uri: str, folder: Path) -> Path:
        """The artifact at ``artifact_uri`` (a run's artifact location and path, or
        ``runs:/ID/model`` for its logged model) in ``folder``."""
        with self._fluent():
            return Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=artifact_uri, dst_path=str(folder), tracking_uri=self.uri
                )
            )

    # -- a design's runs ----------------------------------------------------------------------

    def open_parent(
        self,
        experiment: str,
        run_name: str,
        tags: dict[str, str],
        params: dict,
        dataset: pd.DataFrame,
        dataset_source: str,
        dataset_digest: str,
    ) -> str:
        """A parent run with its params and the cells it evaluates as its dataset (the digest
        names store and recipe), left RUNNING until :meth:`close_parent`."""
        experiment_id = self.use_experiment(experiment)
        with self._fluent(experiment_id):
            run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)
            try:
                mlflow.log_params(params)
                # a local path matches two identical source types; cell ids are integers
                with warnings.catch_warnings():
                    warnings.filterwarnings(
                        "ignore", "The specified dataset source can be interpreted in multiple ways"
                    )
                    warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer column")
                    source = mlflow.data.from_pandas(  # type: ignore[attr-defined]
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

    def open_fold(self, parent: str, name: str, tags: dict[str, str]) -> str:
        """A RUNNING run for held-out unit ``name``, nested under ``parent``, owned by this
        process (written with the client API: folds can be logged from any process)."""
        experiment = self.client.get_run(parent).info.experiment_id
        run = self.client.create_run(
            experiment,
            run_name=f"held-out {name}",
            tags={**tags, "held_out": name, MLFLOW_PARENT_RUN_ID: parent, OWNER_TAG: owner()},
        )
        return run.info.run_id

    def fold_progress(self, run: str) -> tuple[Progress, set[int]]:
        """A :class:`Progress` that logs each trial's inner balanced accuracy and each epoch's
        values to ``run`` as they come (MLflow's charts then move while the work goes on), and
        the set of epochs it logged (so that :meth:`finish_fold` does not log them twice)."""
        epochs: set[int] = set()

        def trial(number: int, loss: float) -> None:
            self.client.log_metric(run, "inner_balanced_accuracy", 1.0 - loss, step=number)

        def epoch(number: int, logs: dict[str, float]) -> None:
            now = int(time.time() * 1000)
            metrics = [Metric(epoch_metric(k), float(v), now, number) for k, v in logs.items()]
            self.client.log_batch(run, metrics=metrics)
            epochs.add(number)

        return Progress(trial, epoch), epochs

    def finish_fold(
        self,
        run: str,
        fold: FoldResult,
        classes: list[str],
        logged_epochs: set[int] = frozenset(),  # type: ignore[assignment]
        log_trials: bool = False,
    ) -> None:
        """Metrics, tuned parameters, trials table and predictions of ``fold`` on ``run``, which
        then finishes; readable back by :meth:`read_fold`. Trials become nested runs only with
        ``log_trials``."""
        from ifcml.experiments.metrics import cell_metrics
        from ifcml.experiments.run_artifacts import trials_table

        p = fold.predictions
        values = cell_metrics(p["label"].to_numpy(), p["predicted"].to_numpy(), classes)
        values |= class_fractions(p["label"], classes, "reference_fraction_")
        values |= class_fractions(p["predicted"], classes, "predicted_fraction_")
        values |= {
            "train_seconds": fold.train_seconds,
            "predict_seconds": fold.predict_seconds,
            "cells": len(p),
        }
        if fold.trials:
            values |= {
                "inner_best_balanced_accuracy": 1.0 - min(t.loss for t in fold.trials),
                "n_trials": len(fold.trials),
            }
        now = int(time.time() * 1000)
        params = (
            {f"best_{k}": v for k, v in fold.params.items()}
            | fold.details
            | {"n_features": len(fold.features)}
        )
        curves = [
            Metric(epoch_metric(name), float(value), now, step)
            for name, series in fold.curves.items()
            for step, value in enumerate(series)
            if step not in logged_epochs
        ]
        self.client.log_batch(
            run,
            metrics=[Metric(k, float(v), now, 0) for k, v in values.items()] + curves,
            params=[Param(k, str(v)) for k, v in params.items()],
        )
        with tempfile.TemporaryDirectory() as tmp:
            p.to_parquet(Path(tmp) / "predictions.parquet", index=False)
            record = asdict(fold) | {"predictions": None, "trials": [asdict(t) for t in fold.trials]}
            (Path(tmp) / "fold.json").write_text(json.dumps(record, default=str))
            if fold.trials:
                trials_table([fold]).to_csv(Path(tmp) / "trials.csv", index=False)
            self.client.log_artifacts(run, tmp)
        if log_trials:
            self._log_trial_runs(run, fold.trials, now)
        self.client.set_terminated(run)

    def _log_trial_runs(self, fold_run: str, trials: list[Trial], now: int) -> None:
        """Each trial as a run nested under its fold (the opt-in ``log_trials``)."""
        parent = self.client.get_run(fold_run)
        own = {"held_out", OWNER_TAG, TASK_TAG}
        shared = {k: v for k, v in parent.data.tags.items() if not k.startswith("mlflow.") and k not in own}
        for trial in trials:
            trial_run = self.client.create_run(
                parent.info.experiment_id,
                run_name=f"trial {trial.number}",
                tags={**shared, "kind": "trial", MLFLOW_PARENT_RUN_ID: fold_run},
            ).info.run_id
            self.client.log_batch(
                trial_run,
                metrics=[Metric("loss", trial.loss, now, 0)],
                params=[Param(k, str(v)) for k, v in (trial.params or {"defaults": True}).items()],
            )
            self.client.set_terminated(trial_run)

    def read_fold(self, run: str) -> FoldResult:
        """The :class:`FoldResult` that :meth:`finish_fold` wrote into ``run``."""
        with tempfile.TemporaryDirectory() as tmp:
            record = json.loads(Path(self.client.download_artifacts(run, "fold.json", tmp)).read_text())
            predictions = pd.read_parquet(self.client.download_artifacts(run, "predictions.parquet", tmp))
        record["predictions"] = predictions
        record["trials"] = [Trial(**t) for t in record["trials"]]
        return FoldResult(**record)

    def fail_run(self, run: str, message: str) -> None:
        """End ``run`` as FAILED with ``message`` (tag ``ifcml.error``) saying why."""
        self.client.set_tag(run, ERROR_TAG, message[:4000])
        self.client.set_terminated(run, "FAILED")

    def close_parent(
        self,
        parent: str,
        evaluation: Evaluation,
        final: FinalModel | None,
        *,
        positive: str | None,
        seed: int,
    ) -> dict:
        """Pooled metrics, tables, and the final model with its spec and figures on ``parent``,
        which then finishes; returns the pooled metrics.

        The final model's ``inputs`` (how raw images become its input) and the readout's error
        rates over every held-out cell go into its metadata: ``ifcml export`` wraps it into a
        model that takes raw images, and corrects its readout with them.
        """
        import matplotlib.pyplot as plt

        from ifcml.experiments.metrics import held_out_rates, summarise
        from ifcml.experiments.run_artifacts import trials_figure, write_tables
        from ifcml.models.saved import log_trained

        summary, per_instance = summarise(evaluation, positive, seed)
        finite = {k: v for k, v in summary.items() if np.isfinite(v)}
        rates = None
        if positive in evaluation.classes:
            chosen = per_instance["correction"].iloc[0] if "correction" in per_instance else "acc"
            method = chosen if chosen in ("acc", "pacc") else "acc"
            rates = held_out_rates(evaluation.predictions, positive, method).as_dict()
        figures = dict(final.figures) if final is not None else {}
        if any(f.trials for f in evaluation.folds):
            figures["trials.png"] = trials_figure(evaluation)
        experiment_id = self.client.get_run(parent).info.experiment_id
        with (
            self._fluent(experiment_id),
            mlflow.start_run(run_id=parent),
            tempfile.TemporaryDirectory() as tmp,
        ):
            write_tables(evaluation, per_instance, Path(tmp))
            mlflow.log_artifacts(tmp)
            if rates:
                mlflow.log_dict(rates, "readout_rates.json")
            for name, figure in figures.items():
                mlflow.log_figure(figure, name)
                plt.close(figure)
            model_id = None
            if final is not None:  # first, so that the metrics below are the logged model's too
                mlflow.log_dict(final.spec, "spec.yaml")
                trained = final.trained
                metadata = {
                    "classes": evaluation.classes,
                    "features": trained.features,
                    "inputs": final.inputs,
                    "readout": rates,
                }
                model_id = log_trained(final.flavor, trained.model, final.example, metadata).model_id
            mlflow.log_metrics(finite, model_id=model_id)
        return summary

    def register(self, experiment: str, run_id: str, name: str, alias: str, model: dict) -> str:
        """Log the exported ``model`` (``mlflow.pyfunc.log_model``'s arguments) in a run of
        ``experiment`` (tag kind=export), register it as ``name`` and set ``alias``."""
        tags = {"kind": "export", "ifcml.exported_from": run_id}
        experiment_id = self.experiment_id(experiment)
        with self._fluent(experiment_id):
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"export of {run_id}", tags=tags):
                info = mlflow.pyfunc.log_model(name="model", registered_model_name=name, **model)
        self.client.set_registered_model_alias(name, alias, info.registered_model_version)
        return f"models:/{name}@{alias}"

    # -- the grid's claims ----------------------------------------------------------------------

    def children(self, parent: str, status: str | None = None) -> list[Run]:
        """Every run nested under ``parent`` (of ``status`` only, if given), all pages."""
        experiment = self.client.get_run(parent).info.experiment_id
        where = f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent}'"
        if status:
            where += f" and attributes.status = '{status}'"
        return self.search([experiment], where)

    def finished_by_fold(self, parent: str) -> dict[str, Run]:
        """Held-out unit -> its earliest finished task run under ``parent``."""
        runs = [r for r in self.children(parent, "FINISHED") if TASK_TAG in r.data.tags]
        by_fold = {}
        for run in sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id), reverse=True):
            by_fold[run.data.tags["held_out"]] = run
        return by_fold

    def keep_earliest(self, parent: str, task: str) -> None:
        """Of two finished runs of one task (two grids at once), the earliest stays."""
        twins = [r for r in self.children(parent, "FINISHED") if r.data.tags.get(TASK_TAG) == task]
        for late in sorted(twins, key=lambda r: (r.info.start_time, r.info.run_id))[1:]:
            self.client.delete_run(late.info.run_id)

    def find_parent(self, experiment_id: str, design: str) -> Run | None:
        """The design's parent: a finished one, else the earliest (the one every grid agrees on);
        a parent opened by a grid that lost the race, still empty, is deleted."""
        where = f"tags.`{DESIGN_TAG}` = '{design}' and tags.{MLFLOW_PARENT_RUN_ID} IS NULL"
        parents = sorted(
            self.search([experiment_id], where), key=lambda r: (r.info.start_time, r.info.run_id)
        )
        if not parents:
            return None
        finished = [r for r in parents if r.info.status == "FINISHED"]
        chosen = (finished or parents)[0]
        for other in parents:
            if other is not chosen and other.info.status == "RUNNING" and not self._has_children(other):
                self.client.delete_run(other.info.run_id)
        return chosen

    def _has_children(self, run: Run) -> bool:
        where = f"tags.{MLFLOW_PARENT_RUN_ID} = '{run.info.run_id}'"
        return bool(self.client.search_runs([run.info.experiment_id], where, max_results=1))

    def fold_states(self, parent: str) -> tuple[set[str], set[str]]:
        """(task keys of this parent's finished folds, those a live process on this host is
        running); other unfinished leftovers (killed or failed) are deleted so that they are
        neither pooled nor shown twice."""
        finished, running = set(), set()
        for run in self.children(parent):
            key = run.data.tags.get(TASK_TAG)
            if key is None:
                continue
            if run.info.status == "FINISHED":
                finished.add(key)
            elif run.info.status == "RUNNING" and owner_alive(run):
                running.add(key)
            else:
                self.client.delete_run(run.info.run_id)
        return finished, running - finished


@lru_cache(maxsize=8)
def _create_once(uri: str) -> None:
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///"))
    if not database.parent.is_dir():
        raise InputError(f"{uri}: the folder {database.parent} for the MLflow database does not exist")
    with open(database.with_name(f"{database.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        MlflowClient(uri).search_experiments(max_results=1)  # creates or migrates the tables
