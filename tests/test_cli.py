"""The command line: verbs, help, and the README's main job."""

from __future__ import annotations

import json

import pandas as pd
import pytest

VERBS = ("ingest", "info", "simulate", "demo", "gate", "qc", "fcs")


def test_help_lists_every_verb(ifcml):
    code, out, _ = ifcml("--help")
    assert code == 0
    for verb in VERBS:
        assert verb in out


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(ifcml, verb):
    code, out, _ = ifcml(verb, "--help")
    assert code == 0 and "Usage" in out


def test_info_on_a_folder_that_is_no_store(ifcml, tmp_path):
    code, _, err = ifcml("info", tmp_path)
    assert code == 2 and "not a CellStore" in err and str(tmp_path) in err


@pytest.mark.slow
def test_demo_runs_and_a_second_run_reuses_finished_steps(ifcml, tmp_path):
    """The README's main job end to end: simulate, ingest, features, the demo grid, the report,
    the export of the best design and the readout of new patients with it."""
    out = tmp_path / "demo"
    code, first, err = ifcml("demo", "--out", out)
    assert code == 0, err
    assert "3600 cells" in first and "P04_day33" in first
    assert "grid demo: 195 task(s) run, 0 already finished, 0 failed" in first  # 5 models x 3 sizes
    assert "CONFOUNDED" not in err  # a designed experiment: samples are the acquisitions
    assert "labels from simulated_panel.xml:" in first and "agree with the store's labels for 9" in first
    assert "gates store.gating.qc.xml:in_focus keep" in first  # the paper's ground truth and QC
    summary = json.loads(ifcml("info", out / "store", "--json")[1])
    assert summary["n_cells"] == 3600 and len(summary["counts"]) == 12
    assert summary["channels"] == ["BF", "CD10", "CD34", "DF", "DAPI", "CD19", "CD45"]
    curve = pd.read_csv(out / "report" / "comparison.csv")
    assert sorted(curve["train cells/class"].unique()) == ["200", "50", "all"]
    assert "What the learning curves say" in (out / "report" / "report.html").read_text()
    table = curve[curve["train cells/class"] == "all"]
    assert sorted(table["model"]) == ["compact_cnn", "linear_svm", "naive_bayes", "random_forest", "xgboost"]
    best = table.set_index("model")["balanced accuracy"]
    assert best["linear_svm"] > 0.85 and best["compact_cnn"] > 0.7  # chance: 0.333
    assert "compact_cnn | label_free: t-SNE" in (out / "report" / "report.html").read_text()
    exported = table.set_index("model")["balanced accuracy"].max()
    assert f"balanced_accuracy {exported:.3f}" in first and (out / "model" / "MLmodel").is_file()
    readout = pd.read_csv(out / "predictions" / "samples.csv")
    assert len(readout) == 6 and readout["instance"].str.startswith("new_P0").all()  # unseen patients
    removed = readout[["removed_by_cells", "removed_by_single", "removed_by_in_focus"]].sum(axis=1)
    assert (readout["kept"] == readout["cells"] - removed).all() and removed.sum() > 0  # read out on QC cells
    error = (readout["leukemic_fraction"] - readout["reference_fraction_leukemic"]).abs()
    assert error.max() < 0.1, readout  # the exported model's readout on new patients
    assert (readout["leukemic_at_or_above_25pct"] == (readout["leukemic_fraction"] >= 0.25)).all()
    created = json.loads((out / "store" / "meta.json").read_text())["provenance"]["created"]
    code, second, err = ifcml("demo", "--out", out)
    assert code == 0, err
    assert "wrote" not in second and "grid demo: 0 task(s) run, 195 already finished" in second
    assert "exported" not in second and "new_P02_day33" in second  # kept, and shown again
    assert json.loads((out / "store" / "meta.json").read_text())["provenance"]["created"] == created
