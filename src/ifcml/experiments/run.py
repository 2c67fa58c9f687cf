"""``ifcml train``: one design evaluated over a split, refitted and recorded in MLflow.

:func:`prepare` reads a spec's data into its branch's :class:`~ifcml.experiments.design.Design`;
:func:`run_model` runs its folds and final refit in sequence, as ``ifcml grid`` runs them as
separate tasks, both recorded by the same code (the design's ``record_fold`` / ``close_run``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ifcml.cells import INSTANCE, LABEL
from ifcml.errors import InputError
from ifcml.experiments.classical_design import ClassicalDesign
from ifcml.experiments.design import Design, Relabel
from ifcml.experiments.hybrid_design import HybridDesign
from ifcml.experiments.network_design import NetworkDesign
from ifcml.experiments.results import Evaluation
from ifcml.experiments.splits import ConfoundReport, confound_check
from ifcml.experiments.stacked_design import StackedDesign
from ifcml.experiments.tracking import Tracking
from ifcml.features.recipe import Pruning
from ifcml.models.classical import ModelSpec
from ifcml.models.composite_spec import HybridSpec, StackedSpec
from ifcml.models.network_spec import NetworkSpec
from ifcml.models.registry import load_model_spec
from ifcml.progress import SILENT, Progress
from ifcml.readout import DEFAULT_POSITIVE

ModelSpecs = ModelSpec | NetworkSpec | HybridSpec | StackedSpec
DESIGNS: dict[type, type[Design]] = {
    ModelSpec: ClassicalDesign,
    NetworkSpec: NetworkDesign,
    HybridSpec: HybridDesign,
    StackedSpec: StackedDesign,
}
TRAIN_SIZE_TAG = "train_cells_per_class"  # "all", or a learning curve's cap


def design_class(spec: ModelSpecs) -> type[Design]:
    """The design that evaluates models of ``spec``'s kind."""
    return DESIGNS[type(spec)]


def prepare(
    data: Path | str,
    spec: ModelSpecs,
    channels: list[str] | None = None,
    relabel: Relabel | None = None,
    pruning: Pruning | None = None,
    store: Path | None = None,
) -> Design:
    """Read ``data`` for ``spec`` (a feature table for classical models, a store for networks;
    ``store``: the store a feature table was measured from, for hybrids and stacks)."""
    data = Path(data)
    if not data.exists():
        raise InputError(f"{data}: no such feature table or store")
    design = design_class(spec).read(data, spec, channels, relabel, pruning or Pruning(), store)
    if len(design.classes) < 2:
        found = f"only {design.classes[0]!r}" if design.classes else "none"
        raise InputError(
            f"{data}: a model needs labelled cells of at least two classes (usable cells: "
            f"{len(design.table)}, labels: {found}); label the cells at ingest (label folders, --label)"
        )
    return design


@dataclass(frozen=True)
class TrainOptions:
    """How ``ifcml train`` evaluates a model: the split, which cells and channels, the search
    budget and seed, where it is recorded, and which class is read out."""

    split: str = "leave-one-instance-out"
    channels: list[str] | None = None
    labels: list[str] | None = None  # keep only cells of these labels
    pruning: Pruning | None = None
    max_evals: int | None = None  # hyperopt trials per search (default: the model spec's)
    train_cells: int | None = None  # a learning curve's point
    store: Path | None = None  # the store a feature table was measured from (hybrids, stacks)
    seed: int = 0
    experiment: str = "ifcml"
    uri: str | None = None  # tracking URI (default: see tracking_uri)
    positive: str | None = None  # the readout's class (default: leukemic where it is a label)
    log_trials: bool = False


@dataclass(frozen=True)
class Watch:
    """What ``ifcml train`` shows while it works: ``folds(names)`` once the split is known,
    ``fold(name)`` as each held-out unit starts (``"final"`` for the refit), ``progress`` for
    its trials and epochs, and ``confound(message)`` for each warning."""

    folds: Callable[[list[str]], None] = lambda names: None
    fold: Callable[[str], None] = lambda name: None
    progress: Progress = SILENT
    confound: Callable[[str], None] = lambda message: None


@dataclass
class TrainResult:
    run_id: str
    tracking_uri: str
    experiment_id: str
    metrics: dict
    confounds: list[ConfoundReport]


def run_model(
    data: Path | str, model: str | ModelSpecs, options: TrainOptions = TrainOptions(), watch: Watch = Watch()
) -> TrainResult:
    """Evaluate ``model`` (a name in models/, a YAML path or a spec) on ``data`` and log it.

    The design's run exists from the first step: each held-out unit's run opens when its
    training starts and is fed as it goes (trials, epochs), so MLflow shows the work moving.
    """
    spec = model if isinstance(model, ModelSpecs) else load_model_spec(model)
    labels = options.labels
    relabel = (lambda table: table[table[LABEL].isin(labels)]) if labels else None
    design = prepare(data, spec, options.channels, relabel, options.pruning, options.store)
    design = design.at_size(options.train_cells)
    if labels:
        _check_labels(design, labels)
    check_positive(design, options.positive)
    positive = options.positive or DEFAULT_POSITIVE
    seed, max_evals = options.seed, options.max_evals
    confounds = confound_check(design.table)
    for report in confounds:
        watch.confound(report.message())
    folds = design.folds(options.split, seed)
    tracking = Tracking(options.uri)
    tags = run_tags(design, options.split, confounds)
    params = run_params(design, options.split, seed, max_evals, positive)
    parent = design.open_run(tracking, options.experiment, run_name(design), tags, params)
    watch.folds([fold.name for fold in folds])
    try:
        evaluation = Evaluation(spec.name, design.classes)
        for fold in folds:
            watch.fold(fold.name)
            run = tracking.open_fold(parent, fold.name, tags)
            try:
                result = design.record_fold(
                    tracking, run, fold, seed, max_evals, options.log_trials, watch.progress
                )
            except BaseException as exc:
                tracking.fail_run(run, f"{type(exc).__name__}: {exc}")
                raise
            evaluation.folds.append(result)
        watch.fold("final")
        summary = design.close_run(tracking, parent, evaluation, seed, max_evals, positive, watch.progress)
    except BaseException as exc:  # the parent says why it stopped instead of staying RUNNING
        tracking.fail_run(parent, f"{type(exc).__name__}: {exc}")
        raise
    experiment_id = tracking.client.get_run(parent).info.experiment_id
    return TrainResult(parent, tracking.uri, experiment_id, summary, confounds)


def run_name(design: Design, channel_set: str | None = None) -> str:
    name = f"{design.name} | {channel_set or '+'.join(design.channels)}"
    return name if design.train_cells is None else f"{name} | {design.train_cells}/class"


def run_tags(
    design: Design, split: str, confounds: list[ConfoundReport], channel_set: str | None = None
) -> dict[str, str]:
    return {
        "branch": design.branch,
        "model": design.name,
        "channel_set": channel_set or "+".join(design.channels),
        "split": split,
        "confounded": "; ".join(r.message() for r in confounds) or "no",
        TRAIN_SIZE_TAG: design.train_size,
    }


def run_params(design: Design, split: str, seed: int, max_evals: int | None, positive: str) -> dict:
    return {
        "model": design.name,
        "split": split,
        "seed": seed,
        "positive": positive,  # the readout's class; an exported model reports its fraction
        "channels": "+".join(design.channels),
        "n_cells": len(design.table),
        "n_instances": design.table[INSTANCE].nunique(),
        "n_classes": len(design.classes),
        "train_cells_per_class": design.train_size,
        **design.params,
        **design.budget(max_evals),
    }


def check_positive(design: Design, positive: str | None) -> None:
    """A readout class that was asked for must be a label of the usable cells (the default,
    ``leukemic``, is read out only where it is one)."""
    if positive is not None and positive not in design.classes:
        raise InputError(
            f"positive: {positive!r} is not a label of the usable cells of {design.source} "
            f"(labels: {', '.join(design.classes)})"
        )


def _check_labels(design: Design, labels: list[str]) -> None:
    missing = sorted(set(labels) - set(design.classes))
    if missing:
        raise InputError(f"{design.source}: no usable cells labelled {', '.join(missing)}")
