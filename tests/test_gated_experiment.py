"""An experiment with gates (the ready-made QC strategy): its designs train on the kept cells
only, and its exported model gates new cells the same way before reading them out."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import yaml

from ifcml.deploy.export import export_model
from ifcml.deploy.predict import write_predictions
from ifcml.experiments.grid import design_of, prepare_data, run_grid
from ifcml.experiments.spec import load_experiment
from ifcml.experiments.tracking import Tracking
from ifcml.features.recipe import Recipe
from ifcml.features.table import read_features
from ifcml.gating.steps import gate_columns, gate_store, measures_gate_columns
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
        assert set(design_of(spec, model, "label_free").table["Metadata_cell_id"]) <= kept

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec = spec.model_copy(update={"models": ["naive_bayes"]})
    report = run_grid(spec, uri)
    assert not report.failed, report.failed
    mlflow.set_tracking_uri(uri)
    design = mlflow.search_runs(experiment_names=["gated"], filter_string="tags.model = 'naive_bayes'")
    design = design[design["tags.mlflow.parentRunId"].isna()].iloc[0]
    assert design["params.gates"] == "features.qc.xml:in_focus"

    exported = export_model(Tracking(uri), "gated", "balanced_accuracy", tmp_path / "model")
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

    # the classical model measured what the gates read along with its features, once per cell;
    # measured apart (as for a network, or a model whose recipe outlines cells otherwise) alike
    gatings = resolve(spec.data.gates, features)
    columns = gate_columns(gatings)
    assert measures_gate_columns(Recipe(), "cp-measure", columns, has_masks=False)
    other = Recipe.model_validate({"segmentation": {"channel": "DF"}})
    assert not measures_gate_columns(other, "cp-measure", columns, has_masks=False)
    assert not measures_gate_columns(Recipe(), "cellprofiler", columns, has_masks=False)
    # a model that outlines from bright field measures what "auto" gates measure on a store
    # without the instrument's masks, not on one with them
    bright_field = Recipe.model_validate({"segmentation": {"source": "bright-field"}})
    assert measures_gate_columns(bright_field, "cp-measure", columns, has_masks=False)
    assert not measures_gate_columns(bright_field, "cp-measure", columns, has_masks=True)
    apart = gate_store(CellStore(store), gatings)
    np.testing.assert_array_equal(apart.to_numpy(), cells[list(apart.columns)].to_numpy())


def test_labels_from_gates_on_stained_channels_replace_the_stores_labels(tmp_path):
    """The paper's ground truth: the shipped panel gates the simulated stains into classes;
    label-free designs (classical and network) train on those labels, measured once beside the
    store with only what the gates read."""
    from ifcml.io.store import write_store
    from ifcml.simulate import SimulatedSource, SimulationSettings

    settings = SimulationSettings(patients=2, timepoints=("day0", "day15"), cells_per_sample=60)
    source = SimulatedSource(settings)
    store = write_store([source], tmp_path / "store", samples=source.samples)
    panel = Path(__file__).resolve().parents[1] / "gates" / "simulated_panel.xml"
    spec_path = tmp_path / "paper.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "name": "paper",
                "data": {
                    "store": str(store.path),
                    "features": str(tmp_path / "features.parquet"),
                    "labels_from": {"strategy": str(panel), "gates": ["leukemic", "normal", "other"]},
                    "gates": [{"strategy": "qc", "keep": "in_focus"}],
                },
                "models": ["naive_bayes", "compact_cnn"],
                "channel_sets": {"label_free": ["BF", "DF"]},
            }
        )
    )
    spec = load_experiment(spec_path)
    prepare_data(spec)
    gating = pd.read_parquet(tmp_path / "store.gating.parquet")
    assert "Cells_Intensity_MeanIntensity_CD45" in gating and "Cells_Quality_GradientRMS_BF" in gating
    assert not any(c.startswith("Cells_Texture") for c in gating)  # only what the gates read
    assert (tmp_path / "store.gating.qc.xml").is_file()
    truth = store.cells.set_index("cell_id")["label"]
    for model in (0, 1):
        design = design_of(spec, model, "label_free")
        labels = design.table.set_index("Metadata_cell_id")["Metadata_label"]
        assert 0.9 < (labels == truth[labels.index]).mean() < 1.0  # gated, so not the simulator's truth
        assert design.params["labels_from"] == "simulated_panel.xml:leukemic,normal,other"
    assert len(design_of(spec, 0, "label_free").table) < store.n_cells
