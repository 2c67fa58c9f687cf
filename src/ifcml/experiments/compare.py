"""``ifcml compare``: the comparison table and a self-contained HTML report, read from MLflow.

Everything comes back from the tracking server (parent runs' metrics and artifacts, fold runs'
per-instance accuracy), so the report can be made anywhere the experiment is reachable. The
figures follow the paper: per-instance accuracy per channel set, pooled confusion matrices,
predicted vs reference positive-class fraction with the 25 % and 10 % cutoffs, and the
network's embedding where one was logged.
"""

from __future__ import annotations

import base64
import io
import tempfile
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from ifcml.errors import InputError  # noqa: E402
from ifcml.experiments.metrics import CUTOFFS  # noqa: E402

COLUMNS = {
    "metrics.balanced_accuracy": "balanced accuracy",
    "metrics.balanced_accuracy_ci_low": "BA CI low",
    "metrics.balanced_accuracy_ci_high": "BA CI high",
    "metrics.instance_accuracy_mean": "instance accuracy mean",
    "metrics.instance_accuracy_median": "instance accuracy median",
    "metrics.instance_accuracy_ci_low": "instance CI low",
    "metrics.instance_accuracy_ci_high": "instance CI high",
    "metrics.readout_mae": "readout error",
    "metrics.sensitivity_25pct": "sens 25%",
    "metrics.specificity_25pct": "spec 25%",
    "metrics.sensitivity_10pct": "sens 10%",
    "metrics.specificity_10pct": "spec 10%",
    "metrics.train_seconds": "train s",
    "metrics.predict_seconds_per_cell": "predict s/cell",
}


def design_runs(experiment: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(finished (model, channel set) parent runs, all runs of ``experiment``)."""
    runs = mlflow.search_runs(experiment_names=[experiment])
    if runs.empty:
        raise InputError(f"no runs in MLflow experiment {experiment!r} at {mlflow.get_tracking_uri()}")
    top = runs[runs["tags.mlflow.parentRunId"].isna() & (runs["status"] == "FINISHED")]
    if "tags.kind" in top:  # exports (ifcml export --register) are not designs
        top = top[top["tags.kind"].isna()]
    if top.empty:
        raise InputError(f"experiment {experiment!r} has no finished (model, channel set) runs yet")
    return top, runs


def comparison(experiment: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per finished (model, channel set) parent run, one row per held-out fold run)."""
    top, runs = design_runs(experiment)
    table = top[["run_id", "tags.model", "tags.channel_set", "tags.branch", "tags.confounded"]].copy()
    table.columns = ["run_id", "model", "channel set", "branch", "confounded"]
    for column, name in COLUMNS.items():
        table[name] = top[column] if column in top else np.nan
    table = table.sort_values(["channel set", "balanced accuracy"], ascending=[True, False])
    folds = runs[runs["tags.mlflow.parentRunId"].isin(top["run_id"]) & runs["tags.held_out"].notna()]
    folds = folds[["tags.mlflow.parentRunId", "tags.held_out", "metrics.accuracy"]]
    folds.columns = ["run_id", "held_out", "accuracy"]
    return table.reset_index(drop=True), folds.merge(table[["run_id", "model", "channel set"]], on="run_id")


def write_report(experiment: str, out: Path) -> Path:
    """``comparison.csv`` and ``report.html`` (figures inlined) in ``out``; returns the report."""
    table, folds = comparison(experiment)
    out.mkdir(parents=True, exist_ok=True)
    table.drop(columns=["run_id"]).to_csv(out / "comparison.csv", index=False)
    artifacts = _artifacts(table["run_id"])
    figures = {
        "Per-instance accuracy of held-out units, per channel set": _boxplots(folds),
        "Pooled confusion matrices (rows: reference, columns: predicted)": _confusions(table, artifacts),
        "Predicted vs reference fraction per held-out instance": _readout(table, artifacts),
    }
    for _, row in table.iterrows():
        if artifacts[row["run_id"]].get("embedding"):
            title = f"{row['model']} | {row['channel set']}: t-SNE of the final model's pooled features"
            figures[title] = artifacts[row["run_id"]]["embedding"]
    shown = table.drop(columns=["run_id", "confounded"])
    html = TEMPLATE.render(
        experiment=experiment,
        uri=mlflow.get_tracking_uri(),
        table=shown.to_html(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-", border=0),
        confounded=sorted({c for c in table["confounded"].dropna() if c != "no"}),
        figures=figures,
    )
    report = out / "report.html"
    report.write_text(html)
    return report


def _artifacts(run_ids) -> dict[str, dict]:
    client = MlflowClient()
    found = {}
    with tempfile.TemporaryDirectory() as tmp:
        for run in run_ids:
            names = {a.path for a in client.list_artifacts(run)}
            entry = {}
            if "confusion_matrix.csv" in names:
                entry["confusion"] = pd.read_csv(
                    client.download_artifacts(run, "confusion_matrix.csv", tmp), index_col=0
                )
            if "per_instance.csv" in names:
                entry["per_instance"] = pd.read_csv(client.download_artifacts(run, "per_instance.csv", tmp))
            if "embedding_tsne.png" in names:
                entry["embedding"] = _encode(
                    Path(client.download_artifacts(run, "embedding_tsne.png", tmp)).read_bytes()
                )
            found[run] = entry
    return found


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


def _confusions(table: pd.DataFrame, artifacts: dict) -> str:
    rows = [row for _, row in table.iterrows() if "confusion" in artifacts[row["run_id"]]]
    cols = min(4, len(rows))
    figure, axes = plt.subplots(
        -(-len(rows) // cols), cols, figsize=(3.4 * cols, 3.2 * -(-len(rows) // cols)), squeeze=False
    )
    for ax in axes.ravel()[len(rows) :]:
        ax.axis("off")
    for ax, row in zip(axes.ravel(), rows, strict=False):
        counts = artifacts[row["run_id"]]["confusion"]
        shares = counts.div(counts.sum(axis=1).replace(0, 1), axis=0)
        ax.imshow(shares.to_numpy(), vmin=0, vmax=1, cmap="Blues")
        for (i, j), value in np.ndenumerate(counts.to_numpy()):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                    color="white" if shares.iat[i, j] > 0.5 else "black")  # fmt: skip
        ax.set_xticks(range(len(counts.columns)), counts.columns, rotation=30, fontsize=8)
        ax.set_yticks(range(len(counts.index)), counts.index, fontsize=8)
        ax.set_title(f"{row['model']} | {row['channel set']}", fontsize=9)
    return _figure(figure)


def _readout(table: pd.DataFrame, artifacts: dict) -> str:
    sets = sorted(table["channel set"].unique())
    figure, axes = plt.subplots(1, len(sets), figsize=(4.8 * len(sets), 4.5), squeeze=False)
    for ax, name in zip(axes[0], sets, strict=True):
        for _, row in table[table["channel set"] == name].iterrows():
            per_instance = artifacts[row["run_id"]].get("per_instance")
            if per_instance is None:
                continue
            positive = _positive_class(per_instance)
            ax.scatter(
                per_instance[f"reference_fraction_{positive}"],
                per_instance[f"predicted_fraction_{positive}"],
                s=18,
                label=row["model"],
            )
            ax.set_xlabel(f"reference fraction {positive}")
            ax.set_ylabel(f"predicted fraction {positive}")
        for cutoff in CUTOFFS:
            ax.axvline(cutoff, color="grey", lw=0.8, ls="--")
            ax.axhline(cutoff, color="grey", lw=0.8, ls="--")
        ax.plot([0, 1], [0, 1], color="black", lw=0.6)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{name} (dashed: {', '.join(f'{c:.0%}' for c in CUTOFFS)} cutoffs)", fontsize=9)
        ax.legend(fontsize=7)
    return _figure(figure)


def _positive_class(per_instance: pd.DataFrame) -> str:
    """The readout class: 'leukemic' when present, else the first class."""
    classes = [
        c.removeprefix("reference_fraction_") for c in per_instance if c.startswith("reference_fraction_")
    ]
    return "leukemic" if "leukemic" in classes else classes[0]


def _figure(figure) -> str:
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return _encode(buffer.getvalue())


def _encode(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


TEMPLATE = jinja2.Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ifcml: {{ experiment }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; font-size: 0.85rem; display: block; overflow-x: auto; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f3f3f3; }
.warning { background: #fde8e8; border-left: 4px solid #c00; padding: 0.6rem 1rem; }
img { max-width: 100%; }
</style></head><body>
<h1>ifcml comparison: {{ experiment }}</h1>
<p>Read from MLflow at <code>{{ uri }}</code>. Metrics are over held-out units only.</p>
{% for message in confounded %}<p class="warning">{{ message }}</p>{% endfor %}
<h2>Models x channel sets</h2>
{{ table | safe }}
{% for title, image in figures.items() %}<h2>{{ title }}</h2><img alt="{{ title }}" src="{{ image }}">
{% endfor %}
</body></html>
"""
)
