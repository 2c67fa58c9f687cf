"""The ``ifcml`` command: a thin layer over the library.

User mistakes (an :class:`~ifcml.errors.IfcmlError`) are printed as one line on stderr
with exit status 2, never as a traceback.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Annotated

import pandas as pd
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from ifcml.cells import is_store
from ifcml.deploy.predict import MIN_CELLS
from ifcml.errors import IfcmlError, IfcmlNotice, InputError, StoreError
from ifcml.executors import Running, available_cores, check_scheduler
from ifcml.features.recipe import load_recipe
from ifcml.features.table import write_features
from ifcml.io.channels import parse_channel_map
from ifcml.io.detect import FORMATS
from ifcml.io.ingest import Reading, ingest_sources
from ifcml.io.store import CellStore, write_store
from ifcml.simulate import PAPER_CHANNELS, SimulatedSource, SimulationSettings, write_tiff_export

# What the command prints is ifcml's own: TensorFlow's C++ start-up lines (oneDNN, absl, CPU
# features) and MLflow's INFO lines (database migrations) would land between the progress bars.
# Worker processes inherit these; a user's own settings win.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")

app = typer.Typer(
    help="Classical machine learning vs deep learning on imaging flow cytometry images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(soft_wrap=True)  # long paths stay on one line (greppable)


# --seed: numpy's and hyperopt's seeds are unsigned 32-bit integers
Seed = typer.Option(min=0, max=2**32 - 1, help="Random seed (0 to 2^32-1).")

# The --tracking-uri option every MLflow verb takes.
# The --workers option of every verb that measures or trains cells, and its default.
CORES = available_cores()
Workers = Annotated[
    int,
    typer.Option(min=1, help="Local worker processes (default: one per core this process may use)."),
]
TrackingUri = Annotated[
    str | None,
    typer.Option(help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)."),
]


@contextmanager
def cell_progress(total: int | None, what: str):
    """A progress bar in cells and cells/s on stderr (a count when ``total`` is unknown); yields
    the update function."""
    with tqdm(total=total, desc=what, unit=" cells", unit_scale=True, file=sys.stderr) as bar:
        yield bar.update
        bar.total = bar.n  # totals are upper bounds (empty montage tiles are not cells)


@app.command()
def ingest(
    sources: Annotated[list[Path], typer.Argument(help="Folders (or files) to read.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The CellStore folder to create.")],
    fmt: Annotated[str, typer.Option("--format", help=f"One of {', '.join(FORMATS)}.")] = "auto",
    channels: Annotated[
        str | None, typer.Option(help="Instrument channels to keep and their names, e.g. 3:BF,4:DNA,6:DF.")
    ] = None,
    grid: Annotated[str | None, typer.Option(help="Montage grid ROWSxCOLS, e.g. 30x30.")] = None,
    row_major: Annotated[
        bool, typer.Option("--row-major", help="Montage tiles fill row by row (default: column by column).")
    ] = False,
    instance: Annotated[
        str | None, typer.Option(help="Instance (sample) name; default: each source folder's name.")
    ] = None,
    label: Annotated[
        str | None, typer.Option(help="Label of every cell of CIF files exported per gated population.")
    ] = None,
    samples: Annotated[
        Path | None, typer.Option(help="CSV with instance, patient, timepoint columns to attach.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing store at --out.")] = False,
) -> None:
    """Read IFC sources into a CellStore (images.zarr + cells.parquet + meta.json)."""
    reading = Reading(fmt, parse_channel_map(channels), instance, grid, not row_major, label)
    planned = [reading.open(path) for path in sources]
    if fmt == "auto":
        for path, source in zip(sources, planned, strict=True):
            console.print(f"{path}: reading as [bold]{source.format}[/bold]", highlight=False)
    sample_table = _read_samples(samples) if samples else None
    store = ingest_sources(planned, out, samples=sample_table, overwrite=overwrite, bars=cell_progress)
    console.print(f"wrote {store.n_cells} cells to {store.path}", highlight=False)


@app.command()
def info(
    store: Annotated[Path, typer.Argument(help="A CellStore folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Read and check every chunk, and the images' SHA-256.")
    ] = False,
) -> None:
    """Summarise a CellStore: cells, channels, and cells per instance and label."""
    opened = CellStore(store)
    if verify:
        _verify(opened)
    summary = opened.summary()
    if as_json:
        print(json.dumps(summary))
        return
    console.print(f"{store}: {summary['n_cells']} cells, channels {', '.join(summary['channels'])}")
    labels = sorted({label for per in summary["counts"].values() for label in per})
    table = Table("instance", *labels, "total")
    for instance, per in summary["counts"].items():
        table.add_row(instance, *(str(per.get(label, 0)) for label in labels), str(sum(per.values())))
    console.print(table)


def _verify(store: CellStore) -> None:
    """Print every damaged chunk and fail, or say what was checked."""
    problems = store.verify()
    for problem in problems:
        console.print(problem, highlight=False)
    if problems:
        raise StoreError(f"{store.path}: {len(problems)} problem(s) found (listed above); ingest it again")
    how = "CRC-32C of every chunk and " if store.verifiable else "every chunk decoded (no checksums) and "
    console.print(f"{store.path}: verified, {how}the images' SHA-256 match", highlight=False)


@app.command()
def simulate(
    out: Annotated[Path, typer.Argument(help="Output folder (TIFF export tree) or store.")],
    fmt: Annotated[str, typer.Option("--format", help="tiff (IDEAS-style export) or store.")] = "tiff",
    patients: Annotated[int, typer.Option(min=1)] = 4,
    timepoints: Annotated[str, typer.Option(help="Comma-separated timepoint names.")] = "day0,day15,day33",
    cells_per_sample: Annotated[int, typer.Option(min=1)] = 300,
    channels: Annotated[
        str, typer.Option(help=f"Channels to render, from {','.join(PAPER_CHANNELS.values())}.")
    ] = ",".join(PAPER_CHANNELS.values()),
    unlabelled: Annotated[bool, typer.Option(help="Write no labels (a new sample to predict).")] = False,
    seed: Annotated[int, Seed] = 0,
) -> None:
    """Simulate bone-marrow IFC samples (leukemic / normal / other) with known fractions."""
    settings = SimulationSettings(
        patients=patients,
        timepoints=tuple(t.strip() for t in timepoints.split(",") if t.strip()),
        cells_per_sample=cells_per_sample,
        channels=_paper_channels(channels),
        labelled=not unlabelled,
        seed=seed,
    )
    run_simulation(settings, out, fmt)


def run_simulation(settings: SimulationSettings, out: Path, fmt: str) -> None:
    """Simulate into a TIFF export tree or a store, with progress."""
    source = SimulatedSource(settings)
    with cell_progress(source.n_candidates, "simulate") as update:
        if fmt == "tiff":
            write_tiff_export(source, out, on_cells=update)
        elif fmt == "store":
            write_store([source], out, samples=source.samples, on_cells=update)
        else:
            raise InputError(f"--format: {fmt!r} is not one of tiff, store")
    console.print(f"wrote {source.n_candidates} simulated cells to {out}", highlight=False)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's data and results.")] = Path("demo_output"),
    seed: Annotated[int, Seed] = 0,
) -> None:
    """The main job on embedded default data: simulate, ingest, measure, grid, report, export, readout.

    Simulated samples with known truth (12 samples x 300 cells) go through the paper's flow:
    IDEAS-style TIFF export, ingest, CellProfiler measurements, ground truth by gating the stained
    channels (gates/simulated_panel.xml) and the QC gates, experiments/demo.yaml (naive Bayes,
    linear SVM, random forest, XGBoost, the compact CNN on label-free channels,
    leave-one-instance-out) in MLflow, the comparison report, export of the best design, and the
    readout of two new simulated patients with it, counted on their in-focus single cells. Every
    step resumes: finished outputs and finished grid tasks are skipped, so an interrupted demo
    goes on where it stopped.
    """
    from ifcml import demo as steps

    run, settings = steps.Demo(out, seed), SimulationSettings(seed=seed)
    cells = steps.simulate(settings, run.raw, cell_progress)
    console.print(f"simulated {cells} cells: {run.raw}", highlight=False)
    steps.ingest_export(run.raw, run.store, cell_progress, settings.channels)
    info(run.store, as_json=False)
    spec = steps.experiment(run)
    for line in steps.measure(run, spec, cell_progress):
        console.print(line, highlight=False)
    with tqdm(desc="grid", unit=" tasks", file=sys.stderr) as bar:
        report = steps.grid(run, spec, on_task=bar.update, on_total=lambda n: bar.reset(total=n))
    for message in report.confounds:
        _warn(message)
    console.print(
        f"grid {spec.name}: {report.done} task(s) run, {report.skipped} already finished, "
        f"{len(report.failed)} failed",
        highlight=False,
    )
    for failure in report.failed:
        console.print(f"[red]failed[/red] {failure}", highlight=False)
    page = steps.report(run, spec)
    if report.failed:  # the best design is only known once every design has finished
        _warn("export and readout skipped until every grid task has finished: run `ifcml demo` again")
    else:
        exported = steps.export(run, spec)
        if exported:
            _print_exported(exported)
        samples = steps.read_out(run, cell_progress)
        from ifcml.deploy.predict import model_card

        console.print(f"new patients, read out by {model_card(run.model).summary}:", highlight=False)
        _print_samples(samples)
        console.print(f"per cell: {run.predictions / 'cells.csv'}", highlight=False)
    console.print(f"report: {page.resolve()}", highlight=False)
    _print_ui(run.uri, report.experiment_id)
    if report.failed:
        raise typer.Exit(1)


@app.command()
def features(
    store: Annotated[Path, typer.Argument(help="A CellStore folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The feature table to write (.parquet).")],
    engine: Annotated[
        str, typer.Option(help="cp-measure (in-process) or cellprofiler (real CellProfiler).")
    ] = "cp-measure",
    recipe: Annotated[
        Path | None, typer.Option(help="Feature recipe YAML (default: features/default.yaml).")
    ] = None,
    channels: Annotated[
        str | None, typer.Option(help="Channels to measure, e.g. BF,DF (default: all).")
    ] = None,
    workers: Workers = CORES,
    scheduler: Annotated[str | None, typer.Option(help="Address of a running Dask scheduler.")] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue an interrupted run, keeping its finished chunks.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing table at --out.")] = False,
) -> None:
    """Segment and measure every cell (CellProfiler measurements) into a feature table."""
    check_scheduler(scheduler)
    with cell_progress(CellStore(store).n_cells, "features") as update:
        table = write_features(
            store,
            out,
            recipe=load_recipe(recipe),
            engine=engine,
            channels=_names(channels),
            run=Running(
                workers=workers, scheduler=scheduler, resume=resume, overwrite=overwrite, on_cells=update
            ),
        )
    shape = pq.read_metadata(table)
    console.print(f"wrote {shape.num_rows} cells x {shape.num_columns} columns to {table}", highlight=False)


@app.command()
def prune(
    table: Annotated[Path, typer.Argument(help="A feature table from `ifcml features`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The pruned table to write (.parquet).")],
    recipe: Annotated[Path | None, typer.Option(help="Feature recipe YAML (its pruning section).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing table at --out.")] = False,
) -> None:
    """Prune (and optionally normalise) a feature table with pycytominer, fitted on ALL its cells.

    For exploring a data set. Evaluations (`ifcml train`, grids) refit pruning on each split's
    training instances instead, so that the held-out instance never chooses the features.
    """
    from ifcml.features.prune import write_pruned  # pycytominer: ~1 s to import

    kept, measured = write_pruned(table, out, load_recipe(recipe), overwrite)
    console.print(
        f"kept {len(kept)} of {measured} features -> {out} (list: {out.with_suffix('.kept.txt')})",
        highlight=False,
    )


@app.command("gate")
def gate_command(
    table: Annotated[
        Path, typer.Argument(help="A cells table (ifcml features), or a CellStore to measure first.")
    ],
    gates: Annotated[
        Path, typer.Option(help="The strategy: GatingML 2.0 (.xml) or FlowJo 10 workspace (.wsp).")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The gated table to write (.parquet).")],
    label_gates: Annotated[
        str | None, typer.Option(help="Gates whose populations become Metadata_label, e.g. G1,S,G2M.")
    ] = None,
    sample: Annotated[
        str | None, typer.Option(help="The workspace sample whose gates apply (.wsp only).")
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="Folder for each gate's plot and example cells, and index.html.")
    ] = None,
    store: Annotated[
        Path | None, typer.Option(help="The CellStore a table was measured from: example cells for --plots.")
    ] = None,
    workers: Workers = CORES,
    overwrite: Annotated[
        bool, typer.Option(help="Replace an existing table at --out (and --plots).")
    ] = False,
) -> None:
    """Apply a gating strategy (through FlowKit): a Metadata_Gate_<gate> column per population,
    counted in that gate and all its ancestors, and labels from chosen populations."""
    from ifcml.gating.run import Gallery, gate_file

    names = [n.strip() for n in label_gates.split(",") if n.strip()] if label_gates else []
    measuring = cell_progress(None, "measure") if is_store(table) else nullcontext()
    with measuring as progress:
        run = gate_file(
            table,
            gates,
            out,
            label_gates=names,
            sample=sample,
            plots=Gallery(plots, store) if plots else None,
            run=Running(workers, overwrite=overwrite, on_cells=progress),
        )
    shown = Table(*run.counts.columns)
    for row in run.counts.itertuples(index=False):
        shown.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
    console.print(shown)
    if run.labelled is not None:
        console.print(
            f"labelled from {', '.join(names)}: {run.labelled.in_none} cells in none of them and "
            f"{run.labelled.in_several} in several got no label",
            highlight=False,
        )
    console.print(f"wrote {out} ({len(run.strategy.populations)} gate columns)", highlight=False)
    if plots is not None:
        console.print(f"gate plots: {plots / 'index.html'}", highlight=False)


@app.command("qc")
def qc_command(
    table: Annotated[
        Path, typer.Argument(help="A cells table (ifcml features), or a CellStore to measure first.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="The GatingML 2.0 strategy to write (.xml).")],
    focus_channel: Annotated[str, typer.Option(help="The channel whose gradient RMS says focus.")] = "BF",
    mads: Annotated[
        float, typer.Option(min=0.5, help="Gate limits: median +/- this many scaled MADs.")
    ] = 3.0,
    workers: Workers = CORES,
    overwrite: Annotated[bool, typer.Option(help="Replace a QC strategy ifcml wrote at --out.")] = False,
) -> None:
    """Write the ready-made quality strategy (not debris, single cells, in focus) with thresholds
    from these cells; apply it with `ifcml gate --gates OUT`, edit it to override."""
    from ifcml.gating.run import qc_file

    measuring = cell_progress(None, "measure") if is_store(table) else nullcontext()
    with measuring as progress:
        thresholds = qc_file(
            table,
            out,
            focus_channel=focus_channel,
            mads=mads,
            run=Running(workers, overwrite=overwrite, on_cells=progress),
        )
    shown = Table("gate", "column", "from", "below")
    for t in thresholds:
        shown.add_row(t.gate, t.column, f"{t.low:.4g}", "-" if t.high is None else f"{t.high:.4g}")
    console.print(shown)
    console.print(f"wrote {out}", highlight=False)


@app.command("fcs")
def fcs_command(
    table: Annotated[Path, typer.Argument(help="A cells table (ifcml features, prune or gate).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The FCS 3.1 file to write.")],
    overwrite: Annotated[bool, typer.Option(help="Replace an FCS file ifcml wrote at --out.")] = False,
) -> None:
    """Write the table's numeric columns as FCS 3.1 ($PnN = column name, the cell id among them),
    for gating in FlowJo or FlowKit; the gates drawn there apply with `ifcml gate`."""
    from ifcml.gating.fcs import write_fcs

    export = write_fcs(table, out, overwrite)
    console.print(
        f"wrote {export.cells} cells x {len(export.parameters)} parameters to {out}", highlight=False
    )


@app.command("train")
def train_command(
    data: Annotated[
        Path,
        typer.Argument(help="A feature table (`ifcml features`) for classical models, a store for networks."),
    ],
    model: Annotated[
        str,
        typer.Option(help="A spec in models/ (naive_bayes, ..., compact_cnn, xgboost_on_cnn) or a path."),
    ],
    store: Annotated[
        Path | None,
        typer.Option(
            help="The store the feature table was measured from (hybrid and stacked models crop it)."
        ),
    ] = None,
    split: Annotated[
        str,
        typer.Option(
            help="leave-one-instance-out, leave-one-group-out:COLUMN, holdout:A,B or stratified-kfold:K."
        ),
    ] = "leave-one-instance-out",
    channels: Annotated[
        str | None, typer.Option(help="Channel set, e.g. BF,DF (default: all measured).")
    ] = None,
    labels: Annotated[
        str | None, typer.Option(help="Only cells with these labels, e.g. leukemic,normal.")
    ] = None,
    max_evals: Annotated[
        int | None, typer.Option(min=1, help="hyperopt trials (default: the spec's).")
    ] = None,
    train_cells: Annotated[
        int | None,
        typer.Option(
            min=1, help="Cut each training set to this many cells per class (a learning curve's point)."
        ),
    ] = None,
    seed: Annotated[int, Seed] = 0,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "ifcml",
    tracking_uri: TrackingUri = None,
    positive: Annotated[
        str | None,
        typer.Option(help="Class whose fraction is the readout (default: leukemic, where it is a label)."),
    ] = None,
    log_trials: Annotated[
        bool, typer.Option("--log-trials", help="Also log each hyperopt trial as a nested MLflow run.")
    ] = False,
) -> None:
    """Evaluate one model over a split (tuned or trained per fold), refit it, and log it to MLflow.

    Shows each held-out unit, its trials or epochs with the current score or loss, and an ETA;
    MLflow holds the design's run from the first step and its charts move as the work goes on.
    """
    from ifcml.experiments.run import TrainOptions, run_model  # mlflow, hyperopt: seconds to import

    with tqdm(desc="train", unit=" step", file=sys.stderr) as bar:
        options = TrainOptions(
            split=split,
            channels=_names(channels),
            labels=_names(labels),
            max_evals=max_evals,
            train_cells=train_cells,
            store=store,
            seed=seed,
            experiment=experiment,
            uri=tracking_uri,
            positive=positive,
            log_trials=log_trials,
        )
        result = run_model(data, model, options, _train_watch(bar))
        bar.update(bar.total - bar.n)  # the final refit is done too
    shown = [
        "balanced_accuracy",
        "balanced_accuracy_ci_low",
        "balanced_accuracy_ci_high",
        "accuracy",
        "instance_accuracy_mean",
        "readout_mae",
        "corrected_readout_mae",
        "readout_interval_coverage",
        "sensitivity_25pct",
        "specificity_25pct",
        "sensitivity_10pct",
        "specificity_10pct",
    ]
    summary = Table("metric", "value")
    for name in shown:
        if name in result.metrics:
            summary.add_row(name, f"{result.metrics[name]:.3f}")
    console.print(summary)
    console.print(f"MLflow run {result.run_id} in {result.tracking_uri}", highlight=False)
    _print_ui(result.tracking_uri, result.experiment_id)


def _train_watch(bar: tqdm):
    """``ifcml train``'s view of its work: one step per held-out unit and one for the final
    refit (the ETA comes from them), the current trial or epoch with its score beside."""
    from ifcml.experiments.run import Watch
    from ifcml.progress import Progress

    def folds(names: list[str]) -> None:
        bar.reset(total=len(names) + 1)

    def fold(name: str) -> None:
        if bar.desc.startswith("held-out") or name == "final":
            bar.update(1)
        bar.set_description("final refit" if name == "final" else f"held-out {name}")

    def trial(number: int, loss: float) -> None:
        bar.set_postfix_str(f"trial {number + 1}, inner balanced accuracy {1 - loss:.3f}")

    def epoch(number: int, logs: dict[str, float]) -> None:
        shown = ", ".join(f"{k} {logs[k]:.4f}" for k in ("loss", "val_loss", "val_accuracy") if k in logs)
        bar.set_postfix_str(f"epoch {number + 1}: {shown}")

    return Watch(folds, fold, Progress(trial, epoch), _warn)


@app.command("grid")
def grid_command(
    spec: Annotated[Path, typer.Argument(help="An experiment spec, e.g. experiments/demo.yaml.")],
    tracking_uri: TrackingUri = None,
    workers: Workers = CORES,
    scheduler: Annotated[
        str | None, typer.Option(help="Run on an existing Dask cluster: tcp://HOST:PORT.")
    ] = None,
) -> None:
    """Run an experiment grid (models x channel sets x held-out units); re-run to resume."""
    from ifcml.experiments.grid import prepare_data, run_grid
    from ifcml.experiments.spec import load_experiment
    from ifcml.experiments.tracking import tracking_uri as default_uri

    experiment = load_experiment(spec)
    check_scheduler(scheduler)
    with cell_progress(0, "data") as update:
        prepare_data(experiment, workers, scheduler, on_cells=update)
    with tqdm(total=0, desc="grid", unit=" tasks", file=sys.stderr) as bar:

        def total(n: int) -> None:
            bar.total = n
            bar.refresh()

        report = run_grid(
            experiment, default_uri(tracking_uri), workers, scheduler, on_task=bar.update, on_total=total
        )
    for message in report.confounds:
        _warn(message)
    elsewhere = f", {report.elsewhere} being run by another ifcml" if report.elsewhere else ""
    console.print(
        f"grid {report.experiment}: {report.done} task(s) run, {report.skipped} already finished, "
        f"{len(report.failed)} failed{elsewhere}; MLflow: {report.tracking_uri}",
        highlight=False,
    )
    for failure in report.failed:
        console.print(f"[red]failed[/red] {failure}", highlight=False)
    _print_ui(report.tracking_uri, report.experiment_id)
    if report.failed:
        raise typer.Exit(1)


@app.command("compare")
def compare_command(
    experiment: Annotated[str, typer.Argument(help="MLflow experiment (the grid spec's name).")],
    out: Annotated[Path | None, typer.Option(help="Report folder (default: compare_<experiment>).")] = None,
    metric: Annotated[
        str, typer.Option(help="Sort the designs in the MLflow UI link by this comparison metric.")
    ] = "balanced_accuracy",
    tracking_uri: TrackingUri = None,
) -> None:
    """The comparison table (models x channel sets) and a self-contained HTML report; prints the
    link to the designs in the MLflow UI, sorted by ``--metric``."""
    from ifcml.experiments import learning_curve
    from ifcml.experiments.compare import write_report
    from ifcml.experiments.mlflow_ui import check_metric
    from ifcml.experiments.tracking import Tracking

    check_metric(metric)  # before anything is written
    tracking = Tracking(tracking_uri, existing=True)
    report, table = write_report(tracking, experiment, out or Path(f"compare_{experiment}"))
    tracking.add_view(experiment, metric)
    uri, experiment_id = tracking.uri, tracking.experiment_id(experiment)
    sizes = learning_curve.has_curve(table)  # a learning curve's designs: say each one's size
    shown = Table(
        "model",
        "channel set",
        *(["cells/class"] if sizes else []),
        "balanced accuracy (95 % CI)",
        "instance acc.",
        "readout err.",
        "corrected err.",
    )
    for _, row in table.iterrows():
        shown.add_row(
            row["model"],
            row["channel set"],
            *([row[learning_curve.SIZE]] if sizes else []),
            f"{row['balanced accuracy']:.3f} ({row['BA CI low']:.3f}-{row['BA CI high']:.3f})",
            f"{row['instance accuracy mean']:.3f}",
            _shown(row["readout error"]),
            _shown(row["corrected readout error"]),
        )
    console.print(shown)
    console.print(f"report: {report.resolve()}", highlight=False)
    _print_ui(uri, experiment_id, metric)


@app.command("export")
def export_command(
    experiment: Annotated[str, typer.Argument(help="MLflow experiment (the grid spec's name).")],
    out: Annotated[Path, typer.Option(help="Folder for the exported MLflow model (must not exist).")],
    metric: Annotated[
        str,
        typer.Option(help="Pick the best design by this metric (errors, losses, times: lowest wins)."),
    ] = "balanced_accuracy",
    model: Annotated[str | None, typer.Option(help="Only designs of this model, e.g. compact_cnn.")] = None,
    register: Annotated[
        str | None, typer.Option(help="Also register it in the MLflow model registry under this name.")
    ] = None,
    alias: Annotated[str, typer.Option(help="Registry alias of the new version.")] = "champion",
    tracking_uri: TrackingUri = None,
) -> None:
    """The best (model, channel set) as an MLflow model that takes raw cell images or a store."""
    from ifcml.deploy.export import export_model
    from ifcml.experiments.tracking import Tracking

    tracking = Tracking(tracking_uri, existing=True)
    exported = export_model(tracking, experiment, metric, out, model=model, register=register, alias=alias)
    _print_exported(exported)


def _print_exported(exported) -> None:
    console.print(
        f"exported {exported.model} | {exported.channel_set} ({exported.metric} {exported.value:.3f}, "
        f"run {exported.run_id}) to {exported.path}",
        highlight=False,
    )
    if exported.registered:
        console.print(f"registered: {exported.registered}", highlight=False)
    if exported.confounded:
        _warn(f"the exported design's {exported.metric} cannot be trusted: {exported.confounded}")


@app.command("predict")
def predict_command(
    model_dir: Annotated[Path, typer.Argument(help="A model folder from `ifcml export`.")],
    sources: Annotated[
        list[Path], typer.Argument(help="CellStores, or sources as `ifcml ingest` reads them.")
    ],
    out: Annotated[Path, typer.Option(help="Folder for cells.csv and samples.csv.")],
    fmt: Annotated[str, typer.Option("--format", help=f"One of {', '.join(FORMATS)}.")] = "auto",
    channels: Annotated[
        str | None, typer.Option(help="Instrument channels and their names, e.g. 3:BF,6:DF.")
    ] = None,
    grid: Annotated[str | None, typer.Option(help="Montage grid ROWSxCOLS, e.g. 20x20.")] = None,
    row_major: Annotated[
        bool, typer.Option("--row-major", help="Montage tiles fill row by row (default: column by column).")
    ] = False,
    instance: Annotated[
        str | None, typer.Option(help="Instance (sample) name; default: each source folder's name.")
    ] = None,
    workers: Workers = CORES,
    min_cells: Annotated[
        int, typer.Option(min=1, help="Classified cells a sample needs for a call (fewer: no call, and why).")
    ] = MIN_CELLS,
) -> None:
    """Classify every cell of new samples and read out each sample's class fractions."""
    from ifcml.deploy.predict import model_card, stores_for, write_predictions

    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: an existing file, not a folder for cells.csv and samples.csv")
    card = model_card(model_dir)
    console.print(f"model: {card.summary}", highlight=False)
    reading = Reading(fmt, parse_channel_map(channels), instance, grid, not row_major)
    with ExitStack() as scratch:
        stores = scratch.enter_context(stores_for(sources, card, reading, out, cell_progress))
        with cell_progress(sum(s.n_cells for s in stores), "predict") as progress:
            samples = write_predictions(model_dir, stores, out, workers, progress, min_cells)
    _print_samples(samples)
    console.print(f"wrote {out / 'cells.csv'} and {out / 'samples.csv'}", highlight=False)


def _print_samples(samples: pd.DataFrame) -> None:
    """The readout, a line per sample: the readout class's fraction (corrected, with its 95 %
    interval, when the model carries its error rates; counted; the reference when known) and the
    calls; every class's fraction when the model has no readout class. samples.csv holds all."""
    counted = [c for c in samples if c.endswith("_fraction")]
    if not counted:
        fractions = [c for c in samples if c.startswith("fraction_")]
        shown = Table("instance", "cells", *(c.removeprefix("fraction_") for c in fractions))
        for _, row in samples.iterrows():
            shown.add_row(str(row["instance"]), str(row["cells"]), *(_shown(row[c]) for c in fractions))
        console.print(shown)
        return
    positive = counted[0].removesuffix("_fraction")
    for _, row in samples.iterrows():
        parts = []
        if f"{positive}_fraction_corrected" in row:
            low, high = row[f"{positive}_fraction_low"], row[f"{positive}_fraction_high"]
            head = f"{_shown(row[f'{positive}_fraction_corrected'])} (95 % {_shown(low)}-{_shown(high)})"
            parts.append(f"counted {_shown(row[f'{positive}_fraction'])}")
            calls = {c.split("_call_")[1].replace("pct", " %"): row[c] for c in samples if "_call_" in c}
        else:  # a model exported before the corrected readout: classify-and-count only
            head = f"{_shown(row[f'{positive}_fraction'])} (counted)"
            call = row.get(f"{positive}_at_or_above_25pct")
            calls = {">= 25 %": {True: "yes", False: "no"}.get(call, call)}
        if f"reference_fraction_{positive}" in row:
            parts.append(f"reference {_shown(row[f'reference_fraction_{positive}'])}")
        verdict = ", ".join(f"{cutoff}: {_shown(call)}" for cutoff, call in calls.items())
        reason = row.get("no_call")
        if isinstance(reason, str) and reason:
            verdict = f"no call: {reason}"
        console.print(
            "; ".join(
                [
                    f"{row['instance']}: {positive} {head}",
                    *parts,
                    _classified(row),
                    verdict,
                ]
            ),  # fmt: skip
            highlight=False,
        )


def _classified(row: pd.Series) -> str:
    if "kept" not in row:
        return f"{row['classified']}/{row['cells']} cells classified"
    removed = row["cells"] - row["kept"]
    return f"{row['classified']}/{row['kept']} kept cells classified ({removed} removed by the gates)"


def _shown(value) -> str:
    if isinstance(value, float):
        return "-" if pd.isna(value) else f"{value:.3f}"
    return "no call" if value is None else str(value)


@app.command("ui")
def ui_command(
    tracking_uri: TrackingUri = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = 5000,
) -> None:
    """The MLflow UI for the configured store, bound to 127.0.0.1 only; prints the link to each
    ifcml experiment's designs (best first, with their metrics)."""
    from ifcml.experiments.mlflow_ui import VIEW_TAG, designs_link
    from ifcml.experiments.tracking import Tracking

    tracking = Tracking(tracking_uri)  # creates a new store safely before the server opens it
    uri = tracking.uri
    base = f"http://127.0.0.1:{port}"
    console.print(f"MLflow UI for {uri} on {base} (Ctrl-C stops it)", highlight=False)
    for experiment in tracking.client.search_experiments():
        if VIEW_TAG in experiment.tags:
            console.print(
                f"{experiment.name}: {designs_link(base, experiment.experiment_id)}", highlight=False
            )
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1"]
    os.execv(sys.executable, [*command, "--port", str(port)])


@app.command("embed")
def embed_command(
    model: Annotated[
        str, typer.Argument(help="An MLflow model (runs:/ID/model, models:/NAME@ALIAS, a folder) or .keras.")
    ],
    store: Annotated[Path, typer.Argument(help="A CellStore from `ifcml ingest`.")],
    out: Annotated[Path, typer.Option(help="Folder for embeddings, plots and projector files.")],
    channels: Annotated[
        str | None, typer.Option(help="Channels in the network's order (only for a bare .keras file).")
    ] = None,
    max_points: Annotated[int, typer.Option(min=10, help="Cells in t-SNE/UMAP and the projector.")] = 5000,
    seed: Annotated[int, Seed] = 0,
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI for runs:/ and models:/ (default: as `ifcml train`)."),
    ] = None,
) -> None:
    """Pooled features of every cell, PCA / t-SNE (/ UMAP) plots and TensorBoard projector files."""
    from ifcml.experiments.tracking import Tracking
    from ifcml.models.embed import embed
    from ifcml.models.inference import load_for_inference

    with tempfile.TemporaryDirectory() as tmp:
        if not Path(model).exists():  # runs:/ and models:/ are found in the tracking store
            model = str(Tracking(tracking_uri, existing=True).download(model, Path(tmp)))
        network = load_for_inference(model, _names(channels))
    opened = CellStore(store)
    with cell_progress(opened.n_cells, "embed") as update:
        result = embed(network, opened, out, max_points=max_points, seed=seed, on_cells=update)
    written = ", ".join(result["written"])
    console.print(f"{result['cells']} cells x {result['dimensions']} dimensions -> {out}: {written}")
    console.print(f"projector: .venv/bin/tensorboard --logdir {out / 'projector'}", highlight=False)


def _print_ui(uri: str, experiment_id: str, metric: str = "balanced_accuracy") -> None:
    """Where to compare the designs in the MLflow UI (and how to start it for a local store)."""
    from ifcml.experiments.mlflow_ui import designs_link, ui_base

    link = designs_link(ui_base(uri), experiment_id, metric)
    console.print(f"compare in the MLflow UI: {link}", highlight=False)
    if not uri.startswith(("http://", "https://")):
        console.print(f"  (start it with: .venv/bin/ifcml ui --tracking-uri {uri})", highlight=False)


def _warn(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]WARNING: {message}[/bold red]", highlight=False)


def _names(text: str | None) -> list[str] | None:
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


cellprofiler_app = typer.Typer(help="Real CellProfiler, in its own environment.", no_args_is_help=True)
app.add_typer(cellprofiler_app, name="cellprofiler")


@cellprofiler_app.command("install")
def cellprofiler_install() -> None:
    """Create CellProfiler 4.2.8.1's environment (reused when already complete)."""
    from ifcml.features.cellprofiler import install

    install(log=lambda line: console.print(line, highlight=False))


def _paper_channels(names: str) -> dict[int, str]:
    wanted = _names(names) or []
    unknown = [n for n in wanted if n not in PAPER_CHANNELS.values()]
    if unknown:
        known = ", ".join(PAPER_CHANNELS.values())
        raise InputError(f"--channels: cannot simulate {', '.join(unknown)}; choose from {known}")
    return {k: v for k, v in PAPER_CHANNELS.items() if v in wanted}


def _read_samples(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str)
    except (OSError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read the samples CSV ({exc})") from exc
    if "instance" not in table.columns:
        raise InputError(f"{path}: expected an 'instance' column (and patient, timepoint)")
    return table


def _show_notice(message, category, filename, lineno, file=None, line=None) -> None:
    """ifcml's notices as one ``notice:`` line; other warnings as Python prints them."""
    if issubclass(category, IfcmlNotice):
        typer.echo(f"notice: {message}", err=True)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, turning user errors (ifcml's, and bad options) into one
    ``error:`` line and exit status 2."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", IfcmlNotice)
            warnings.showwarning = _show_notice
            code = app(args=argv, prog_name="ifcml", standalone_mode=False)
    except IfcmlError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Abort:
        typer.echo("error: interrupted", err=True)
        sys.exit(130)
    except typer.TyperException as exc:  # a bad option or argument (Click's usage errors)
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group without a command: its help was shown
            sys.exit(0)
        context = getattr(exc, "ctx", None)
        where = f"{context.command_path}: " if context is not None else ""
        typer.echo(f"error: {where}{exc.format_message()} (see --help)", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
