"""An experiment with gates (the ready-made QC strategy): its designs train on the kept cells
only, and its exported model gates new cells the same way before reading them out."""

from __future__ import annotations

import shutil

import mlflow
import numpy as np
import pandas as pd
import yaml
from mlflow import MlflowClient

from ifcml.deploy.export import export_model
from ifcml.deploy.predict import write_predictions
from ifcml.experiments.grid import _prepared, prepare_data, run_grid
from ifcml.experiments.spec import load_experiment
from ifcml.features.table import read_features
from ifcml.io.store import CellStore


def test_a_gated_experiment_trains_and_reads_out_the_kept_cells_only(tmp_path, simulated_features):
    features = tmp_path / "features.parquet"
    shutil.copy(simulated_features, features)  # the qc strategy is written beside the table
    store = simulated_features.parent / "store"
    network = {"spec": "compact_cnn", "settings": {"training": {"max_epochs": 1}}}
    spec_path = tmp_path / "gated.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "name": "gated",
                "data": {
                    "store": str(store),
                    "features": str(features),
                    "gates": [{"strategy": "qc", "keep": "in_focus"}],
                },
                "models": ["naive_bayes", network],
                "channel_sets": {"label_free": ["BF", "DF"]},
                "max_evals": 2,
            }
        )
    )
    spec = load_experiment(spec_path)
    prepare_data(spec)
    qc = tmp_path / "features.qc.xml"
    assert "ifcml qc" in qc.read_text()

    table = read_features(features)
    from ifcml.gating.steps import chain_membership, resolve

    chain = chain_membership(table, resolve(spec.data.gates, features), "features")
    kept = set(table.loc[chain.all(axis=1).to_numpy(), "Metadata_cell_id"])
    assert 0 < len(kept) < len(table), "the QC rule should remove some simulated cells"
    for model in (0, 1):  # classical and network designs see the same kept cells
        assert set(_prepared(spec, model, "label_free").table["Metadata_cell_id"]) <= kept

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = spec.model_copy(update={"models": ["naive_bayes"]})
    report = run_grid(spec, uri)
    assert not report.failed, report.failed
    mlflow.set_tracking_uri(uri)
    design = mlflow.search_runs(experiment_names=["gated"], filter_string="tags.model = 'naive_bayes'")
    design = design[design["tags.mlflow.parentRunId"].isna()].iloc[0]
    assert design["params.gates"] == "features.qc.xml:in_focus"

    exported = export_model(MlflowClient(uri), "gated", "balanced_accuracy", tmp_path / "model")
    out = tmp_path / "predictions"
    samples = write_predictions(exported.path, [CellStore(store)], out)
    cells = pd.read_csv(out / "cells.csv")
    assert [c for c in cells if c.startswith("gate_")] == ["gate_cells", "gate_single", "gate_in_focus"]
    in_qc = cells[["gate_cells", "gate_single", "gate_in_focus"]].all(axis=1)
    np.testing.assert_array_equal(cells.loc[in_qc, "cell_id"], sorted(kept))  # the same cells as in training
    removed = samples[["removed_by_cells", "removed_by_single", "removed_by_in_focus"]].sum(axis=1)
    np.testing.assert_array_equal(samples["kept"], samples["cells"] - removed)
    assert samples["kept"].sum() == len(kept) and samples["classified"].le(samples["kept"]).all()
    for instance, part in cells[in_qc].groupby("instance"):
        row = samples.set_index("instance").loc[instance]
        assert row["fraction_leukemic"] == (part["predicted"] == "leukemic").mean()
