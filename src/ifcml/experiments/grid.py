"""``ifcml grid``: models x channel sets x held-out units as tasks, resumable through MLflow.

Every (model, channel set) is a *design* with a parent run; every held-out unit of it is a
task that logs one nested run; when a design's folds are all done, a last task pools them,
refits the model on all cells and closes the parent. Keys are deterministic (a hash of the
experiment's data, the model's spec, the channels, the split and the seed), stored as run tags,
so a re-run skips what MLflow already holds as finished and redoes the rest: a killed grid
resumes. A failing task is recorded as a FAILED run with its error and the others go on.
Tasks run in-process, on local processes, or on an existing Dask cluster (:mod:`ifcml.executors`).
"""

from __future__ import annotations

import hashlib
import json
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import lru_cache

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from ifcml.errors import InputError
from ifcml.executors import executor
from ifcml.experiments.evaluate import LABEL, Evaluation
from ifcml.experiments.run import Prepared, prepare, run_name, run_params, run_tags
from ifcml.experiments.spec import ExperimentSpec
from ifcml.experiments.splits import confound_check
from ifcml.experiments.tracking import fail_run, log_fold, read_fold, use_experiment
from ifcml.models.network_spec import NetworkSpec

DESIGN_TAG, TASK_TAG = "ifcml.design", "ifcml.task"
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


@dataclass
class GridReport:
    experiment: str
    tracking_uri: str
    done: int
    skipped: int
    failed: list[str]  # "task key: error"
    confounds: list[str]


def run_grid(
    spec: ExperimentSpec,
    uri: str,
    workers: int = 1,
    scheduler: str | None = None,
    on_task: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> GridReport:
    """Run every task of ``spec`` not yet finished in MLflow at ``uri``."""
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    experiment_id = use_experiment(spec.name)
    confounds: set[str] = set()
    plans = []  # (design tasks, final task)
    skipped = 0
    for m in range(len(spec.model_specs())):
        for channel_set in spec.channel_sets:
            prepared = _prepared(spec, m, channel_set)
            reports = confound_check(prepared.table)
            confounds.update(r.message() for r in reports)
            design = _key(spec, prepared, channel_set)
            parent = _find_parent(client, experiment_id, design)
            design_folds = prepared.folds(spec.split, spec.seed)
            if parent is not None and parent.info.status == "FINISHED":
                skipped += len(design_folds) + 1
                continue
            parent_id = parent.info.run_id if parent else _open(spec, prepared, channel_set, reports, design)
            finished = _finished_folds(client, experiment_id, parent_id)
            folds = []
            for fold in design_folds:
                key = f"{design}/{fold.name}"
                if key in finished:
                    skipped += 1
                else:
                    folds.append(Task(spec, m, channel_set, fold.name, key, parent_id, uri))
            plans.append((folds, Task(spec, m, channel_set, FINAL, f"{design}/{FINAL}", parent_id, uri)))
    if on_total:
        on_total(sum(len(folds) + 1 for folds, _ in plans))
    failed, done = [], 0
    with executor(workers, scheduler) as processes, ThreadPoolExecutor(1) as here:
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
                            fail_run(final.parent, f"held-out {task.fold} failed: {error}")
                        elif not needed:
                            del waiting[final_key]
                            submit(final)
                break  # re-enter as_completed with the newly submitted futures
    return GridReport(spec.name, uri, done, skipped, failed, sorted(confounds))


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
    from ifcml.io.detect import open_source
    from ifcml.io.store import CellStore, write_store

    data = spec.data
    models = spec.model_specs()
    classical = [m for m in models if not isinstance(m, NetworkSpec)]
    if classical and data.features is None:
        raise InputError(f"experiment {spec.name}: data.features is needed for {classical[0].name}")
    needs_store = len(classical) < len(models) or (classical and not data.features.exists())
    if needs_store and not (data.store / "meta.json").exists():
        if data.ingest is None:
            raise InputError(f"{data.store}: no such store, and the experiment has no data.ingest to make it")
        channels = parse_channel_map(data.ingest.channels)
        sources = [
            open_source(path, data.ingest.format, channels=channels, grid=data.ingest.grid)
            for path in data.ingest.sources
        ]
        write_store(sources, data.store, on_cells=on_cells)
    if classical and not data.features.exists():
        needed = sorted({c for channels in spec.channel_sets.values() for c in channels})
        store = CellStore(data.store)
        write_features(
            store.path,
            data.features,
            recipe=load_recipe(data.recipe),
            channels=[c for c in store.channels if c in needed],
            workers=workers,
            scheduler=scheduler,
            resume=True,
            on_cells=on_cells,
        )


def run_task(task: Task) -> str | None:
    """Run one task; its error message when it fails (also recorded in MLflow), else None."""
    mlflow.set_tracking_uri(task.uri)
    try:
        prepared = _prepared(task.spec, task.model, task.channel_set)
        if task.fold == FINAL:
            _finish(task, prepared)
        else:
            fold = next(f for f in prepared.folds(task.spec.split, task.spec.seed) if f.name == task.fold)
            result = prepared.run_fold(fold, task.spec.seed, task.spec.max_evals)
            log_fold(task.parent, result, prepared.classes, _tags_of(task, prepared), {TASK_TAG: task.key})
        return None
    except Exception as exc:  # recorded, and the grid goes on with the other tasks
        message = f"{type(exc).__name__}: {exc}"
        _record_failure(task, message, traceback.format_exc())
        return message


def _finish(task: Task, prepared: Prepared) -> None:
    client = MlflowClient()
    runs = client.search_runs(
        [client.get_run(task.parent).info.experiment_id],
        f"tags.{MLFLOW_PARENT_RUN_ID} = '{task.parent}' and attributes.status = 'FINISHED'",
    )
    by_fold = {run.data.tags.get("held_out"): run.info.run_id for run in runs if TASK_TAG in run.data.tags}
    folds = prepared.folds(task.spec.split, task.spec.seed)
    evaluation = Evaluation(prepared.spec.name, prepared.classes)
    evaluation.folds = [read_fold(by_fold[fold.name]) for fold in folds]
    prepared.close_run(task.parent, evaluation, task.spec.seed, task.spec.max_evals, task.spec.positive)


def _prepared(spec: ExperimentSpec, model: int, channel_set: str) -> Prepared:
    return _prepared_once(spec.model_dump_json(), model, channel_set)


@lru_cache(maxsize=4)
def _prepared_once(spec_json: str, model: int, channel_set: str) -> Prepared:
    """The design's data, read once per process (tasks of one design share a worker's copy)."""
    spec = ExperimentSpec.model_validate_json(spec_json)
    model_spec = spec.model_specs()[model]
    data = spec.data
    path = data.store if isinstance(model_spec, NetworkSpec) else data.features
    if path is None:
        raise InputError(f"experiment {spec.name}: data.features is needed for {model_spec.name}")
    prepared = prepare(path, model_spec, spec.channel_sets[channel_set], lambda t: data.relabel(t, LABEL))
    if prepared.table[LABEL].nunique() < 2:
        raise InputError(f"{path}: fewer than two labels left after data.merge / data.labels")
    return prepared


def _key(spec: ExperimentSpec, prepared: Prepared, channel_set: str) -> str:
    what = [
        prepared.digest,
        prepared.spec.model_dump(mode="json"),
        prepared.channels,
        channel_set,
        spec.split,
        spec.seed,
        spec.max_evals,
        spec.data.labels,
        spec.data.merge,
    ]
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _tags_of(task: Task, prepared: Prepared) -> dict[str, str]:
    return {
        **run_tags(prepared, task.spec.split, [], task.channel_set),
        DESIGN_TAG: task.key.split("/")[0],
    }


def _find_parent(client: MlflowClient, experiment_id: str, design: str):
    runs = client.search_runs([experiment_id], f"tags.`{DESIGN_TAG}` = '{design}'")
    parents = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    finished = [r for r in parents if r.info.status == "FINISHED"]
    return (finished or parents or [None])[0]


def _finished_folds(client: MlflowClient, experiment_id: str, parent: str) -> set[str]:
    """Task keys of this parent's finished folds; unfinished leftovers (killed or failed) are
    deleted so that they are neither pooled nor shown twice."""
    runs = client.search_runs([experiment_id], f"tags.{MLFLOW_PARENT_RUN_ID} = '{parent}'")
    finished = set()
    for run in runs:
        key = run.data.tags.get(TASK_TAG)
        if key is None:
            continue
        if run.info.status == "FINISHED" and key not in finished:
            finished.add(key)
        else:
            client.delete_run(run.info.run_id)
    return finished


def _open(spec: ExperimentSpec, prepared: Prepared, channel_set: str, reports, design: str) -> str:
    tags = {**run_tags(prepared, spec.split, reports, channel_set), DESIGN_TAG: design}
    params = run_params(prepared, spec.split, spec.seed, spec.max_evals, spec.positive)
    return prepared.open_run(spec.name, run_name(prepared, channel_set), tags, params)


def _record_failure(task: Task, message: str, trace: str) -> None:
    """A FAILED run for the task (nested under its design) with the error as a tag and a file."""
    client = MlflowClient()
    if task.fold == FINAL:
        fail_run(task.parent, message)
        return
    parent = client.get_run(task.parent)
    run = client.create_run(
        parent.info.experiment_id,
        run_name=f"held-out {task.fold} (failed)",
        tags={MLFLOW_PARENT_RUN_ID: task.parent, TASK_TAG: task.key},
    ).info.run_id
    client.log_text(run, trace, "error.txt")
    fail_run(run, message)
