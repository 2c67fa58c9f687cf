"""Export of the best design as a model for raw images, and the readout of new samples."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from ifcml.cells import CELL
from ifcml.deploy.export import export_model
from ifcml.deploy.predict import model_card, sample_readout, write_predictions
from ifcml.errors import IfcmlError
from ifcml.experiments.grid import run_grid
from ifcml.experiments.spec import load_experiment
from ifcml.experiments.tracking import Tracking
from ifcml.features.table import read_features
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
    exported = export_model(Tracking(uri), "classical", "balanced_accuracy", tmp / "best")
    top = mlflow.search_runs(experiment_names=["classical"], filter_string="tags.model != ''")
    top = top[top["tags.mlflow.parentRunId"].isna()]
    assert exported.value == top["metrics.balanced_accuracy"].max() and exported.confounded is None

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
        export_model(Tracking(uri), "classical", "balanced_accuracy", tmp / "taken")
    with pytest.raises(IfcmlError, match="no design of 'classical' has 'balanced_acc'; it has .*readout_mae"):
        export_model(Tracking(uri), "classical", "balanced_acc", tmp / "x")
    with pytest.raises(IfcmlError, match="has no finished 'xgboost'; it has linear_svm, naive_bayes"):
        export_model(Tracking(uri), "classical", "balanced_accuracy", tmp / "x", model="xgboost")
    assert not (tmp / "x").exists()


def test_a_registered_export_loads_by_alias_and_stays_out_of_the_comparison(classical):
    from ifcml.experiments.compare import comparison

    tmp, uri, store = classical
    mlflow.set_tracking_uri(uri)
    exported = export_model(
        Tracking(uri),
        "classical",
        "readout_mae",
        tmp / "registered",
        model="naive_bayes",
        register="marrow",
        alias="prod",
    )
    assert exported.registered == "models:/marrow@prod" and exported.model == "naive_bayes"
    loaded = mlflow.pyfunc.load_model("models:/marrow@prod")
    assert loaded.metadata.metadata["source_run_id"] == exported.run_id
    table, _ = comparison(Tracking(uri), "classical")
    assert sorted(table["model"]) == ["linear_svm", "naive_bayes"]  # the export run is not a design


def test_the_readout_of_new_samples_per_cell_and_per_sample(classical):
    tmp, uri, store = classical
    mlflow.set_tracking_uri(uri)
    model_dir = tmp / "readout_model"
    export_model(Tracking(uri), "classical", "balanced_accuracy", model_dir, model="naive_bayes")
    samples = write_predictions(model_dir, [store], tmp / "readout", min_cells=60)
    cells = pd.read_csv(tmp / "readout" / "cells.csv")
    assert len(cells) == store.n_cells and cells["predicted"].notna().all()
    assert np.allclose(cells.filter(like="probability_").sum(axis=1), 1)
    assert set(samples["instance"]) == set(store.cells["instance"]) and (samples["cells"] == 60).all()
    fractions = samples[["fraction_leukemic", "fraction_normal", "fraction_other"]].sum(axis=1)
    assert np.allclose(fractions, 1)
    assert (samples["leukemic_at_or_above_25pct"] == (samples["leukemic_fraction"] >= 0.25)).all()
    assert (samples["no_call"] == "").all()
    card = model_card(model_dir)
    assert card.rates is not None and card.rates.positive == "leukemic"  # the design's held-out rates
    corrected = samples.set_index("instance")
    inside = (corrected["leukemic_fraction_low"] <= corrected["leukemic_fraction_corrected"]) & (
        corrected["leukemic_fraction_corrected"] <= corrected["leukemic_fraction_high"]
    )
    assert inside.all() and (samples["correction"] == card.rates.method).all()  # as the design chose
    for cutoff, tag in ((0.25, "25pct"), (0.10, "10pct")):
        above = corrected["leukemic_fraction_low"] >= cutoff
        below = corrected["leukemic_fraction_high"] < cutoff
        expected = np.where(above, "above", np.where(below, "below", "undecided"))
        assert (corrected[f"leukemic_call_{tag}"] == expected).all()
    too_few = sample_readout(cells, card, min_cells=61)
    assert too_few["leukemic_at_or_above_25pct"].isna().all()  # no call, never False
    assert too_few["leukemic_call_25pct"].isna().all()
    assert too_few["no_call"].str.fullmatch(r"60 classified cell\(s\), fewer than --min-cells 61").all()
    truth = store.cells.groupby("instance")["label"].apply(lambda x: (x == "leukemic").mean())
    assert np.allclose(samples.set_index("instance")["reference_fraction_leukemic"], truth)
    with pytest.raises(IfcmlError, match="samples.csv: already exist"):
        write_predictions(model_dir, [store], tmp / "readout")


def test_predict_says_what_new_samples_lack(classical, ifcml):
    tmp, uri, _ = classical
    mlflow.set_tracking_uri(uri)
    model_dir = tmp / "cli_model"
    export_model(Tracking(uri), "classical", "balanced_accuracy", model_dir)
    new = tmp / "new_tiff"
    assert ifcml("simulate", new, "--patients", "1", "--timepoints", "day0", "--cells-per-sample", "8",
                 "--channels", "BF,DF", "--seed", "3")[0] == 0  # fmt: skip
    code, _, err = ifcml("predict", model_dir, new, "--out", tmp / "p1")
    assert code == 2 and "the model reads BF, DF; without --channels: Ch<k>" in err
    code, _, err = ifcml("predict", model_dir, new, "--channels", "1:BF,6:DF", "--out", tmp / "p2")
    assert code == 2 and "outlines cells with the instrument's masks; the input has none" in err
    assert not list((tmp / "p2").iterdir())  # the temporary store is gone, nothing half-written
    code, _, err = ifcml("predict", tmp / "nowhere", new, "--out", tmp / "p3")
    assert code == 2 and "nowhere: not an exported model" in err


def test_new_cells_are_brought_to_the_training_tile_size():
    from ifcml.deploy.cells import CellImages
    from ifcml.deploy.predictors import to_tile_size

    tiles = np.random.default_rng(0).integers(100, 900, (3, 2, 40, 40)).astype(np.uint16)
    larger = np.pad(tiles, ((0, 0), (0, 0), (4, 4), (4, 4)), constant_values=7)  # wider montage tiles
    back = to_tile_size(CellImages(larger, np.full((3, 2), 48), None, np.arange(3)), 40)
    assert (back.images == tiles).all() and (back.sizes == 40).all()
    grown = to_tile_size(CellImages(tiles, np.full((3, 2), 40), None, np.arange(3)), 48)
    assert grown.images.shape == (3, 2, 48, 48) and (grown.images[..., 4:44, 4:44] == tiles).all()


def test_an_exported_network_takes_raw_images(tmp_path, deep_store):
    spec = {"spec": "compact_cnn", "settings": {"training": {"max_epochs": 1}}}
    uri = grid(tmp_path, "deep", {"store": deep_store.path}, [spec])
    exported = export_model(Tracking(uri), "deep", "balanced_accuracy", tmp_path / "net")
    parent = mlflow.MlflowClient().list_artifacts(exported.run_id)
    assert "embedding_tsne.png" in {a.path for a in parent}  # the report's embedding figure

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'elsewhere.db'}")  # a folder needs no tracking store
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


def pad_with_background(tiles: np.ndarray, pad: int, seed: int) -> np.ndarray:
    """Tiles (N, C, h, w) grown by ``pad`` pixels a side with noise like each tile's own border,
    as a stitching script with a larger tile size would pad them."""
    border = np.concatenate(
        [tiles[..., :2, :].reshape(*tiles.shape[:2], -1), tiles[..., -2:, :].reshape(*tiles.shape[:2], -1)],
        axis=-1,
    ).astype(np.float64)
    mean, std = border.mean(axis=-1), border.std(axis=-1)
    n, c, h, w = tiles.shape
    noise = np.random.default_rng(seed).normal(size=(n, c, h + 2 * pad, w + 2 * pad))
    grown = np.rint(mean[..., None, None] + std[..., None, None] * noise).clip(0, 65535).astype(np.uint16)
    grown[..., pad : pad + h, pad : pad + w] = tiles
    return grown


@pytest.mark.slow
def test_jurkat_grid_exports_a_model_that_reads_montages_it_never_saw(tmp_path, jurkat_store, ifcml, capsys):
    """experiments/jurkat_cell_cycle.yaml on real cells (a third of each phase kept back), then the
    exported models on the kept-back cells re-stitched into 12x12 montages of 48-pixel tiles."""
    from conftest import write_montage

    labels = jurkat_store.cells["label"].to_numpy()
    kept_back = np.zeros(len(labels), bool)
    for phase in np.unique(labels):
        kept_back[np.flatnonzero(labels == phase)[::3]] = True
    images = jurkat_store.images[:]  # (N, [BF, DF], 40, 40)
    for phase in np.unique(labels):
        seen = images[(labels == phase) & ~kept_back]
        for k, channel in ((0, 3), (1, 6)):
            write_montage(tmp_path / "seen" / phase / f"Ch{channel}_CP0001.tif", seen[:, k], (30, 30))
        unseen = pad_with_background(images[(labels == phase) & kept_back], 4, seed=len(phase))
        for m, start in enumerate(range(0, len(unseen), 144)):
            for k, channel in ((0, 3), (1, 6)):
                tiles = unseen[start : start + 144, k]
                write_montage(tmp_path / "unseen" / phase / f"Ch{channel}_CP{m + 1:04d}.tif", tiles, (12, 12))

    spec = yaml.safe_load(open("experiments/jurkat_cell_cycle.yaml"))
    spec["data"] |= {"store": str(tmp_path / "seen.store"), "features": str(tmp_path / "seen.parquet")}
    spec["data"]["ingest"] |= {"sources": [str(tmp_path / "seen")], "channels": "3:BF,6:DF"}
    spec["models"] = [  # the shipped models, with budgets small enough for CI
        "linear_svm",
        {"spec": "compact_cnn", "settings": {"training": {"max_epochs": 4}}},
    ]
    spec["max_evals"] = 2
    spec.pop("learning_curve")  # the full-size designs are what is exported (curves: test_learning_curve)
    (tmp_path / "jurkat.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out, err = ifcml("grid", tmp_path / "jurkat.yaml", "--tracking-uri", uri, "--workers", "2")
    assert code == 0, out[-3000:]
    assert "CONFOUNDED DESIGN" in err  # the toolkit says this design cannot be evaluated honestly

    mlflow.set_tracking_uri(uri)
    merged = np.where(np.isin(labels, ["G1", "S_phase", "G2"]), labels, "M")[kept_back]  # spec's merge
    for model in ("linear_svm", "compact_cnn"):
        model_dir, predictions = tmp_path / f"{model}.model", tmp_path / f"{model}.predictions"
        code, out, err = ifcml("export", "jurkat_cell_cycle", "--out", model_dir, "--model", model,
                               "--tracking-uri", uri)  # fmt: skip
        assert code == 0, err[-3000:]
        assert "cannot be trusted: CONFOUNDED DESIGN" in err  # said again at export
        unseen = tmp_path / "unseen"
        code, out, err = ifcml("predict", model_dir, unseen, "--format", "montage", "--grid", "12x12",
                               "--channels", "3:BF,6:DF", "--out", predictions)  # fmt: skip
        assert code == 0, err[-3000:]
        cells = pd.read_csv(predictions / "cells.csv")
        assert (cells["label"].to_numpy() == labels[kept_back]).all()  # same cells, same order
        assert cells["predicted"].isna().sum() <= 2  # unclassified: no outline found (1 in 3,419 in all)
        # the same cells read from the original 40-pixel tiles: the model's preprocessing makes
        # the re-stitched montages' cells what they were
        original = mlflow.pyfunc.load_model(str(model_dir)).predict(
            {"images": images[kept_back], "channels": ["BF", "DF"]}
        )
        found = cells["predicted"].fillna("none").to_numpy()
        agreement = (found == original["predicted"].fillna("none").to_numpy()).mean()
        accuracy = (found == merged).mean()
        with capsys.disabled():  # the figures, in the test log
            print(f"\n{model}: agreement with the original tiles {agreement:.3f}, accuracy {accuracy:.3f}")
        assert agreement > 0.9, (model, agreement)
        majority = pd.Series(merged).value_counts(normalize=True).max()  # always guessing G1: 0.26
        assert accuracy > majority + 0.1, (model, accuracy)  # confounded design: no claim beyond this
