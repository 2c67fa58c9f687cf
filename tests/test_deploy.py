"""Export of the best design as a model for raw images, and the readout of new samples."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from ifcml.deploy.export import export_model
from ifcml.deploy.predict import write_predictions
from ifcml.errors import IfcmlError
from ifcml.experiments.grid import run_grid
from ifcml.experiments.spec import load_experiment
from ifcml.features.table import CELL, read_features
from ifcml.io.store import CellStore


def grid(tmp_path, name, data, models, channels=("BF", "DF")):
    spec = {
        "name": name,
        "data": {k: str(v) for k, v in data.items()},
        "models": models,
        "channel_sets": {"label_free": list(channels)},
        "max_evals": 2,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = run_grid(load_experiment(path), uri)
    assert not report.failed, report.failed
    mlflow.set_tracking_uri(uri)
    return uri


@pytest.fixture(scope="module")
def classical(tmp_path_factory, simulated_features):
    """A finished grid (naive Bayes, linear SVM) on simulated cells, and its store."""
    tmp = tmp_path_factory.mktemp("export")
    data = {"store": simulated_features.parent / "store", "features": simulated_features}
    uri = grid(tmp, "classical", data, ["naive_bayes", "linear_svm"])
    return tmp, uri, CellStore(data["store"])


def test_the_exported_model_measures_raw_cells_as_the_grid_did(classical):
    tmp, uri, store = classical
    mlflow.set_tracking_uri(uri)
    exported = export_model("classical", "balanced_accuracy", tmp / "best")
    top = mlflow.search_runs(experiment_names=["classical"], filter_string="tags.model != ''")
    top = top[top["tags.mlflow.parentRunId"].isna()]
    assert exported.value == top["metrics.balanced_accuracy"].max()

    model = mlflow.pyfunc.load_model(str(tmp / "best"))
    from_raw = model.predict(pd.DataFrame({"store": [str(store.path)]}))
    # the grid's final model on the feature table `ifcml features` wrote: the same classes
    final = mlflow.sklearn.load_model(f"runs:/{exported.run_id}/model")
    table = read_features(store.path.parent / "features.parquet").set_index(CELL)
    features = mlflow.models.get_model_info(f"runs:/{exported.run_id}/model").metadata["features"]
    classes = model.metadata.metadata["classes"]
    expected = np.asarray(classes)[final.predict(table.loc[from_raw["cell_id"], features])]
    assert len(from_raw) == store.n_cells and (from_raw["predicted"].to_numpy() == expected).all()

    # raw arrays, channels in another order and one more than the model reads: the same answers
    picked = [store.channels.index(c) for c in ("DAPI", "DF", "BF")]
    cells = store.cells.iloc[:40]
    arrays = model.predict(
        {
            "images": store.images[:40][:, picked],
            "masks": store.masks[:40][:, picked],
            "channels": ["DAPI", "DF", "BF"],
            "heights": cells["height"].to_numpy(),
            "widths": cells["width"].to_numpy(),
        }
    )
    assert (arrays["predicted"] == from_raw["predicted"][:40]).all()
    with pytest.raises(IfcmlError, match="model reads channel.s. BF, not among DAPI, DF"):
        model.predict({"images": store.images[:4][:, picked[:2]], "channels": ["DAPI", "DF"]})
    with pytest.raises(IfcmlError, match="outlines cells with the instrument's masks"):
        model.predict({"images": store.images[:4][:, picked], "channels": ["DAPI", "DF", "BF"]})


def test_export_refuses_to_overwrite_and_names_what_it_knows(classical):
    tmp, uri, _ = classical
    mlflow.set_tracking_uri(uri)
    (tmp / "taken").mkdir()
    with pytest.raises(IfcmlError, match="taken: already exists"):
        export_model("classical", "balanced_accuracy", tmp / "taken")
    with pytest.raises(IfcmlError, match="no design of 'classical' has 'balanced_acc'; it has .*readout_mae"):
        export_model("classical", "balanced_acc", tmp / "x")
    with pytest.raises(IfcmlError, match="has no finished 'xgboost'; it has linear_svm, naive_bayes"):
        export_model("classical", "balanced_accuracy", tmp / "x", model="xgboost")
    assert not (tmp / "x").exists()


def test_a_registered_export_loads_by_alias_and_stays_out_of_the_comparison(classical):
    from ifcml.experiments.compare import comparison

    tmp, uri, store = classical
    mlflow.set_tracking_uri(uri)
    exported = export_model(
        "classical", "readout_mae", tmp / "registered", model="naive_bayes", register="marrow", alias="prod"
    )
    assert exported.registered == "models:/marrow@prod" and exported.model == "naive_bayes"
    loaded = mlflow.pyfunc.load_model("models:/marrow@prod")
    assert loaded.metadata.metadata["source_run_id"] == exported.run_id
    table, _ = comparison("classical")
    assert sorted(table["model"]) == ["linear_svm", "naive_bayes"]  # the export run is not a design


def test_the_readout_of_new_samples_per_cell_and_per_sample(classical):
    tmp, uri, store = classical
    mlflow.set_tracking_uri(uri)
    model_dir = tmp / "readout_model"
    export_model("classical", "balanced_accuracy", model_dir, model="naive_bayes")
    samples = write_predictions(model_dir, [store], tmp / "readout")
    cells = pd.read_csv(tmp / "readout" / "cells.csv")
    assert len(cells) == store.n_cells and cells["predicted"].notna().all()
    assert np.allclose(cells.filter(like="probability_").sum(axis=1), 1)
    assert set(samples["instance"]) == set(store.cells["instance"]) and (samples["cells"] == 60).all()
    fractions = samples[["fraction_leukemic", "fraction_normal", "fraction_other"]].sum(axis=1)
    assert np.allclose(fractions, 1)
    assert (samples["leukemic_at_or_above_25pct"] == (samples["leukemic_fraction"] >= 0.25)).all()
    truth = store.cells.groupby("instance")["label"].apply(lambda x: (x == "leukemic").mean())
    assert np.allclose(samples.set_index("instance")["reference_fraction_leukemic"], truth)
    with pytest.raises(IfcmlError, match="samples.csv: already exist"):
        write_predictions(model_dir, [store], tmp / "readout")


def test_an_exported_network_takes_raw_images(tmp_path, deep_store):
    spec = {"spec": "compact_cnn", "settings": {"training": {"max_epochs": 1}}}
    grid(tmp_path, "deep", {"store": deep_store.path}, [spec])
    exported = export_model("deep", "balanced_accuracy", tmp_path / "net")
    parent = mlflow.MlflowClient().list_artifacts(exported.run_id)
    assert "embedding_tsne.png" in {a.path for a in parent}  # the report's embedding figure

    model = mlflow.pyfunc.load_model(str(tmp_path / "net"))
    from_store = model.predict(pd.DataFrame({"store": [str(deep_store.path)]}))
    cells = deep_store.cells.iloc[:64]
    arrays = model.predict(
        {
            "images": deep_store.images[:64],
            "channels": deep_store.channels,
            "heights": cells["height"].to_numpy(),
            "widths": cells["width"].to_numpy(),
            "cell_ids": cells["cell_id"].to_numpy(),
        }
    )
    probabilities = [f"probability_{c}" for c in ("leukemic", "normal", "other")]
    assert np.allclose(arrays[probabilities], from_store[probabilities][:64], atol=1e-5)
    assert len(from_store) == deep_store.n_cells
