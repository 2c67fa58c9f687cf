"""MLflow at a lab's scale: designs past one page of runs, two grids at once, a tracking server,
the report's missing artifacts, and the paper's grid in a real MLflow UI and browser."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from ifcml.experiments import tracking as tracking_module
from ifcml.experiments.compare import comparison, write_report
from ifcml.experiments.grid import run_grid
from ifcml.experiments.tracking import DESIGN_TAG, TASK_TAG, Tracking
from test_grid import parents, run_grid_until, write_spec

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
IFCML = Path(sys.executable).with_name("ifcml")


def one_design(tmp_path, features, name, **changes):
    return write_spec(tmp_path, features, name, channel_sets={"label_free": ["BF", "DF"]}, **changes)


@pytest.mark.parametrize(
    ("page", "clutter"),
    [(3, 10), pytest.param(tracking_module.SEARCH_PAGE, 1100, marks=pytest.mark.slow)],
    ids=["pages-of-3", "1100-runs"],
)
def test_a_design_past_one_page_of_runs_resumes_without_a_duplicate(
    tmp_path, simulated_features, monkeypatch, page, clutter
):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = one_design(tmp_path, simulated_features, "paged")
    run_grid_until(spec, uri, tasks=5)
    client = MlflowClient(uri)
    (parent,) = parents(uri, "paged")["run_id"]
    (fold, *_) = client.search_runs(
        [client.get_run(parent).info.experiment_id],
        f"tags.mlflow.parentRunId = '{parent}' and attributes.status = 'FINISHED'",
    )
    design = fold.data.tags[DESIGN_TAG]
    for k in range(clutter):  # newer runs carrying the design's tag, as trial runs always did
        trial = client.create_run(
            fold.info.experiment_id,
            tags={DESIGN_TAG: design, "kind": "trial", "mlflow.parentRunId": fold.info.run_id},
            run_name=f"trial {k}",
        )
        client.set_terminated(trial.info.run_id)
    monkeypatch.setattr(tracking_module, "SEARCH_PAGE", page)
    resumed = run_grid(spec, uri)
    assert not resumed.failed and resumed.skipped == 5 and resumed.done == 3 + 1  # 3 folds + the final
    top = parents(uri, "paged")
    assert top["run_id"].tolist() == [parent] and top["status"].tolist() == ["FINISHED"]
    again = run_grid(spec, uri)
    assert again.done == 0 and again.skipped == 8 + 1


def test_two_grids_of_one_spec_at_once_share_every_design(tmp_path, simulated_features):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # new: both create it at once
    spec = write_spec(tmp_path, simulated_features, "twice")
    command = [str(IFCML), "grid", str(tmp_path / "twice.yaml"), "--tracking-uri", uri]
    grids = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outputs = [grid.communicate(timeout=600) for grid in grids]
    for grid, (_, err) in zip(grids, outputs, strict=True):
        assert grid.returncode == 0 and "Traceback" not in err, err[-3000:]
    top = parents(uri, "twice")
    assert sorted(top.index) == ["all", "label_free"] and (top["status"] == "FINISHED").all()
    table, folds = comparison(Tracking(uri), spec.name)
    assert len(table) == 2 and len(folds) == 2 * 8  # every design and every fold once
    finished = mlflow.search_runs(experiment_names=["twice"], filter_string="attributes.status = 'FINISHED'")
    assert finished[f"tags.{TASK_TAG}"].dropna().is_unique


def test_the_report_notes_missing_artifacts_instead_of_failing(tmp_path, simulated_features):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = one_design(tmp_path, simulated_features, "damaged", max_evals=1)
    run_grid(spec, uri)
    for name in ("confusion_matrix.png", "per_instance.csv"):
        (path,) = (tmp_path / "mlartifacts").rglob(name)
        path.unlink()
    report, table = write_report(Tracking(uri), "damaged", tmp_path / "report")
    html = report.read_text()
    assert len(table) == 1 and html.count("data:image/png;base64,") == 1  # the per-unit box plots
    assert "Missing from MLflow" in html
    assert "no confusion_matrix.png" in html and "no per_instance.csv" in html


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(command: list[str], port: int, log: Path) -> subprocess.Popen:
    """Start an MLflow server process (its own process group) and wait until it answers."""
    server = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            assert server.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
    stop(server)
    pytest.fail(f"MLflow server on port {port} did not answer in 120 s: {log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


@pytest.mark.slow
def test_a_grid_on_an_mlflow_server_with_dask_workers_equals_a_local_store(tmp_path, simulated_features):
    from distributed import LocalCluster

    port = free_port()
    server = serve(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "served")],
        port, tmp_path / "server.log",
    )  # fmt: skip
    try:
        local_uri, remote_uri = f"sqlite:///{tmp_path / 'local.db'}", f"http://127.0.0.1:{port}"
        spec = one_design(tmp_path, simulated_features, "lab")
        local = run_grid(spec, local_uri)
        with LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster:
            remote = run_grid(spec, remote_uri, scheduler=cluster.scheduler_address)
            resumed = run_grid(spec, remote_uri, scheduler=cluster.scheduler_address)
        assert local.done == remote.done == 9 and not remote.failed
        assert resumed.done == 0 and resumed.skipped == 9
        expected, got = (
            comparison(Tracking(local_uri), "lab"),
            comparison(Tracking(remote_uri), "lab"),
        )
        assert got[0]["balanced accuracy"].tolist() == pytest.approx(
            expected[0]["balanced accuracy"].tolist()
        )
        assert sorted(got[1]["accuracy"]) == pytest.approx(sorted(expected[1]["accuracy"]))
        fold = MlflowClient(remote_uri).get_run(got[1]["run_id"].iloc[0])
        assert fold.info.artifact_uri.startswith("mlflow-artifacts:")  # through the server, no shared folder
        assert list((tmp_path / "served").rglob("confusion_matrix.csv"))
    finally:
        stop(server)


@pytest.mark.slow
def test_the_papers_grid_shows_every_design_on_the_first_page_of_the_mlflow_ui(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    from paper_scale_store import build

    browser = shutil.which("chromium")
    if browser is None:
        if os.environ.get("IFCML_REQUIRE_BROWSER"):
            pytest.fail("chromium is required here (IFCML_REQUIRE_BROWSER) but not installed")
        pytest.skip("Debian's chromium is not installed (.ci/run installs it)")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    pooled = build(uri)  # 40 designs x 19 held-out samples, 20 trials each
    tracking = Tracking(uri)
    experiment = tracking.experiment_id("doan2020_label_free")
    assert len(tracking.search([experiment], "")) == 40 + 40 * 19  # trials are not runs
    table, folds = comparison(tracking, "doan2020_label_free")
    assert len(table) == 40 and len(folds) == 40 * 19

    port = free_port()
    log = tmp_path / "ui.log"
    server = serve([str(IFCML), "ui", "--tracking-uri", uri, "--port", str(port)], port, log)
    try:
        (link,) = [line.split(": ", 1)[1] for line in log.read_text().splitlines() if "doan2020" in line]
        shot = tmp_path / "designs.png"
        window = ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1800,2200",
                  "--virtual-time-budget=30000"]  # fmt: skip
        dom = subprocess.run(
            [browser, *window, "--dump-dom", link], capture_output=True, text=True, timeout=180
        )
        subprocess.run([browser, *window, f"--screenshot={shot}", link], capture_output=True, timeout=180)
    finally:
        stop(server)
    keep = os.environ.get("IFCML_TEST_ARTIFACTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "mlflow_designs_paper_scale.png")
    page = dom.stdout
    missing = [name for name, value in pooled.items() if f">{name}<" not in page or repr(value) not in page]
    assert not missing, f"not on the first page with their balanced accuracy: {missing}"
    assert "held-out P00" not in page  # folds are not listed among the designs
    assert shot.stat().st_size > 50_000
