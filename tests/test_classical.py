"""The classical branch: splits, confound check, leak-free nested tuning, metrics, MLflow."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from ifcml.cells import feature_columns, undersample_per_instance, usable_cells
from ifcml.errors import IfcmlError
from ifcml.experiments.classical_design import ClassicalDesign
from ifcml.experiments.design import Design
from ifcml.experiments.metrics import bootstrap_ci, readout, responder_calls
from ifcml.experiments.run import TrainOptions, run_model
from ifcml.experiments.splits import confound_check, make_folds
from ifcml.features.table import read_features
from ifcml.models.registry import load_model_spec
from ifcml.models.tuning import inner_folds, inner_loss, tune


@pytest.fixture(scope="module")
def cells(simulated_features):
    return usable_cells(read_features(simulated_features))


def test_leave_one_instance_out_holds_out_each_instance_once(cells):
    folds = make_folds(cells, "leave-one-instance-out")
    assert len(folds) == cells["Metadata_instance"].nunique() == 8
    for fold in folds:
        assert set(cells["Metadata_instance"].iloc[fold.test]) == {fold.name}
        assert fold.name not in set(cells["Metadata_instance"].iloc[fold.train])
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(len(cells)))


def test_other_splits_and_their_errors(cells):
    assert len(make_folds(cells, "leave-one-group-out:patient")) == 4
    (fold,) = make_folds(cells, "holdout:P01_day0,P02_day15")
    assert set(cells["Metadata_instance"].iloc[fold.test]) == {"P01_day0", "P02_day15"}
    assert len(make_folds(cells, "stratified-kfold:5")) == 5
    with pytest.raises(IfcmlError, match="no instance.*P09_day0"):
        make_folds(cells, "holdout:P09_day0")
    with pytest.raises(IfcmlError, match="unknown split 'loio'"):
        make_folds(cells, "loio")
    one = cells.assign(Metadata_instance="only")
    with pytest.raises(IfcmlError, match="cannot leave one 'instance' out"):
        make_folds(one, "leave-one-instance-out")


def test_undersampling_balances_each_instance(cells):
    rows = undersample_per_instance(cells, np.arange(len(cells)), seed=0)
    kept = cells.iloc[rows]
    for _, part in kept.groupby("Metadata_instance"):
        assert part["Metadata_label"].value_counts().nunique() == 1  # every class as large as the rarest


def test_confound_check_fires_on_real_jurkat_and_not_on_a_designed_experiment(jurkat_store, cells):
    reports = confound_check(jurkat_store.cells)
    assert [r.unit for r in reports] == ["source"]  # one montage per phase
    assert reports[0].purity == 1.0 and "G1" in reports[0].single_unit_labels
    assert "CONFOUNDED" in reports[0].message() and "leave-one-group-out:source" in reports[0].message()
    per_cell_files = cells.assign(Metadata_source=[f"cell_{i}.ome.tif" for i in range(len(cells))])
    assert confound_check(per_cell_files) == []  # one file per cell (TIFF export) is no acquisition
    assert confound_check(cells) == []


def test_tuning_beats_the_defaults_on_the_inner_objective(cells):
    spec = load_model_spec("linear_svm")
    x = cells[feature_columns(cells)].to_numpy(np.float64)
    y = pd.Categorical(cells["Metadata_label"]).codes.astype(np.int64)
    groups = cells["Metadata_instance"].to_numpy()
    default = inner_loss(spec, {}, 0, x, y, inner_folds(y, groups, 0))
    best, trials = tune(spec, x, y, groups, seed=0, max_evals=8)
    assert len(trials) == 8 and "C" in best
    assert min(t.loss for t in trials) < default


def test_nothing_from_the_held_out_instance_reaches_training(cells):
    """Replace every held-out value with noise: pruning, balance, tuning and scaling are unchanged."""
    spec, features = load_model_spec("linear_svm"), feature_columns(cells)
    fold = make_folds(cells, "holdout:P02_day0")[0]
    leaky = cells.copy()
    leaky["Cells_Leak_BF"] = 0.0
    leaky.loc[leaky.index[fold.test], "Cells_Leak_BF"] = np.arange(len(fold.test))  # varies in held-out only
    noisy = leaky.copy()
    rng = np.random.default_rng(1)
    noisy.loc[noisy.index[fold.test], features] = rng.normal(size=(len(fold.test), len(features)))
    runs = [
        ClassicalDesign.of_table(t, spec, [*features, "Cells_Leak_BF"]).train(fold.train, seed=0, max_evals=4)
        for t in (leaky, noisy)
    ]
    first, second = runs
    assert "Cells_Leak_BF" not in first.features  # constant on training cells: pruned
    assert first.features == second.features and first.params == second.params
    assert [t.loss for t in first.trials] == [t.loss for t in second.trials]
    np.testing.assert_array_equal(first.rows, second.rows)
    assert set(first.rows) <= set(fold.train)
    scaler = first.model.named_steps["scale"]
    np.testing.assert_allclose(
        scaler.mean_, leaky.iloc[first.rows][first.features].mean().to_numpy(), rtol=1e-9
    )
    np.testing.assert_array_equal(scaler.mean_, second.model.named_steps["scale"].mean_)


def test_same_seed_same_results(cells):
    spec = load_model_spec("random_forest")
    design = ClassicalDesign.of_table(cells, spec)
    runs = [design.evaluate("leave-one-group-out:patient", seed=3, max_evals=2) for _ in range(2)]
    pd.testing.assert_frame_equal(runs[0].predictions, runs[1].predictions)
    assert [t.loss for f in runs[0].folds for t in f.trials] == [
        t.loss for f in runs[1].folds for t in f.trials
    ]


def test_metrics_readout_and_responder_calls():
    predictions = pd.DataFrame(
        {
            "instance": ["a"] * 4 + ["b"] * 4 + ["c"] * 4,
            "label": ["leukemic", "leukemic", "normal", "normal"]
            + ["normal"] * 4
            + ["leukemic"]
            + ["normal"] * 3,
            "predicted": ["leukemic", "normal", "normal", "normal"] + ["normal"] * 4 + ["normal"] * 4,
        }
    )
    table = readout(predictions, ["leukemic", "normal"])
    assert table["reference_fraction_leukemic"].tolist() == [0.5, 0.0, 0.25]
    assert table["predicted_fraction_leukemic"].tolist() == [0.25, 0.0, 0.0]
    calls = responder_calls(table, "leukemic")
    assert calls["sensitivity_25pct"] == 0.5 and calls["specificity_25pct"] == 1.0  # c missed, b right
    low, high = bootstrap_ci(np.array([0.8, 0.9, 1.0, 0.7]), seed=0)
    assert low < 0.85 < high


def test_leave_one_instance_out_is_logged_to_mlflow(simulated_features, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = TrainOptions(channels=["BF", "DF"], max_evals=3, experiment="t", uri=uri)
    result = run_model(simulated_features, "linear_svm", options)
    assert result.metrics["balanced_accuracy"] > 0.8  # chance is 1/3
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["t"])
    parent = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert len(parent) == 1 and parent["run_id"].iloc[0] == result.run_id
    assert parent["tags.branch"].iloc[0] == "classical" and parent["tags.channel_set"].iloc[0] == "BF+DF"
    folds = runs[runs["tags.mlflow.parentRunId"] == result.run_id]
    assert len(runs) == 1 + 8 and len(folds) == 8  # trials are a table, not runs
    assert (folds["metrics.n_trials"] == 3).all() and folds["metrics.inner_best_balanced_accuracy"].between(
        0, 1
    ).all()
    client = mlflow.MlflowClient()
    fold = folds["run_id"].iloc[0]
    streamed = client.get_metric_history(fold, "inner_balanced_accuracy")  # logged as the search went
    assert sorted(m.step for m in streamed) == [0, 1, 2]
    assert max(m.value for m in streamed) == pytest.approx(
        folds["metrics.inner_best_balanced_accuracy"].iloc[0]
    )
    trials = pd.read_csv(client.download_artifacts(fold, "trials.csv", str(tmp_path)))
    assert len(trials) == 3 and {"loss", "inner_balanced_accuracy", "C"} <= set(trials)
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {
        "confusion_matrix.png",
        "confusion_matrix.csv",
        "per_instance.csv",
        "predictions.parquet",
        "trials.csv",
        "trials.png",
    } <= artifacts
    logged = client.search_logged_models([result.experiment_id])  # the final model carries the metrics
    assert len(logged) == 1 and logged[0].source_run_id == result.run_id
    model_metrics = {m.key: m.value for m in logged[0].metrics}
    assert model_metrics["balanced_accuracy"] == pytest.approx(result.metrics["balanced_accuracy"])
    run = mlflow.get_run(result.run_id)
    assert run.inputs.dataset_inputs[0].dataset.name == "features.parquet"
    per_instance = pd.read_csv(mlflow.artifacts.download_artifacts(f"runs:/{result.run_id}/per_instance.csv"))
    reference, predicted = (
        per_instance["reference_fraction_leukemic"],
        per_instance["predicted_fraction_leukemic"],
    )
    assert np.corrcoef(reference, predicted)[0, 1] > 0.9  # the readout tracks the simulated truth
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    features = model.metadata.metadata["features"]
    assert all("DAPI" not in f for f in features)  # the channel set was respected
    table = read_features(simulated_features)
    assert set(model.predict(table[features].head(10))) <= {0, 1, 2}


def test_trials_are_nested_runs_only_when_asked(simulated_features, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    options = TrainOptions(channels=["BF"], max_evals=2, experiment="t", uri=uri, log_trials=True)
    run_model(simulated_features, "naive_bayes", options)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["t"])
    folds = runs[runs["tags.held_out"].notna()]
    trials = runs[runs["tags.kind"] == "trial"]
    assert len(folds) == 8 and len(trials) == 8 * 2  # naive Bayes searches var_smoothing
    assert set(trials["tags.mlflow.parentRunId"]) == set(folds["run_id"])


def test_a_train_whose_final_refit_fails_ends_its_run_failed_with_the_error(
    simulated_features, tmp_path, monkeypatch
):
    def disk_full(self, seed, max_evals, progress):
        raise OSError("No space left on device")

    monkeypatch.setattr(Design, "final", disk_full)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(OSError, match="No space"):
        options = TrainOptions(channels=["BF"], max_evals=1, experiment="t", uri=uri)
        run_model(simulated_features, "naive_bayes", options)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["t"])
    parent = runs[runs["tags.mlflow.parentRunId"].isna()]
    assert parent["status"].tolist() == ["FAILED"]  # not left RUNNING, and not shown as finished
    assert "No space left on device" in parent["tags.ifcml.error"].iloc[0]


def test_train_command_reports_bad_model_names(simulated_features, ifcml):
    code, _, err = ifcml("train", simulated_features, "--model", "deep_forest")
    assert code == 2 and "deep_forest" in err and "naive_bayes" in err


def test_model_spec_mistakes_name_the_file_and_key(tmp_path):
    spec = tmp_path / "mine.yaml"
    spec.write_text("name: mine\nestimator: random_forest\nserch: {}\n")
    with pytest.raises(IfcmlError, match=r"mine\.yaml: serch: Extra inputs"):
        load_model_spec(spec)
    spec.write_text(
        "name: mine\nestimator: linear_svm\nsearch:\n  C: {loguniform: [1, 2], uniform: [0, 1]}\n"
    )
    with pytest.raises(IfcmlError, match=r"search\.C: .*exactly one of"):
        load_model_spec(spec)
    for name in ("naive_bayes", "random_forest", "linear_svm", "xgboost"):
        assert load_model_spec(name).space().keys() == load_model_spec(name).search.keys()


def test_xgboost_learns_when_a_class_is_missing_from_training():
    """A held-out unit may hold a whole class (one montage per phase): training lacks its code."""
    from ifcml.models.classical import fit

    rng = np.random.default_rng(0)
    labels = np.repeat([0, 2], 50)  # class 1 absent
    features = pd.DataFrame({"a": labels + rng.normal(scale=0.1, size=100), "b": rng.normal(size=100)})
    spec = load_model_spec("xgboost")
    model = fit(spec, {"n_estimators": 10}, 0, features, labels)
    assert set(model.predict(features)) == {0, 2}
