"""``ifcml export``: the best (model, channel set) of an experiment as a model for raw images.

The best design is chosen by one metric over held-out units (higher is better, except for
errors, losses and times). Its model was already refitted on every usable cell when the design
finished (the grid's last task, or ``ifcml train``), so export refits nothing: it wraps that
model, with the way it reads a cell, into :class:`~ifcml.deploy.pyfunc.CellClassifier`, saves
it with pinned requirements, and optionally registers it with an alias.

Loading it needs ifcml installed (``./scripts/install.sh``). ifcml's code is deliberately not
copied into the model (MLflow's ``code_paths``): MLflow puts such code first on ``sys.path`` of
the loading process, so an ifcml that is running (and the processes it spawns) would continue on
the model's copy, cut off from its repository's ``models/`` and ``experiments/``.
"""

from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import Model, ModelSignature
from mlflow.types import ParamSchema, ParamSpec
from packaging.requirements import Requirement

import ifcml
from ifcml.deploy.model_folder import MODEL_ARTIFACT, MODEL_CODE
from ifcml.errors import InputError
from ifcml.experiments.compare import design_runs
from ifcml.experiments.mlflow_ui import lower_is_better
from ifcml.experiments.run import TRAIN_SIZE_TAG
from ifcml.experiments.tracking import Tracking
from ifcml.outputs import claimed, replace_atomically

SIGNATURE = ModelSignature(params=ParamSchema([ParamSpec("workers", "long", 1)]))


@dataclass
class Exported:
    path: Path
    run_id: str  # the design's parent run
    model: str
    channel_set: str
    metric: str
    value: float
    registered: str | None  # "models:/NAME@ALIAS" when registered
    confounded: str | None  # why the design's metric cannot be trusted, when it cannot


def best_design(tracking: Tracking, experiment: str, metric: str, model: str | None = None) -> pd.Series:
    """The finished parent run of ``experiment`` (of ``model`` only, if given) best by ``metric``,
    among the designs trained on every cell (a learning curve's smaller ones are not candidates)."""
    top = design_runs(tracking, experiment)
    size = f"tags.{TRAIN_SIZE_TAG}"
    if size in top:
        top = top[top[size].fillna("all") == "all"]
    if model is not None:
        if model not in set(top["tags.model"]):
            known = ", ".join(sorted(set(top["tags.model"])))
            raise InputError(f"--model: experiment {experiment!r} has no finished {model!r}; it has {known}")
        top = top[top["tags.model"] == model]
    column = f"metrics.{metric}"
    if column not in top or top[column].isna().all():
        known = sorted(c.removeprefix("metrics.") for c in top if c.startswith("metrics."))
        raise InputError(f"--metric: no design of {experiment!r} has {metric!r}; it has {', '.join(known)}")
    lower = lower_is_better(metric)
    ranked = top.dropna(subset=[column]).sort_values([column, "start_time"], ascending=[lower, True])
    return ranked.iloc[0]


def export_model(
    tracking: Tracking,
    experiment: str,
    metric: str,
    out: Path,
    *,
    model: str | None = None,
    register: str | None = None,
    alias: str = "champion",
) -> Exported:
    """Save the best design of ``experiment`` as an MLflow model at ``out`` (never replaced)."""
    out = Path(out)
    with claimed(out):
        return _export(tracking, experiment, metric, out, model, register, alias)


def _export(
    tracking: Tracking,
    experiment: str,
    metric: str,
    out: Path,
    model: str | None,
    register: str | None,
    alias: str,
) -> Exported:
    if out.exists():
        raise InputError(f"{out}: already exists; export to another --out or remove it first")
    best = best_design(tracking, experiment, metric, model)
    run_id = best["run_id"]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            inner = str(tracking.download(f"runs:/{run_id}/model", Path(tmp)))
        except Exception as exc:  # mlflow raises several kinds for a missing artifact
            raise InputError(f"run {run_id}: has no model to export ({exc})") from exc
        trained = Model.load(inner).metadata or {}
        if not trained.get("inputs"):
            raise InputError(
                f"run {run_id}: its model does not say how it reads raw cells (trained on a feature "
                "table that predates this ifcml); measure and run the grid again"
            )
        positive = best.get("params.positive")
        metadata = {
            "ifcml_version": ifcml.__version__,
            "experiment": experiment,
            "source_run_id": run_id,
            "tracking_uri": tracking.uri,
            "model": best["tags.model"],
            "channel_set": best["tags.channel_set"],
            "metric": metric,
            "metric_value": float(best[f"metrics.{metric}"]),
            "classes": trained["classes"],
            "positive": positive if positive in trained["classes"] else None,
            "inputs": trained["inputs"],
            "readout": trained.get("readout"),  # the design's held-out error rates (corrected readout)
            "confounded": best.get("tags.confounded", "no"),  # the metric's honesty travels with it
        }
        arguments = {
            "python_model": str(MODEL_CODE),  # nothing pickled
            "artifacts": {MODEL_ARTIFACT: inner},
            "pip_requirements": pinned_requirements(),
            "signature": SIGNATURE,
            "metadata": metadata,
        }
        with warnings.catch_warnings():  # an input example would be images; ifcml checks inputs itself
            warnings.filterwarnings("ignore", ".*An input example was not provided")
            replace_atomically(out, lambda staging: mlflow.pyfunc.save_model(staging, **arguments))
            registered = (
                tracking.register(experiment, run_id, register, alias, arguments) if register else None
            )
    confounded = metadata["confounded"] if metadata["confounded"] not in ("no", None) else None
    return Exported(
        out, run_id, metadata["model"], metadata["channel_set"], metric, metadata["metric_value"], registered,
        confounded,
    )  # fmt: skip


def pinned_requirements() -> list[str]:
    """ifcml's own dependencies at the versions installed here (constraints.txt pins them)."""
    pins = []
    for line in requires("ifcml") or []:
        requirement = Requirement(line)
        if requirement.marker is not None:  # extras (tests, dev) are not needed to predict
            continue
        try:
            pins.append(f"{requirement.name}=={version(requirement.name)}")
        except PackageNotFoundError:
            pins.append(str(requirement))
    return pins
