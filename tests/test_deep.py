"""The deep branch: real Keras networks, leak-free training inputs, resumable training, MLflow, embed."""

from __future__ import annotations

import json

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest

from ifcml.errors import IfcmlError
from ifcml.experiments.run import run_model
from ifcml.io.store import CellStore
from ifcml.models import deep, inputs
from ifcml.models.inference import Network, stream_store_batches
from ifcml.models.network_spec import NetworkSpec
from ifcml.models.networks import EMBEDDING, MEANS, augmenter, build_network
from ifcml.models.registry import load_model_spec
from ifcml.preprocess import CropSettings, preprocess

QUICK = {"max_epochs": 12, "batch_size": 64, "learning_rate": 1e-3, "early_stop_patience": 6}


def spec_with(name: str, **training) -> NetworkSpec:
    spec = load_model_spec(name).model_dump()
    return NetworkSpec.model_validate(spec | {"training": spec["training"] | training})


def test_resnet50_is_keras_resnet50_with_our_head():
    ours = build_network(load_model_spec("resnet50"), 3, 3, np.zeros(3))
    reference = keras.applications.ResNet50(weights=None, input_shape=(48, 48, 3), classes=3)
    trainable = sum(int(np.prod(w.shape)) for w in ours.trainable_weights)
    expected = sum(int(np.prod(w.shape)) for w in reference.trainable_weights)
    assert abs(trainable - expected) / expected < 0.01
    convolutions = [
        layer for layer in ours.get_layer("resnet50").layers if isinstance(layer, keras.layers.Conv2D)
    ]
    assert len(convolutions) == 53  # 49 on the main path (+ the classifier = 50 layers) + 4 projections
    assert ours.get_layer(EMBEDDING).output.shape[-1] == 2048
    twelve = build_network(load_model_spec("resnet50"), 12, 3, np.zeros(12))  # any channel count
    assert twelve.input_shape == (None, 48, 48, 12)


def test_network_specs_are_validated():
    assert load_model_spec("compact_cnn").network == "compact_cnn"
    with pytest.raises(Exception, match="crop.size"):
        NetworkSpec.model_validate({"name": "x", "network": "resnet50", "crop": {"size": 16}})
    with pytest.raises(Exception, match="training.augmentation.rotation"):
        NetworkSpec.model_validate(
            {"name": "x", "network": "resnet50", "training": {"augmentation": {"rotation": 90}}}
        )


def test_the_training_loop_learns_a_tiny_batch_by_heart(tmp_path):
    """Random images with random labels: only a working loop (gradients, optimizer) fits them."""
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (40, 48, 48, 2), dtype=np.uint8)
    labels = np.array(["a", "b"])[rng.integers(0, 2, 40)]
    spec = spec_with(
        "compact_cnn",
        max_epochs=60,
        batch_size=32,
        balance="none",
        augmentation={"flip": False, "shift": 0, "rotation_degrees": 0},
        early_stop_patience=100,
    )
    rows = np.arange(40)
    cells = deep.TrainingCells(rows, labels, np.zeros(40))
    trained = deep.train_network(spec, crops, cells, ["a", "b"], 0, tmp_path / "tiny")
    fit = trained.rows
    assert trained.history["loss"][-1] < 0.1 * trained.history["loss"][0]
    predicted = np.asarray(trained.model(crops[fit].astype(np.float32), training=False)).argmax(axis=1)
    assert (predicted == (labels[fit] == "b")).mean() == 1.0


def test_resnet50_trains_a_few_steps(tmp_path):
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (80, 32, 32, 3), dtype=np.uint8)
    labels = np.array(["x", "y"])[rng.integers(0, 2, 80)]
    spec = spec_with("resnet50", max_epochs=1, batch_size=32, balance="none")
    spec = NetworkSpec.model_validate(spec.model_dump() | {"crop": {"size": 32}})
    cells = deep.TrainingCells(np.arange(80), labels, np.zeros(80))
    trained = deep.train_network(spec, crops, cells, ["x", "y"], 0, tmp_path / "r")
    assert len(trained.history["loss"]) == 1 and np.isfinite(trained.history["val_loss"][0])


def test_means_come_from_fit_cells_only_and_only_training_is_augmented(tmp_path):
    rng = np.random.default_rng(2)
    crops = rng.integers(0, 200, (120, 48, 48, 2), dtype=np.uint8)
    labels = np.array(["a", "b", "c"])[np.arange(120) % 3]
    training = np.arange(90)  # cells 90.. are held out
    poisoned = crops.copy()
    poisoned[90:] = 255  # held-out pixels far from everything else
    spec = spec_with("compact_cnn", max_epochs=1, batch_size=32)
    runs = [
        deep.train_network(
            spec,
            c,
            deep.TrainingCells(training, labels[training], np.repeat(["i1", "i2"], 45)),
            ["a", "b", "c"],
            0,
            tmp_path / n,
        )
        for n, c in (("clean", crops), ("poisoned", poisoned))
    ]
    expected = crops[runs[0].rows].mean(axis=(0, 1, 2))
    for run in runs:
        assert set(run.rows) < set(training) and len(run.rows) == 72  # balanced, 80 % of 90
        np.testing.assert_allclose(run.means, expected, rtol=1e-12)
        layer_mean = keras.ops.convert_to_numpy(run.model.get_layer(MEANS).mean).ravel()
        np.testing.assert_allclose(layer_mean, expected, rtol=1e-6)

    rows, codes = np.arange(64), np.zeros(64)
    plain = next(iter(inputs.ordered_dataset(crops, rows, 64, codes)))[0].numpy()
    np.testing.assert_array_equal(plain, crops[:64].astype(np.float32))  # validation/prediction: as is
    shuffled = inputs.training_dataset(crops, rows, codes, 64, 0, augmenter(spec.training.augmentation, 0))
    augmented = next(iter(shuffled))[0].numpy()
    assert augmented.shape == plain.shape and not np.array_equal(
        np.sort(augmented, axis=0), np.sort(plain, axis=0)
    )


class FailingReads:
    """A crop array whose disk 'fails' after some reads: a training killed mid-way."""

    def __init__(self, crops: np.ndarray, reads: int):
        self.crops, self.reads = crops, reads
        self.shape, self.dtype = crops.shape, crops.dtype

    def __getitem__(self, index):
        self.reads -= 1
        if self.reads < 0:
            raise OSError("disk gone")
        return self.crops[index]


def test_an_interrupted_training_resumes_at_its_last_epoch(tmp_path):
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 256, (100, 48, 48, 2), dtype=np.uint8)
    labels = np.array(["a", "b"])[np.arange(100) % 2]
    spec = spec_with("compact_cnn", max_epochs=6, batch_size=40, early_stop_patience=50)
    folder = tmp_path / "resume"
    args = (deep.TrainingCells(np.arange(100), labels, np.zeros(100)), ["a", "b"], 0, folder)
    # each epoch reads 2 fit batches + 1 validation batch (+ the means): fail inside epoch 4
    with pytest.raises(Exception, match="disk gone"):
        deep.train_network(spec, FailingReads(crops, 3 * 3 + 1), *args)
    state = json.loads((folder / deep.STATE).read_text())
    assert 1 <= state["epochs_done"] < 6 and not state["finished"]
    done = state["epochs_done"]
    resumed = deep.train_network(spec, crops, *args)
    assert len(resumed.history["loss"]) == 6
    assert resumed.history["loss"][:done] == state["history"]["loss"]  # the first epochs were kept
    again = deep.train_network(spec, FailingReads(crops, 1), *args)  # finished: no training, one mean read
    assert again.history == resumed.history


def test_crop_cache_holds_the_papers_crops(deep_store):
    store = CellStore(deep_store.path)
    settings = CropSettings()
    cached = inputs.cached_crops(store, ["DF", "BF"], settings)
    images = store.images[:50][:, store.channel_indices(["DF", "BF"])]
    cells = store.cells.iloc[:50]
    expected = preprocess(images, cells["height"], cells["width"], cells["cell_id"], settings)
    np.testing.assert_array_equal(cached[:50], expected.transpose(0, 2, 3, 1))
    assert inputs.cached_crops(store, ["DF", "BF"], settings).filename == cached.filename  # reused


def test_streamed_predictions_are_the_network_on_each_cells_crop(deep_store):
    """Store -> predictions reads and preprocesses batches in parallel, ahead of the network: each
    row must still be its own cell's answer, in store order, the short last batch included."""
    store = CellStore(deep_store.path)
    spec = load_model_spec("compact_cnn")
    channels = ["DF", "BF"]
    network = Network(
        build_network(spec, 2, 3, np.array([90.0, 110.0])), channels, ["a", "b", "c"], spec.crop
    )
    assert store.n_cells % 100
    batches = list(stream_store_batches(network, store, batch_size=100, embeddings=True))
    assert [len(rows) for rows, _, _ in batches] == [100] * (store.n_cells // 100) + [store.n_cells % 100]
    rows = np.concatenate([rows["cell_id"].to_numpy() for rows, _, _ in batches])
    np.testing.assert_array_equal(rows, store.cells["cell_id"].to_numpy())
    crops = inputs.cached_crops(store, channels, spec.crop.settings()).astype(np.float32)
    expected = network.model.predict(crops, batch_size=256, verbose=0)
    np.testing.assert_allclose(np.concatenate([p for _, p, _ in batches]), expected, rtol=1e-4, atol=1e-6)
    pooled = keras.Model(network.model.input, network.model.get_layer(EMBEDDING).output).predict(
        crops, verbose=0
    )
    np.testing.assert_allclose(np.concatenate([e for _, _, e in batches]), pooled, rtol=1e-4, atol=1e-5)


def test_networks_refuse_feature_tables_and_classical_models_refuse_stores(deep_store, simulated_features):
    with pytest.raises(IfcmlError, match="reads a CellStore"):
        run_model(simulated_features, "compact_cnn")
    with pytest.raises(IfcmlError, match="ifcml features"):
        run_model(deep_store.path, "naive_bayes")


@pytest.mark.slow
def test_compact_cnn_leave_one_instance_out_beats_chance_and_is_logged(deep_store, tmp_path, ifcml):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    spec_path = tmp_path / "quick_cnn.yaml"
    spec_path.write_text("name: compact_cnn\nnetwork: compact_cnn\ntraining: " + json.dumps(QUICK) + "\n")
    code, out, err = ifcml(
        "train",
        deep_store.path,
        "--model",
        spec_path,
        "--channels",
        "BF,DF",
        "--tracking-uri",
        uri,
        "--experiment",
        "deep",
    )
    assert code == 0, err
    assert "held-out" in err and "epoch" in err and "val_loss" in err  # what train shows as it goes
    assert "viewStateShareKey=ifcml-designs" in out  # where to compare it in the MLflow UI
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["deep"])
    parent = runs[runs["tags.mlflow.parentRunId"].isna()].iloc[0]
    assert parent["tags.branch"] == "deep" and parent["tags.channel_set"] == "BF+DF"
    assert parent["metrics.balanced_accuracy"] > 0.6  # chance: 0.333
    folds = runs[runs["tags.held_out"].notna()]
    assert len(folds) == 6 and (folds["params.mean_BF"].astype(float) > 0).all()
    client = mlflow.MlflowClient()
    curve = client.get_metric_history(folds.iloc[0].run_id, "epoch_val_loss")
    assert [m.step for m in curve] == list(range(len(curve))) and len(curve) >= 2
    for _, fold in folds.iterrows():  # the held-out accuracy, not the last epoch's on the fit cells
        held_out = pd.read_parquet(
            mlflow.artifacts.download_artifacts(f"runs:/{fold.run_id}/predictions.parquet")
        )
        assert fold["metrics.accuracy"] == pytest.approx((held_out["label"] == held_out["predicted"]).mean())
    artifacts = {a.path for a in client.list_artifacts(parent.run_id)}
    assert {"confusion_matrix.png", "per_instance.csv", "predictions.parquet", "spec.yaml"} <= artifacts
    model = mlflow.keras.load_model(f"runs:/{parent.run_id}/model", load_model_kwargs={"safe_mode": True})
    assert model.get_layer(EMBEDDING).output.shape[-1] == 128

    out_dir = tmp_path / "embed"
    code, out, err = ifcml(
        "embed", f"runs:/{parent.run_id}/model", deep_store.path, "--out", out_dir, "--tracking-uri", uri
    )
    assert code == 0, err
    vectors = np.load(out_dir / "embeddings.npy")
    assert vectors.shape == (720, 128) and np.isfinite(vectors).all()
    for name in ("pca.png", "tsne.png", "cells.csv", "projector/sprite.png", "projector/tensors.tsv"):
        assert (out_dir / name).is_file(), name
    config = (out_dir / "projector" / "projector_config.pbtxt").read_text()
    assert 'metadata_path: "metadata.tsv"' in config and "single_image_dim: 48" in config
