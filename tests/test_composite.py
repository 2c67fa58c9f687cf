"""Hybrid and stacked designs: every part fitted inside the training fold, exported, applied to raw cells."""

from __future__ import annotations

from dataclasses import replace

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from ifcml.cells import CELL
from ifcml.deploy.export import export_model
from ifcml.deploy.predictors import load_predictor, predict_store
from ifcml.errors import InputError
from ifcml.experiments.grid import run_grid
from ifcml.experiments.results import Trained
from ifcml.experiments.run import prepare
from ifcml.experiments.spec import load_experiment
from ifcml.experiments.tracking import Tracking
from ifcml.io.store import CellStore
from ifcml.models.registry import load_model_spec

QUICK = {"training": {"max_epochs": 1, "batch_size": 64}}


def spec_of(name: str, settings: dict):
    from ifcml.experiments.spec import _deep_merge

    base = load_model_spec(name)
    return type(base).model_validate(_deep_merge(base.model_dump(), settings))


class RecordedReads:
    """A crop array that remembers which cells were read (to show what a training saw)."""

    def __init__(self, crops: np.ndarray):
        self.crops, self.shape, self.dtype, self.read = crops, crops.shape, crops.dtype, set()

    def __getitem__(self, index):
        self.read.update(np.atleast_1d(np.arange(len(self.crops))[index]).tolist())
        return self.crops[index]


@pytest.fixture(scope="module")
def data(simulated_features):
    return simulated_features, simulated_features.parent / "store"


def test_a_hybrids_network_and_classifier_see_training_cells_only(data):
    features, store = data
    spec = spec_of("xgboost_on_cnn", {"embedding_of": QUICK, "classifier": {"max_evals": 1}})
    design = prepare(features, spec, ["BF", "DF"], store=store)
    fold = design.folds("leave-one-instance-out", 0)[0]
    crops = RecordedReads(np.asarray(design.network.crops))
    design = replace(design, network=replace(design.network, crops=crops))
    trained = design.train(fold.train, 0)
    training_cells = set(design.table[CELL].to_numpy()[fold.train].tolist())
    assert crops.read and crops.read <= training_cells  # fitting, validating and embedding
    assert set(trained.rows) <= set(fold.train)
    width = trained.model.parts["network"].model.get_layer("embedding").output.shape[-1]
    assert sum(f.startswith("Embedding_") for f in trained.features) > 0
    assert len(trained.features) > width / 2  # CellProfiler features next to the embedding survive pruning
    codes, probabilities = design.predict(trained, fold.test)
    assert crops.read - training_cells == set(design.table[CELL].to_numpy()[fold.test].tolist())
    assert probabilities.shape == (len(fold.test), 3) and np.allclose(probabilities.sum(axis=1), 1)

    alone = prepare(store, spec.model_copy(update={"with_features": False}), ["BF", "DF"])  # the store only
    trained = alone.train(alone.folds("leave-one-instance-out", 0)[0].train, 0)
    assert trained.features and all(f.startswith("Embedding_") for f in trained.features)


def test_a_stack_learns_its_combiner_from_cells_its_members_did_not_see(data):
    features, store = data
    spec = spec_of("stacked_xgboost_cnn", {"stack": {"xgboost": {"max_evals": 1}, "compact_cnn": QUICK}})
    spec = spec.model_copy(update={"stack": [load_model_spec("naive_bayes"), spec.stack[0]]})
    design = prepare(features, spec, ["BF", "DF"], store=store)
    fold = design.folds("leave-one-instance-out", 0)[0]
    inner = design.inner_folds(fold.train, 0)
    instances = design.table["Metadata_instance"].to_numpy()[fold.train]
    for fit, predict in inner:  # grouped: an inner held-out instance is in no inner training part
        assert not set(instances[fit]) & set(instances[predict])
    assert sorted(np.concatenate([p for _, p in inner])) == list(range(len(fold.train)))

    poisoned = design.table.copy()
    columns = [c for c in poisoned if c.startswith("Cells_")]
    poisoned.loc[fold.test, columns] = 1e6  # held-out values far from everything
    results = []
    for table in (design.table, poisoned):
        members = [replace(m, table=table) for m in design.members]
        results.append(replace(design, table=table, members=members).train(fold.train, 0))
    clean, dirty = (r.model.parts for r in results)
    np.testing.assert_array_equal(clean["combiner"].model[-1].coef_, dirty["combiner"].model[-1].coef_)
    assert results[0].features == results[1].features
    nb = [clean["naive_bayes"].model[-1].theta_, dirty["naive_bayes"].model[-1].theta_]
    np.testing.assert_array_equal(*nb)


def test_stacks_refuse_members_without_probabilities_and_unknown_member_settings(tmp_path):
    path = tmp_path / "stack.yaml"
    path.write_text(
        yaml.safe_dump({"name": "s", "stack": ["linear_svm", "xgboost"], "combiner": "naive_bayes"})
    )
    with pytest.raises(InputError, match="linear_svm give.s. no class probabilities"):
        load_model_spec(path)
    escaping = {"name": "../up", "estimator": "gaussian_nb"}
    path.write_text(yaml.safe_dump({"name": "s", "stack": [escaping, "xgboost"], "combiner": "naive_bayes"}))
    with pytest.raises(InputError, match=r"member name\(s\) ../up"):
        load_model_spec(path)
    spec = {
        "name": "e",
        "data": {"store": "x"},
        "models": [{"spec": "stacked_xgboost_cnn", "settings": {"stack": {"resnet": {"max_epochs": 1}}}}],
        "channel_sets": {"a": ["BF"]},
    }
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(
        InputError, match="models.0 .stacked_xgboost_cnn. settings: stack: no member named resnet"
    ):
        load_experiment(tmp_path / "e.yaml")


@pytest.mark.slow
def test_hybrid_and_stacked_designs_are_exported_and_read_raw_cells_as_in_their_folds(tmp_path, data):
    """A grid of both, exported; the exported models measure and crop raw store cells
    themselves and answer what the designs answered from the feature table and cached crops."""
    features, store_path = data
    models = [
        {"spec": "xgboost_on_cnn", "settings": {"embedding_of": QUICK}},
        {"spec": "stacked_xgboost_cnn", "settings": {"stack": {"compact_cnn": QUICK}}},
    ]
    spec = {
        "name": "composites",
        "data": {"store": str(store_path), "features": str(features)},
        "models": models,
        "channel_sets": {"label_free": ["BF", "DF"]},
        "max_evals": 1,
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = load_experiment(tmp_path / "spec.yaml")
    report = run_grid(experiment, uri, workers=2)
    assert not report.failed, report.failed
    store = CellStore(store_path)
    mlflow.set_tracking_uri(uri)
    for k, model in enumerate(("xgboost_on_cnn", "stacked_xgboost_cnn")):
        exported = export_model(
            Tracking(uri), "composites", "balanced_accuracy", tmp_path / model, model=model
        )
        parent = mlflow.get_run(exported.run_id)
        assert parent.data.tags["branch"] == ("hybrid", "stacked")[k]
        folder = str(tmp_path / model / "artifacts" / "model")
        predictor = load_predictor(folder)
        raw = predict_store(predictor, folder, store, workers=2)
        design = prepare(features, experiment.model_specs()[k], ["BF", "DF"], store=store_path)
        from ifcml.models.saved import load_trained

        saved = load_trained(folder)
        rows = np.arange(len(design.table))
        _, expected = design.predict(Trained(saved.model, saved.metadata["features"], {}, [], rows), rows)
        found = raw.set_index("cell_id").loc[design.table[CELL].to_numpy()]
        columns = [f"probability_{c}" for c in design.classes]
        np.testing.assert_allclose(found[columns].to_numpy(), expected, atol=1e-5)
        table = mlflow.pyfunc.load_model(str(tmp_path / model)).predict(
            pd.DataFrame({"store": [str(store_path)]})
        )
        np.testing.assert_allclose(table[columns].to_numpy(), raw[columns].to_numpy())


def test_ifcml_train_runs_a_hybrid_on_a_feature_table_and_its_store(tmp_path, data, ifcml):
    features, store = data
    network = {"name": "cnn", "network": "compact_cnn", "training": {"max_epochs": 1, "batch_size": 64}}
    spec = {"name": "nb_on_cnn", "embedding_of": network, "classifier": "naive_bayes"}
    (tmp_path / "hybrid.yaml").write_text(yaml.safe_dump(spec))
    arguments = ["train", features, "--model", tmp_path / "hybrid.yaml", "--split", "holdout:P01_day0",
                 "--channels", "BF,DF", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]  # fmt: skip
    code, out, err = ifcml(*arguments)
    assert code != 0 and "nb_on_cnn reads crops too: give the store the table was measured from" in err
    code, out, err = ifcml(*arguments, "--store", store)
    assert code == 0, err[-2000:]
    assert "balanced_accuracy" in out


def test_a_composite_folder_is_read_part_by_part_and_only_inside_itself(tmp_path):
    from ifcml.models.saved import load_trained

    def composite(folder, parts):
        folder.mkdir(parents=True)
        flavor = {"ifcml_composite": {"kind": "stacked", "parts": parts}}
        (folder / "MLmodel").write_text(yaml.safe_dump({"flavors": flavor}))
        return folder

    outside = composite(tmp_path / "a", {"x": "../b"})
    (tmp_path / "b").mkdir()
    with pytest.raises(InputError, match="part 'x' at '../b' is not a folder inside it"):
        load_trained(outside)
    nested = composite(tmp_path / "c", {"inner": "parts/inner"})
    composite(nested / "parts" / "inner", {"y": "parts/y"})
    with pytest.raises(InputError, match="a composite inside a composite"):
        load_trained(nested)
    pickled = composite(tmp_path / "d", {"p": "parts/p"})
    (pickled / "parts" / "p").mkdir(parents=True)
    sklearn = {"sklearn": {"serialization_format": "cloudpickle", "pickled_model": "model.pkl"}}
    (pickled / "parts" / "p" / "MLmodel").write_text(yaml.safe_dump({"flavors": sklearn}))
    with pytest.raises(InputError, match="ifcml reads only skops"):
        load_trained(pickled)
