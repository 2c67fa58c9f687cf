"""Where a user lands in the MLflow UI: the designs of a grid, best first, with their metrics.

MLflow 3.17's experiment page opens on GenAI pages unless the experiment is tagged as model
training, lists runs newest first (trials and folds of the last designs fill the first page),
and shows no metric column until the user picks one. Its *saved views* fix all three: a view
is an experiment tag ``mlflow.sharedViewState.<id>`` holding the runs page's search and
column state, opened by ``#/experiments/<id>/runs?viewStateShareKey=<id>``. ifcml writes one
view per experiment, "ifcml: designs": top-level runs only (designs, never folds or trials),
sorted by the comparison's metric, with the comparison's metric columns shown.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

VIEW_ID = "ifcml-designs"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_ID}"
DESIGNS_FILTER = "tags.mlflow.parentRunId IS NULL and tags.kind IS NULL"  # no fold, trial or export
SORT_METRIC = "balanced_accuracy"
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
    "sensitivity_25pct": "sens 25%",
    "specificity_25pct": "spec 25%",
    "sensitivity_10pct": "sens 10%",
    "specificity_10pct": "spec 10%",
    "train_seconds": "train s",
    "predict_seconds_per_cell": "predict s/cell",
}
SHOWN = ["balanced_accuracy", "balanced_accuracy_ci_low", "balanced_accuracy_ci_high",
         "instance_accuracy_mean", "readout_mae", "sensitivity_25pct", "specificity_25pct",
         "train_seconds"]  # fmt: skip
CREATED = 1_767_225_600_000  # a fixed time (ms): the view's tag is the same for every grid


def designs_view() -> dict[str, str]:
    """The experiment tag that saves the designs view (the same for every experiment, so a
    grid that finds it in place writes nothing)."""
    state = {
        "searchFilter": DESIGNS_FILTER,
        "orderByKey": _metric_key(SORT_METRIC),
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        "selectedColumns": [_metric_key(name) for name in SHOWN],
        "runsHiddenMode": "SHOW_ALL",  # MLflow's default hides all but the first 10 in charts
    }
    envelope = {
        "name": "ifcml: designs",
        "createdAt": CREATED,
        "updatedAt": CREATED,
        "state": json.dumps(state),
    }
    return {VIEW_TAG: json.dumps(envelope)}


def designs_link(base_url: str, experiment_id: str) -> str:
    """The UI address that opens ``experiment_id``'s designs view on MLflow at ``base_url``."""
    query = urlencode({"viewStateShareKey": VIEW_ID, "workflowType": "machine_learning"})
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{query}"


def ui_base(uri: str, port: int = 5000) -> str:
    """Where the UI of tracking store ``uri`` is served: the server itself for an MLflow server,
    else ``ifcml ui`` on 127.0.0.1."""
    return uri if uri.startswith(("http://", "https://")) else f"http://127.0.0.1:{port}"


def _metric_key(name: str) -> str:
    return f"metrics.`{name}`"
