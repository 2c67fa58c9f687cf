"""The command line: verbs, help, and the README's main job."""

from __future__ import annotations

import json

import pytest

VERBS = ("ingest", "info", "simulate", "demo")


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
    out = tmp_path / "demo"
    code, first, err = ifcml("demo", "--out", out)
    assert code == 0, err
    assert "3600 cells" in first and "P04_day33" in first
    assert "features: 3600 cells" in first and "balanced accuracy" in first
    summary = json.loads(ifcml("info", out / "store", "--json")[1])
    assert summary["n_cells"] == 3600 and len(summary["counts"]) == 12
    assert summary["channels"] == ["BF", "CD10", "CD34", "DF", "DAPI", "CD19", "CD45"]
    created = json.loads((out / "store" / "meta.json").read_text())["provenance"]["created"]
    code, second, err = ifcml("demo", "--out", out)
    assert code == 0, err
    assert "wrote" not in second and first.endswith(second)  # only the summary: nothing redone
    assert json.loads((out / "store" / "meta.json").read_text())["provenance"]["created"] == created
