"""``ifcml compare``: the comparison table and a self-contained HTML report, read from MLflow.

Everything comes back from the tracking server (parent runs' metrics and artifacts, fold runs'
per-instance accuracy), so the report can be made anywhere the experiment is reachable. Designs
and folds are read by filters that name exactly them, once, page after page: time and memory
grow with designs and folds, never with trials. The figures follow the paper: per-instance
accuracy per channel set, pooled confusion matrices, predicted vs reference positive-class
fraction with the 25 % and 10 % cutoffs, and the network's embedding where one was logged; a
grid with a learning curve adds balanced accuracy against training cells per class (the other
figures show the full-size designs). An artifact that is missing is a note in the report, not
a failure.
"""

from __future__ import annotations

import base64
import io
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.entities import Run  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from ifcml.errors import InputError  # noqa: E402
from ifcml.experiments import learning_curve  # noqa: E402
from ifcml.experiments.mlflow_ui import DESIGN_METRICS, DESIGNS_FILTER, designs_link, ui_base  # noqa: E402
from ifcml.experiments.run import TRAIN_SIZE_TAG  # noqa: E402
from ifcml.experiments.tracking import Tracking  # noqa: E402
from ifcml.outputs import check_replaceable, replace_atomically  # noqa: E402
from ifcml.readout import CUTOFFS, DEFAULT_POSITIVE  # noqa: E402

HIDDEN = ["run_id", "artifact_uri", "n classes", "positive"]  # the report's own columns, not shown


def design_runs(tracking: Tracking, experiment: str) -> pd.DataFrame:
    """One row per finished design (top-level run, exports excluded) of ``experiment``, in
    ``mlflow.search_runs``' column names (``metrics.*``, ``params.*``, ``tags.*``)."""
    experiment_id = tracking.experiment_id(experiment)
    runs = tracking.search([experiment_id], f"{DESIGNS_FILTER} and attributes.status = 'FINISHED'")
    if not runs:
        raise InputError(f"experiment {experiment!r} has no finished (model, channel set) runs yet")
    return pd.DataFrame([_flat(run) for run in runs])


def fold_runs(tracking: Tracking, designs: pd.DataFrame) -> pd.DataFrame:
    """Held-out unit, accuracy, training cells and design run id of every finished fold under
    ``designs`` (one or more, from :func:`design_runs`)."""
    experiment = designs["experiment_id"].iloc[0]
    runs = tracking.search([experiment], "tags.held_out IS NOT NULL and attributes.status = 'FINISHED'")
    wanted = set(designs["run_id"])
    rows = [
        {
            "run_id": parent,
            "held_out": run.data.tags["held_out"],
            "accuracy": run.data.metrics.get("accuracy"),
            "train_cells": run.data.metrics.get("train_cells", np.nan),  # NaN: a run older than curves
        }
        for run in runs
        if (parent := run.data.tags.get("mlflow.parentRunId")) in wanted
    ]
    return pd.DataFrame(rows, columns=["run_id", "held_out", "accuracy", "train_cells"])


def comparison(tracking: Tracking, experiment: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per finished design's parent run, one row per held-out fold run). Designs
    trained on every cell come first, best first per channel set; a learning curve's smaller
    designs follow, per model from the smallest."""
    top = design_runs(tracking, experiment)
    table = pd.DataFrame({"run_id": top["run_id"], "artifact_uri": top["artifact_uri"]})
    for tag, name in {"model": "model", "channel_set": "channel set", "branch": "branch"}.items():
        table[name] = top.get(f"tags.{tag}")
    table[learning_curve.SIZE] = _column(top, f"tags.{TRAIN_SIZE_TAG}", "all")  # "all" before curves
    table["n classes"] = pd.to_numeric(_column(top, "params.n_classes", np.nan))
    table["positive"] = _column(top, "params.positive", DEFAULT_POSITIVE)
    table["confounded"] = top.get("tags.confounded")
    for metric, name in DESIGN_METRICS.items():
        table[name] = top.get(f"metrics.{metric}", np.nan)
    size = table[learning_curve.SIZE]
    full = table[size == "all"].sort_values(["channel set", "balanced accuracy"], ascending=[True, False])
    points = table[size != "all"].assign(cap=pd.to_numeric(size[size != "all"]))
    table = pd.concat([full, points.sort_values(["channel set", "model", "cap"]).drop(columns="cap")])
    folds = fold_runs(tracking, top).merge(table[["run_id", "model", "channel set"]], on="run_id")
    return table.reset_index(drop=True), folds


def _column(runs: pd.DataFrame, name: str, default) -> pd.Series:
    """A column of ``runs`` with ``default`` where a run lacks it (runs of an older ifcml)."""
    return runs[name].fillna(default) if name in runs else pd.Series(default, index=runs.index)


def write_report(tracking: Tracking, experiment: str, out: Path) -> tuple[Path, pd.DataFrame]:
    """``comparison.csv`` and ``report.html`` (figures inlined) in ``out``; returns the report
    and the comparison table.

    The report is a view of the tracking store, so an earlier ifcml report in ``out`` is
    refreshed; any other existing ``out`` is refused. Each file is replaced whole or not at all.
    """
    check_replaceable(out, is_report(out), "an ifcml report folder")
    everything, all_folds = comparison(tracking, experiment)
    out.mkdir(parents=True, exist_ok=True)
    replace_atomically(
        out / "comparison.csv", lambda tmp: everything.drop(columns=HIDDEN).to_csv(tmp, index=False)
    )
    table = everything[everything[learning_curve.SIZE] == "all"]  # a curve's smaller designs: its figure only
    folds = all_folds[all_folds["run_id"].isin(table["run_id"])]
    artifacts, notes = _artifacts(tracking, table)
    figures = {"Per-instance accuracy of held-out units, per channel set": _boxplots(folds)}
    curve_notes = []
    if learning_curve.has_curve(everything):
        points = learning_curve.curves(everything, all_folds)
        figures["Learning curves: held-out balanced accuracy against training cells per class"] = _figure(
            learning_curve.figure(points)
        )
        curve_notes = learning_curve.crossings(points)
    confusions = [  # each design's own figure, as its run logged it: nothing redrawn
        (f"{row['model']} | {row['channel set']}", artifacts[row["run_id"]]["confusion"])
        for _, row in table.iterrows()
        if "confusion" in artifacts[row["run_id"]]
    ]
    if any("per_instance" in found for found in artifacts.values()):
        figures["Predicted vs reference fraction per held-out instance"] = _readout(table, artifacts)
    for _, row in table.iterrows():
        if artifacts[row["run_id"]].get("embedding"):
            title = f"{row['model']} | {row['channel set']}: t-SNE of the final model's pooled features"
            figures[title] = artifacts[row["run_id"]]["embedding"]
    shown = everything.drop(columns=[*HIDDEN, "confounded"])
    experiment_id = tracking.experiment_id(experiment)
    html = jinja2.Template(TEMPLATE.read_text(), autoescape=True).render(
        experiment=experiment,
        uri=tracking.uri,
        link=designs_link(ui_base(tracking.uri), experiment_id),
        table=shown.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-", border=0),
        confounded=sorted({c for c in everything["confounded"].dropna() if c != "no"}),
        notes=notes,
        curve_notes=curve_notes,
        confusions=confusions,
        figures=figures,
    )
    report = out / REPORT
    replace_atomically(report, lambda tmp: tmp.write_text(html))
    return report, everything


def is_report(folder: Path) -> bool:
    """A folder holding an ifcml comparison report (and nothing else of note)."""
    page = folder / REPORT
    return folder.is_dir() and page.is_file() and MARK in page.read_text(errors="replace")[:500]


def _flat(run: Run) -> dict:
    """A run as one row with ``mlflow.search_runs``' column names."""
    info, data = run.info, run.data
    return {
        "run_id": info.run_id,
        "experiment_id": info.experiment_id,
        "artifact_uri": info.artifact_uri,
        "status": info.status,
        "start_time": info.start_time,
        **{f"metrics.{k}": v for k, v in data.metrics.items()},
        **{f"params.{k}": v for k, v in data.params.items()},
        **{f"tags.{k}": v for k, v in data.tags.items()},
    }


ARTIFACTS = {  # what the report reads from each design's run
    "confusion": "confusion_matrix.png",
    "per_instance": "per_instance.csv",
    "embedding": "embedding_tsne.png",
}


def _artifacts(tracking: Tracking, table: pd.DataFrame) -> tuple[dict[str, dict], list[str]]:
    """Each design's report artifacts, fetched in parallel straight from the runs' artifact
    locations, and a note for each one that should be there and is not (the embedding belongs
    to networks only)."""
    found: dict[str, dict] = {run: {} for run in table["run_id"]}
    notes = []
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(8) as pool:
        fetches = {
            (row["run_id"], key): pool.submit(
                _fetch, tracking, f"{row['artifact_uri']}/{name}", Path(tmp) / row["run_id"]
            )
            for _, row in table.iterrows()
            for key, name in ARTIFACTS.items()
        }
        for (run, key), fetch in fetches.items():
            path = fetch.result()
            if path is None:
                if key != "embedding":
                    row = table.set_index("run_id").loc[run]
                    notes.append(f"{row['model']} | {row['channel set']} (run {run}): no {ARTIFACTS[key]}")
            elif path.suffix == ".png":
                found[run][key] = _encode(path.read_bytes())
            else:
                found[run][key] = pd.read_csv(path)
    return found, notes


def _fetch(tracking: Tracking, uri: str, folder: Path) -> Path | None:
    """The artifact at ``uri`` downloaded into ``folder``; None when it does not exist."""
    try:
        return tracking.download(uri, folder)
    except (MlflowException, OSError):
        return None


def _boxplots(folds: pd.DataFrame) -> str:
    sets = sorted(folds["channel set"].unique())
    figure, axes = plt.subplots(1, len(sets), figsize=(4.5 * len(sets), 4), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], sets, strict=True):
        part = folds[folds["channel set"] == name]
        models = sorted(part["model"].unique())
        ax.boxplot([part[part["model"] == m]["accuracy"] for m in models], tick_labels=models)
        ax.set_title(name)
        ax.tick_params(axis="x", rotation=30)
        ax.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("accuracy per held-out unit")
    return _figure(figure)


def _readout(table: pd.DataFrame, artifacts: dict) -> str:
    """Per held-out instance, predicted against reference fraction of the readout class: counted
    (top row) and, where the design has it, corrected for its errors with the 95 % interval."""
    sets = sorted(table["channel set"].unique())
    figure, axes = plt.subplots(2, len(sets), figsize=(4.8 * len(sets), 9), squeeze=False)
    for column, name in enumerate(sets):
        counted, corrected = axes[0, column], axes[1, column]
        for _, row in table[table["channel set"] == name].iterrows():
            per_instance = artifacts[row["run_id"]].get("per_instance")
            if per_instance is None:
                continue
            positive = row["positive"]
            if f"reference_fraction_{positive}" not in per_instance:
                continue  # the readout class is not a label of this design
            reference = per_instance[f"reference_fraction_{positive}"]
            counted.scatter(
                reference, per_instance[f"predicted_fraction_{positive}"], s=18, label=row["model"]
            )
            if f"corrected_fraction_{positive}" in per_instance:
                middle = per_instance[f"corrected_fraction_{positive}"].to_numpy(float)
                spread = [middle - per_instance[f"corrected_low_{positive}"].to_numpy(float),
                          per_instance[f"corrected_high_{positive}"].to_numpy(float) - middle]  # fmt: skip
                corrected.errorbar(
                    reference.to_numpy(float), middle, yerr=spread, fmt="o", ms=4, lw=0.8, label=row["model"]
                )
            for ax, what in ((counted, "classify-and-count"), (corrected, "corrected, 95 % interval")):
                ax.set_xlabel(f"reference fraction {positive}")
                ax.set_ylabel(f"predicted fraction {positive} ({what})")
        for ax in (counted, corrected):
            for cutoff in CUTOFFS:
                ax.axvline(cutoff, color="grey", lw=0.8, ls="--")
                ax.axhline(cutoff, color="grey", lw=0.8, ls="--")
            ax.plot([0, 1], [0, 1], color="black", lw=0.6)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_title(f"{name} (dashed: {', '.join(f'{c:.0%}' for c in CUTOFFS)} cutoffs)", fontsize=9)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7)
    return _figure(figure)


def _figure(figure) -> str:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return _encode(buffer.getvalue())


def _encode(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


REPORT = "report.html"
MARK = "<title>ifcml: "  # the report's title, as every ifcml report so far has written it
TEMPLATE = Path(__file__).with_name("report.html.j2")  # the page; the view code is above
