"""Experiment grids: spec validation, resume after a kill, failures recorded, Dask = local."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ifcml.errors import IfcmlError
from ifcml.experiments.grid import DESIGN_TAG, TASK_TAG, Task, run_grid, run_task
from ifcml.experiments.spec import load_experiment
from ifcml.experiments.tracking import Tracking


def write_spec(tmp_path, features, name, **changes):
    spec = {
        "name": name,
        "data": {"store": str(tmp_path / "unused.store"), "features": str(features)},
        "models": ["naive_bayes"],
        "channel_sets": {"label_free": ["BF", "DF"], "all": ["BF", "DF", "DAPI"]},
        "split": "leave-one-instance-out",
        "max_evals": 2,
    } | changes
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_experiment(path)


def parents(uri, experiment):
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[experiment])
    top = runs[runs["tags.mlflow.parentRunId"].isna()]
    return top.set_index("tags.channel_set").sort_index()


def test_experiment_specs_name_the_bad_key(tmp_path, simulated_features):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "data": {"stroe": "s"}, "models": ["naive_bayes"]}))
    with pytest.raises(IfcmlError, match=r"bad.yaml: data.store: Field required"):
        load_experiment(path)
    with pytest.raises(IfcmlError, match=r"models.0 \(linear_svm\) settings: .*max_evalz"):
        write_spec(
            tmp_path, simulated_features, "y", models=[{"spec": "linear_svm", "settings": {"max_evalz": 1}}]
        )
    for shipped in Path("experiments").glob("*.yaml"):
        assert load_experiment(shipped).models


def test_a_killed_grid_resumes_without_repeating_finished_tasks(tmp_path, simulated_features):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    whole = write_spec(tmp_path, simulated_features, "whole")
    report = run_grid(whole, uri)
    assert report.done == 2 * (8 + 1) and not report.failed and report.skipped == 0

    killed = write_spec(tmp_path, simulated_features, "killed")
    first = run_grid_until(killed, uri, tasks=5)  # what a grid killed after 5 tasks leaves behind
    resumed = run_grid(killed, uri)
    assert resumed.skipped == first and resumed.done == 2 * 9 - first
    expected, got = parents(uri, "whole"), parents(uri, "killed")
    assert (got["status"] == "FINISHED").all()
    for column in ("metrics.balanced_accuracy", "metrics.readout_mae", "metrics.instance_accuracy_mean"):
        assert got[column].tolist() == pytest.approx(expected[column].tolist(), abs=1e-12), column
    folds = mlflow.search_runs(experiment_names=["killed"], filter_string="tags.held_out != ''")
    assert len(folds) == 2 * 8 and folds[f"tags.{TASK_TAG}"].is_unique  # nothing ran twice
    assert run_grid(killed, uri).done == 0  # all finished: nothing to do


def run_grid_until(spec, uri, tasks: int) -> int:
    """Run the first ``tasks`` fold tasks of a fresh grid as the grid would, then 'die' with one
    more task half-way (its run left RUNNING)."""
    from ifcml.experiments import grid

    mlflow.set_tracking_uri(uri)
    experiment = mlflow.set_experiment(spec.name).experiment_id
    design = grid.design_of(spec, 0, "label_free")
    key = grid._key(spec, design, "label_free")
    parent = grid._open(Tracking(uri), spec, design, "label_free", [], key)
    folds = design.folds(spec.split, spec.seed)
    for fold in folds[:tasks]:
        assert run_task(Task(spec, 0, "label_free", fold.name, f"{key}/{fold.name}", parent, uri)) is None
    MlflowClient().create_run(
        experiment, tags={"mlflow.parentRunId": parent, TASK_TAG: f"{key}/{folds[tasks].name}"}
    )  # the task that was running when the grid was killed
    return tasks


def test_a_failing_task_is_recorded_and_the_others_go_on(tmp_path, simulated_features):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(
        tmp_path,
        simulated_features,
        "failing",
        models=[
            "naive_bayes",
            {"spec": "naive_bayes", "settings": {"name": "broken_nb", "fixed": {"priors": [0.5, 0.5, 0.5]}}},
        ],
        channel_sets={"label_free": ["BF", "DF"]},
    )
    report = run_grid(spec, uri)
    assert len(report.failed) == 8 and all("priors" in f for f in report.failed)
    top = parents(uri, "failing").set_index("tags.model")
    assert top.loc["naive_bayes", "status"] == "FINISHED"
    assert top.loc["broken_nb", "status"] == "FAILED" and "priors" in top.loc["broken_nb", "tags.ifcml.error"]
    runs = mlflow.search_runs(experiment_names=["failing"])
    folds = runs[runs["tags.mlflow.parentRunId"] == top.loc["broken_nb", "run_id"]]
    assert len(folds) == 8 and (folds["status"] == "FAILED").all()  # each held-out unit says why
    assert folds["tags.ifcml.error"].str.contains("priors").all()
    client = MlflowClient()
    trace = client.download_artifacts(folds["run_id"].iloc[0], "error.txt", str(tmp_path))
    assert "Traceback" in Path(trace).read_text()


@pytest.mark.slow
def test_a_grid_on_a_dask_cluster_equals_the_local_runner(tmp_path, simulated_features):
    from distributed import LocalCluster

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    local = run_grid(write_spec(tmp_path, simulated_features, "local"), uri, workers=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        dask = run_grid(
            write_spec(tmp_path, simulated_features, "dask"), uri, scheduler=cluster.scheduler_address
        )
    assert local.done == dask.done == 18 and not local.failed and not dask.failed
    a, b = parents(uri, "local"), parents(uri, "dask")
    assert b["metrics.balanced_accuracy"].tolist() == pytest.approx(a["metrics.balanced_accuracy"].tolist())
    assert set(b[f"tags.{DESIGN_TAG}"]) == set(a[f"tags.{DESIGN_TAG}"])  # same deterministic keys
    assert (b["status"] == "FINISHED").all()


def test_the_report_reads_mlflow_and_renders_in_a_headless_browser(tmp_path, simulated_features, ifcml):
    import os
    import shutil
    import subprocess

    from ifcml.experiments.compare import comparison, write_report

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = write_spec(tmp_path, simulated_features, "report", models=["naive_bayes", "linear_svm"])
    run_grid(spec, uri)
    table, folds = comparison(Tracking(uri), "report")
    assert sorted(table["model"]) == ["linear_svm", "linear_svm", "naive_bayes", "naive_bayes"]
    assert len(folds) == 4 * 8 and folds["accuracy"].between(0, 1).all()
    assert table["balanced accuracy"].between(table["BA CI low"], table["BA CI high"]).all()
    report, _ = write_report(Tracking(uri), "report", tmp_path / "out")
    html = report.read_text()
    images = 1 + len(table) + 1  # accuracy box plots, each design's confusion matrix, the readout
    assert html.count("data:image/png;base64,") == images and 'src="http' not in html  # self-contained
    assert "viewStateShareKey=ifcml-designs" in html  # links to the designs in the MLflow UI
    code, out, _ = ifcml(
        "compare", "report", "--tracking-uri", uri, "--out", tmp_path / "c", "--metric", "readout_mae"
    )
    assert code == 0 and "viewStateShareKey=ifcml-designs-by-readout_mae" in out
    tags = MlflowClient(uri).get_experiment_by_name("report").tags
    state = json.loads(json.loads(tags["mlflow.sharedViewState.ifcml-designs-by-readout_mae"])["state"])
    assert state["orderByKey"] == "metrics.`readout_mae`" and state["orderByAsc"]  # lowest error first
    code, _, err = ifcml(
        "compare", "report", "--tracking-uri", uri, "--out", tmp_path / "d", "--metric", "auc"
    )
    assert code == 2 and "error: --metric: 'auc' is not a comparison metric" in err
    assert not (tmp_path / "d").exists()
    browser = shutil.which("chromium")
    if browser is None:
        if os.environ.get("IFCML_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (IFCML_REQUIRE_BROWSER) but not installed")
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    shot = tmp_path / "report.png"
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--window-size=1280,2400", f"--screenshot={shot}", report.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert shot.stat().st_size > 20_000  # a rendered page with figures, not a blank one
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console


def test_data_preparation_makes_only_what_is_missing(tmp_path, simulated_features):
    from ifcml.experiments.grid import prepare_data

    spec = write_spec(tmp_path, simulated_features, "prep")
    prepare_data(spec)  # classical only, features exist: the (absent) store is not needed
    networks = write_spec(tmp_path, simulated_features, "prep2", models=["compact_cnn"])
    with pytest.raises(
        IfcmlError, match="unused.store: no such store, and the experiment has no data.ingest"
    ):
        prepare_data(networks)
