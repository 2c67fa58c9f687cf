"""Learning curves: nested, seeded training sets per class; a curve's designs in the grid, the
report's figure and sentences; full-size designs unchanged (their keys, and export's choice)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from ifcml.errors import IfcmlError
from ifcml.experiments import learning_curve
from ifcml.experiments.compare import write_report
from ifcml.experiments.grid import run_grid
from ifcml.experiments.spec import load_experiment
from ifcml.experiments.splits import limit_per_class
from ifcml.experiments.tracking import Tracking


def test_training_sets_are_capped_per_class_nested_and_seeded():
    labels = np.repeat(["a", "b", "c"], [50, 30, 5])
    cells = pd.DataFrame({"Metadata_label": labels})
    rows = np.flatnonzero(np.arange(len(labels)) % 7 != 0)  # a fold's training rows
    small, large = (limit_per_class(cells, rows, n, seed=3, draw="P01") for n in (4, 20))
    assert set(small) <= set(large) <= set(rows)  # nested, and only training rows
    assert pd.Series(labels[small]).value_counts().to_dict() == {"a": 4, "b": 4, "c": 4}
    counts = pd.Series(labels[large]).value_counts().to_dict()
    assert counts == {"a": 20, "b": 20, "c": int((labels[rows] == "c").sum())}  # a rare class keeps all
    assert np.array_equal(small, limit_per_class(cells, rows, 4, seed=3, draw="P01"))  # repeatable
    assert not np.array_equal(small, limit_per_class(cells, rows, 4, seed=3, draw="P02"))  # per fold
    assert np.all(np.diff(large) > 0)


def write_spec(tmp_path, features, name, **changes):
    spec = {
        "name": name,
        "data": {"store": str(tmp_path / "unused.store"), "features": str(features)},
        "models": ["naive_bayes"],
        "channel_sets": {"label_free": ["BF", "DF"]},
        "max_evals": 2,
    } | changes
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_experiment(path)


def test_a_learning_curve_is_validated(tmp_path, simulated_features):
    spec = write_spec(tmp_path, simulated_features, "ok", learning_curve=["all", 40, 10])
    assert spec.train_sizes() == [10, 40, None]  # smallest first, full size last
    assert write_spec(tmp_path, simulated_features, "none").train_sizes() == [None]
    with pytest.raises(IfcmlError, match=r"learning_curve: .*40 given twice"):
        write_spec(tmp_path, simulated_features, "twice", learning_curve=[40, 40])
    with pytest.raises(IfcmlError, match=r"learning_curve\.0"):
        write_spec(tmp_path, simulated_features, "zero", learning_curve=[0])


def test_a_curve_adds_designs_beside_the_finished_full_ones(tmp_path, simulated_features, ifcml):
    from ifcml.deploy.export import best_design

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    full = run_grid(write_spec(tmp_path, simulated_features, "curve"), uri)
    assert full.done == 8 + 1 and not full.failed
    with_curve = write_spec(tmp_path, simulated_features, "curve", learning_curve=[10, 40, "all"])
    report = run_grid(with_curve, uri)
    assert report.skipped == 9 and report.done == 2 * 9 and not report.failed  # the full design is kept
    assert run_grid(with_curve, uri).done == 0  # resumable like any design

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("curve").experiment_id
    folds = client.search_runs([experiment], "tags.held_out != '' and tags.train_cells_per_class = '10'")
    assert len(folds) == 8
    assert {run.data.metrics["train_cells"] for run in folds} == {30.0}  # 10 per class, 3 classes
    assert {run.data.metrics["cells"] for run in folds} == {60.0}  # held-out units never shrink

    page, table = write_report(Tracking(uri), "curve", tmp_path / "report")
    assert sorted(table[learning_curve.SIZE]) == ["10", "40", "all"]
    html = page.read_text()
    assert "Learning curves: held-out balanced accuracy against training cells per class" in html
    assert "label_free: best balanced accuracy per training cells/class: 10: " in html
    assert "label_free: no curves cross within the sizes tried (10 to all cells/class)" in html
    images = 1 + 1 + 1 + 1  # box plots, the full design's confusion matrix, readout, the curves
    assert html.count("data:image/png;base64,") == images
    csv = pd.read_csv(tmp_path / "report" / "comparison.csv")
    assert list(csv.columns[:4]) == ["model", "channel set", "branch", "train cells/class"]
    best = best_design(Tracking(uri), "curve", "balanced_accuracy")
    assert best["tags.train_cells_per_class"] == "all"  # a curve's smaller design is never exported

    code, out, err = ifcml(
        "train", simulated_features, "--model", "naive_bayes", "--channels", "BF,DF",
        "--train-cells", "10", "--experiment", "curve-train", "--tracking-uri", uri,
    )  # fmt: skip
    assert code == 0, err
    trained = client.get_experiment_by_name("curve-train").experiment_id
    (run,) = client.search_runs([trained], "tags.held_out IS NULL")
    assert run.data.params["train_cells_per_class"] == "10" and run.info.run_name.endswith("| 10/class")


def test_crossings_are_said_with_their_intervals():
    def point(model, size, cells, accuracy, half=0.01):
        low, high = accuracy - half, accuracy + half
        return {"model": model, "channel set": "bf", learning_curve.SIZE: size, "cells": cells,
                "balanced accuracy": accuracy, "BA CI low": low, "BA CI high": high}  # fmt: skip

    crossing = pd.DataFrame(
        [
            point("cnn", "100", 100, 0.6),
            point("cnn", "all", 900, 0.9),
            point("xgb", "100", 100, 0.7),
            point("xgb", "all", 900, 0.8),
        ]  # fmt: skip
    )
    said = learning_curve.crossings(crossing)
    best = "bf: best balanced accuracy per training cells/class: 100: xgb (0.700), all: cnn (0.900)."
    assert said[0] == best
    assert said[1] == "bf: cnn overtakes xgb between 100 and all cells/class (intervals apart at all)."
    parallel = crossing.assign(**{"balanced accuracy": [0.6, 0.7, 0.65, 0.75]})
    assert learning_curve.crossings(parallel)[1] == (
        "bf: no curves cross within the sizes tried (100 to all cells/class)."
    )


def test_a_curve_s_network_designs_checkpoint_apart(tmp_path):
    """Designs of one network at several sizes run at once; one finishing deletes its own
    checkpoints only (a shared folder once lost the full design's training mid-run)."""
    from ifcml.experiments.network_design import NetworkDesign
    from ifcml.models.registry import load_model_spec

    spec = load_model_spec("compact_cnn")
    full = NetworkDesign(
        spec=spec,
        table=pd.DataFrame(),
        channels=[],
        source="",
        digest="",
        params={},
        crops=np.zeros((0, 48, 48, 1), np.uint8),
        checkpoint_root=tmp_path,
    )
    folders = [full.at_size(n).checkpoints for n in (50, 200)] + [full.checkpoints]
    assert len(set(folders)) == 3
    assert all(a == b or not b.is_relative_to(a) for a in folders for b in folders)
