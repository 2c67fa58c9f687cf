"""Where a user lands in the MLflow UI: the designs of a grid, best first, with their metrics.

MLflow 3.17's experiment page opens on GenAI pages unless the experiment is tagged as model
training, lists runs newest first (trials and folds of the last designs fill the first page),
and shows no metric column until the user picks one. Its *saved views* fix all three: a view
is an experiment tag ``mlflow.sharedViewState.<id>`` holding the runs page's search and
column state, opened by ``#/experiments/<id>/runs?viewStateShareKey=<id>``. ifcml writes one
view per experiment, "ifcml: designs": top-level runs only (designs, never folds or trials),
sorted by the comparison's metric, with the comparison's metric columns shown; ``ifcml compare
--metric M`` adds a view sorted by M ("ifcml: designs by M").
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from ifcml.errors import InputError

VIEW_ID = "ifcml-designs"
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_TAG = f"{VIEW_TAG_PREFIX}{VIEW_ID}"
DESIGNS_FILTER = "tags.mlflow.parentRunId IS NULL and tags.kind IS NULL"  # no fold, trial or export
SORT_METRIC = "balanced_accuracy"
LOWER_IS_BETTER = ("_mae", "error", "loss", "seconds", "seconds_per_cell")  # metric name endings
# The comparison's metrics, in the order the report and the designs view show them.
DESIGN_METRICS = {
    "balanced_accuracy": "balanced accuracy",
    "balanced_accuracy_ci_low": "BA CI low",
    "balanced_accuracy_ci_high": "BA CI high",
    "instance_accuracy_mean": "instance accuracy mean",
    "instance_accuracy_median": "instance accuracy median",
    "instance_accuracy_ci_low": "instance CI low",
    "instance_accuracy_ci_high": "instance CI high",
    "readout_mae": "readout error",
    "corrected_readout_mae": "corrected readout error",  # adjusted classify-and-count (ifcml.readout)
    "readout_interval_coverage": "interval coverage",  # reference fractions inside the 95 % intervals
    "sensitivity_25pct": "sens 25%",
    "specificity_25pct": "spec 25%",
    "sensitivity_10pct": "sens 10%",
    "specificity_10pct": "spec 10%",
    "train_seconds": "train s",
    "predict_seconds_per_cell": "predict s/cell",
}
SHOWN = ["balanced_accuracy", "balanced_accuracy_ci_low", "balanced_accuracy_ci_high",
         "instance_accuracy_mean", "readout_mae", "corrected_readout_mae", "sensitivity_25pct",
         "specificity_25pct", "train_seconds"]  # fmt: skip
CREATED = 1_767_225_600_000  # a fixed time (ms): the view's tag is the same for every grid


def lower_is_better(metric: str) -> bool:
    """Errors, losses and times: the lowest is the best."""
    return metric.endswith(LOWER_IS_BETTER)


def view_id(metric: str = SORT_METRIC) -> str:
    return VIEW_ID if metric == SORT_METRIC else f"{VIEW_ID}-by-{metric}"


def designs_view(metric: str = SORT_METRIC) -> dict[str, str]:
    """The experiment tag that saves the designs view sorted by ``metric`` (the same for every
    experiment, so a grid that finds it in place writes nothing)."""
    shown = SHOWN if metric in SHOWN else [metric, *SHOWN]
    state = {
        "searchFilter": DESIGNS_FILTER,
        "orderByKey": _metric_key(metric),
        "orderByAsc": lower_is_better(metric),
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": [_metric_key(name) for name in shown],
        "runsHiddenMode": "SHOW_ALL",  # MLflow's default hides all but the first 10 in charts
    }
    envelope = {
        "name": "ifcml: designs" + ("" if metric == SORT_METRIC else f" by {metric}"),
        "createdAt": CREATED,
        "updatedAt": CREATED,
        "state": json.dumps(state),
    }
    return {f"{VIEW_TAG_PREFIX}{view_id(metric)}": json.dumps(envelope)}


def check_metric(metric: str) -> None:
    """Views sort by one of the comparison's metrics (:data:`DESIGN_METRICS`)."""
    if metric not in DESIGN_METRICS:
        raise InputError(
            f"--metric: {metric!r} is not a comparison metric; use one of {', '.join(DESIGN_METRICS)}"
        )


def designs_link(base_url: str, experiment_id: str, metric: str = SORT_METRIC) -> str:
    """The UI address that opens ``experiment_id``'s designs view (sorted by ``metric``) on
    MLflow at ``base_url``."""
    query = urlencode({"viewStateShareKey": view_id(metric), "workflowType": "machine_learning"})
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def ui_base(uri: str, port: int = 5000) -> str:
    """Where the UI of tracking store ``uri`` is served: the server itself for an MLflow server,
    else ``ifcml ui`` on 127.0.0.1."""
    return uri if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{port}"


def _metric_key(name: str) -> str:
    return f"metrics.`{name}`"
