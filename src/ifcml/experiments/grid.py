"""``ifcml grid``: models x channel sets x held-out units as tasks, resumable through MLflow.

Every (model, channel set), and with a ``learning_curve`` every (model, channel set, training
cells per class), is a *design* with a parent run; every held-out unit of it is a
task that logs one nested run; when a design's folds are all done, a last task pools them,
refits the model on all cells and closes the parent. Keys are deterministic (a hash of the
experiment's data, the model's spec, the channels, the split and the seed), stored as run tags,
so a re-run skips what MLflow already holds as finished and redoes the rest: a killed grid
resumes. A failing task is recorded as a FAILED run with its error and the others go on.
Tasks run in-process, on local processes, or on an existing Dask cluster (:mod:`ifcml.executors`).

Several grids may share one tracking store, and two may run the same spec at once: claims go
through MLflow, never the local disk, so they hold for a tracking server too. A design's
parent is the earliest top-level run with its key (a grid that opened a second one deletes
its own and joins the first); a fold run names its owner process (``host:pid``), so a resuming
grid leaves the runs of a live grid on this host alone and takes over those of dead ones; two
finished runs of one fold keep the earliest. Every search names exactly what it wants and
reads every page, so nothing depends on how many runs a design has.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from ifcml.cells import LABEL, is_store
from ifcml.errors import InputError
from ifcml.executors import Running, executor
from ifcml.experiments.design import Design
from ifcml.experiments.gated_data import gating_digest, gatings, is_gated, measure_gating_table, relabelled
from ifcml.experiments.results import Evaluation
from ifcml.experiments.run import check_positive, design_class, prepare, run_name, run_params, run_tags
from ifcml.experiments.spec import ExperimentSpec
from ifcml.experiments.splits import confound_check
from ifcml.experiments.tracking import DESIGN_TAG, TASK_TAG, Tracking

FINAL = "final"


@dataclass(frozen=True)
class Task:
    """One unit of work, small and picklable: which design, which fold (or the final step)."""

    spec: ExperimentSpec
    model: int  # index into spec.model_specs()
    channel_set: str
    fold: str  # a held-out unit's name, or FINAL
    key: str
    parent: str
    uri: str
    train_cells: int | None = None  # a learning curve's cap per class (None: every training cell)


@dataclass
class GridReport:
    experiment: str
    experiment_id: str
    tracking_uri: str
    done: int
    skipped: int
    failed: list[str]  # "task key: error"
    confounds: list[str]
    elsewhere: int = 0  # tasks a live grid on this host is running: left to it


def run_grid(
    spec: ExperimentSpec,
    uri: str,
    workers: int = 1,
    scheduler: str | None = None,
    on_task: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> GridReport:
    """Run every task of ``spec`` not yet finished in MLflow at ``uri``."""
    tracking = Tracking(uri)
    experiment_id = tracking.use_experiment(spec.name)
    confounds: set[str] = set()
    plans = []  # (design tasks, final task)
    skipped = elsewhere = 0
    designs = [
        (m, channel_set, size)
        for m in range(len(spec.model_specs()))
        for channel_set in spec.channel_sets
        for size in spec.train_sizes()
    ]
    for m, channel_set, size in designs:
        design = design_of(spec, m, channel_set, size)
        check_positive(design, spec.positive if "positive" in spec.model_fields_set else None)
        reports = confound_check(design.table)
        confounds.update(r.message() for r in reports)
        key = _key(spec, design, channel_set)
        parent = tracking.find_parent(experiment_id, key)
        design_folds = design.folds(spec.split, spec.seed)
        if parent is not None and parent.info.status == "FINISHED":
            skipped += len(design_folds) + 1
            continue
        if parent is None:  # open one, then take the earliest (another grid may have opened one too)
            _open(tracking, spec, design, channel_set, reports, key)
            parent = tracking.find_parent(experiment_id, key)
        finished, running = tracking.fold_states(parent.info.run_id)
        folds = []
        for fold in design_folds:
            task_key = f"{key}/{fold.name}"
            if task_key in finished:
                skipped += 1
            elif task_key in running:
                elsewhere += 1
            else:
                folds.append(Task(spec, m, channel_set, fold.name, task_key, parent.info.run_id, uri, size))
        if any(f"{key}/{fold.name}" in running for fold in design_folds):
            continue  # the grid running those folds pools the design
        final = Task(spec, m, channel_set, FINAL, f"{key}/{FINAL}", parent.info.run_id, uri, size)
        plans.append((folds, final))
    tasks = sum(len(folds) + 1 for folds, _ in plans)
    if on_total:
        on_total(tasks)
    failed, done = [], 0
    with executor(workers, scheduler, jobs=tasks) as processes, ThreadPoolExecutor(1) as here:
        pool = processes or here  # one worker: tasks run one at a time in this process
        waiting = {final.key: (final, {t.key for t in folds}) for folds, final in plans}
        pending = [t for folds, _ in plans for t in folds] + [final for folds, final in plans if not folds]
        futures = {}

        def submit(task: Task) -> None:
            futures[pool.submit(run_task, task)] = task

        for task in pending:
            submit(task)
        while futures:
            for future in as_completed(list(futures)):
                task = futures.pop(future)
                error = future.result()
                done += 1
                if on_task:
                    on_task(1)
                if error:
                    failed.append(f"{task.key}: {error}")
                for final_key, (final, needed) in list(waiting.items()):
                    if task.key in needed:
                        needed.discard(task.key)
                        if error:  # the design cannot be pooled; its parent says why
                            del waiting[final_key]
                            tracking.fail_run(final.parent, f"held-out {task.fold} failed: {error}")
                        elif not needed:
                            del waiting[final_key]
                            submit(final)
                break  # re-enter as_completed with the newly submitted futures
    return GridReport(spec.name, experiment_id, uri, done, skipped, failed, sorted(confounds), elsewhere)


def prepare_data(
    spec: ExperimentSpec,
    workers: int = 1,
    scheduler: str | None = None,
    on_cells: Callable[[int], None] | None = None,
) -> None:
    """Make what the spec reads and is missing: the store (``data.ingest``), then the feature
    table (``data.features``, with ``data.recipe``) when a classical model needs it; resumable."""
    from ifcml.features.recipe import load_recipe
    from ifcml.features.table import write_features
    from ifcml.io.channels import parse_channel_map
    from ifcml.io.ingest import Reading, ingest
    from ifcml.io.store import CellStore
    from ifcml.outputs import claimed
    from ifcml.progress import counting

    data = spec.data
    models = spec.model_specs()
    classical = [m for m in models if design_class(m).reads_of(m) == "features"]
    if classical and data.features is None:
        raise InputError(f"experiment {spec.name}: data.features is needed for {classical[0].name}")

    def features_missing() -> bool:
        return bool(classical) and not data.features.exists()

    def store_missing() -> bool:
        gated = is_gated(data)  # gates measure the store
        crops = any(design_class(m).crops_of(m) for m in models)
        return (crops or features_missing() or gated) and not is_store(data.store)

    if not (store_missing() or features_missing()):
        _prepare_gates(spec, workers, scheduler, on_cells)
        return
    # two grids of one spec at once: one makes the data, the other waits and then finds it made
    with claimed(data.store.with_name(f"{data.store.name}.prepare"), wait=True):
        if store_missing():
            if data.ingest is None:
                raise InputError(
                    f"{data.store}: no such store, and the experiment has no data.ingest to make it"
                )
            reading = Reading(
                data.ingest.format, parse_channel_map(data.ingest.channels), grid=data.ingest.grid
            )
            ingest(data.ingest.sources, data.store, reading, bars=counting(on_cells))
        if features_missing():
            needed = sorted({c for channels in spec.channel_sets.values() for c in channels})
            store = CellStore(data.store)
            write_features(
                store.path,
                data.features,
                recipe=load_recipe(data.recipe),
                channels=[c for c in store.channels if c in needed],
                run=Running(workers=workers, scheduler=scheduler, resume=True, on_cells=on_cells),
            )
    _prepare_gates(spec, workers, scheduler, on_cells)


def _prepare_gates(spec: ExperimentSpec, workers: int, scheduler: str | None, on_cells) -> None:
    """The gating table and the qc strategy, when the spec gates its cells (once, claimed)."""
    from ifcml.outputs import claimed

    if not is_gated(spec.data):
        return
    with claimed(spec.data.store.with_name(f"{spec.data.store.name}.gating"), wait=True):
        measure_gating_table(spec.data, Running(workers, scheduler, on_cells=on_cells))
        gatings(spec.model_dump_json())  # derives the qc strategy beside the gating table


def run_task(task: Task) -> str | None:
    """Run one task; its error message when it fails (also recorded in MLflow), else None."""
    tracking = Tracking(task.uri)
    run = None
    try:
        design = design_of(task.spec, task.model, task.channel_set, task.train_cells)
        if task.fold == FINAL:
            _finish(tracking, task, design)
            return None
        fold = next(f for f in design.folds(task.spec.split, task.spec.seed) if f.name == task.fold)
        run = tracking.open_fold(task.parent, fold.name, {**_tags_of(task, design), TASK_TAG: task.key})
        design.record_fold(tracking, run, fold, task.spec.seed, task.spec.max_evals, task.spec.log_trials)
        tracking.keep_earliest(task.parent, task.key)
        return None
    except Exception as exc:  # recorded, and the grid goes on with the other tasks
        message = f"{type(exc).__name__}: {exc}"
        _record_failure(tracking, task, run, message, traceback.format_exc())
        return message


def _finish(tracking: Tracking, task: Task, design: Design) -> None:
    if tracking.client.get_run(task.parent).info.status == "FINISHED":  # another grid of this spec pooled it
        return
    by_fold = tracking.finished_by_fold(task.parent)
    folds = design.folds(task.spec.split, task.spec.seed)
    evaluation = Evaluation(design.spec.name, design.classes)
    evaluation.folds = [tracking.read_fold(by_fold[fold.name].info.run_id) for fold in folds]
    design.close_run(
        tracking, task.parent, evaluation, task.spec.seed, task.spec.max_evals, task.spec.positive
    )


def design_of(spec: ExperimentSpec, model: int, channel_set: str, train_cells: int | None = None) -> Design:
    """The ``model``-th model of ``spec`` on ``channel_set``, as the grid runs it (labels, gates;
    at ``train_cells`` per class); a learning curve's points share one read of the data."""
    return _design_once(spec.model_dump_json(), model, channel_set).at_size(train_cells)


@lru_cache(maxsize=4)
def _design_once(spec_json: str, model: int, channel_set: str) -> Design:
    """The design's data, read once per process (tasks of one design share a worker's copy)."""
    spec = ExperimentSpec.model_validate_json(spec_json)
    model_spec = spec.model_specs()[model]
    data = spec.data
    path = data.features if design_class(model_spec).reads_of(model_spec) == "features" else data.store
    if path is None:
        raise InputError(f"experiment {spec.name}: data.features is needed for {model_spec.name}")
    relabel = relabelled(spec_json) if is_gated(data) else (lambda table: data.relabel(table, LABEL))
    design = prepare(path, model_spec, spec.channel_sets[channel_set], relabel, store=data.store)
    if design.table[LABEL].nunique() < 2:
        steps = "data.labels_from / data.merge / data.labels / data.gates"
        raise InputError(f"{path}: fewer than two labels left after {steps}")
    if not is_gated(data):
        return design
    steps = gatings(spec_json)
    inputs = None if design.inputs is None else {**design.inputs, "gates": [g.to_dict() for g in steps]}
    params = {**design.params, "gates": ", ".join(f"{g.file_name}:{g.keep}" for g in steps)}
    if data.labels_from:
        params["labels_from"] = f"{Path(data.labels_from.strategy).name}:{','.join(data.labels_from.gates)}"
    digest = f"{design.digest}-gates-{gating_digest(spec_json)}"
    return replace(design, inputs=inputs, params=params, digest=digest)


def _key(spec: ExperimentSpec, design: Design, channel_set: str) -> str:
    what = [
        design.digest,
        design.spec.model_dump(mode="json"),
        design.channels,
        channel_set,
        spec.split,
        spec.seed,
        spec.max_evals,
        spec.data.labels,
        spec.data.merge,
    ]
    if design.train_cells is not None:  # full-size designs keep the keys they had before curves
        what.append(design.train_cells)
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _tags_of(task: Task, design: Design) -> dict[str, str]:
    return {
        **run_tags(design, task.spec.split, [], task.channel_set),
        DESIGN_TAG: task.key.split("/")[0],
    }


def _open(
    tracking: Tracking, spec: ExperimentSpec, design: Design, channel_set: str, reports, key: str
) -> str:
    tags = {**run_tags(design, spec.split, reports, channel_set), DESIGN_TAG: key}
    params = run_params(design, spec.split, spec.seed, spec.max_evals, spec.positive)
    return design.open_run(tracking, spec.name, run_name(design, channel_set), tags, params)


def _record_failure(tracking: Tracking, task: Task, run: str | None, message: str, trace: str) -> None:
    """The task's run (made now if it failed before its run began) ends FAILED with the error
    as a tag and the traceback as a file; a failed final step fails the design's parent."""
    if task.fold == FINAL:
        tracking.fail_run(task.parent, message)
        return
    if run is None:
        run = tracking.open_fold(task.parent, task.fold, {TASK_TAG: task.key})
    tracking.client.set_tag(run, "mlflow.runName", f"held-out {task.fold} (failed)")
    tracking.client.log_text(run, trace, "error.txt")
    tracking.fail_run(run, message)
