"""The simulator's known truth survives the IDEAS-style TIFF export and its reader."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ifcml.io.store import CellStore, write_store
from ifcml.simulate import SimulatedSource, SimulationSettings, plan_samples

SMALL = SimulationSettings(patients=2, timepoints=("day0", "day15"), cells_per_sample=40, seed=7)


def test_plan_covers_both_sides_of_the_cutoffs():
    samples = plan_samples(SimulationSettings(patients=4))
    fractions = samples["fraction_leukemic"]
    assert fractions.max() >= 0.6 and fractions.min() < 0.10
    assert ((fractions > 0.25) & (samples["timepoint"] != "day0")).any()
    assert (samples[["n_leukemic", "n_normal", "n_other"]].sum(axis=1) == samples["n_cells"]).all()


def test_simulated_tiff_export_ingests_with_generated_counts(tmp_path, ifcml):
    raw = tmp_path / "raw"
    code, _, err = ifcml(
        "simulate",
        raw,
        "--patients",
        2,
        "--timepoints",
        "day0,day15",
        "--cells-per-sample",
        40,
        "--channels",
        "BF,DF,CD19",
        "--seed",
        7,
    )
    assert code == 0, err
    samples = pd.read_csv(raw / "samples.csv")
    instances = sorted(p for p in raw.iterdir() if p.is_dir())
    out = tmp_path / "s"
    code, stdout, err = ifcml(
        "ingest",
        *instances,
        "--channels",
        "1:BF,6:DF,11:CD19",
        "--samples",
        raw / "samples.csv",
        "--out",
        out,
    )
    assert code == 0, err
    assert "reading as tiff" in stdout
    summary = json.loads(ifcml("info", out, "--json")[1])
    assert summary["channels"] == ["BF", "DF", "CD19"]
    for row in samples.itertuples():
        assert summary["counts"][row.instance] == {
            label: count
            for label, count in {
                "leukemic": row.n_leukemic,
                "normal": row.n_normal,
                "other": row.n_other,
            }.items()
            if count
        }
    cells = CellStore(out).cells
    assert set(zip(cells["instance"], cells["patient"], cells["timepoint"], strict=False)) == set(
        zip(samples["instance"], samples["patient"], samples["timepoint"], strict=False)
    )


def test_tiff_export_and_direct_store_hold_the_same_pixels(tmp_path):
    from ifcml.io.detect import open_source
    from ifcml.simulate import write_tiff_export

    source = SimulatedSource(SMALL)
    write_tiff_export(source, tmp_path / "raw")
    direct = write_store([source], tmp_path / "direct", samples=source.samples)
    readers = [
        open_source(p, "tiff", channels=source.channels)
        for p in sorted((tmp_path / "raw").iterdir())
        if p.is_dir()
    ]
    via_tiff = write_store(readers, tmp_path / "via_tiff", samples=source.samples)
    key = ["instance", "object_number"]
    a = direct.cells.sort_values(key).reset_index(drop=True)
    b = via_tiff.cells.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(
        a[key + ["label", "height", "width", "patient"]], b[key + ["label", "height", "width", "patient"]]
    )
    np.testing.assert_array_equal(direct.images[:][a["cell_id"]], via_tiff.images[:][b["cell_id"]])


def test_same_seed_same_cells_whatever_the_chunk_size(tmp_path):
    one = write_store([SimulatedSource(SMALL)], tmp_path / "a", chunk_cells=5)
    two = write_store([SimulatedSource(SMALL)], tmp_path / "b", chunk_cells=64)
    assert one.meta["images_sha256"] == two.meta["images_sha256"]
    other = write_store(
        [SimulatedSource(SimulationSettings(**{**SMALL.__dict__, "seed": 8}))], tmp_path / "c"
    )
    assert other.meta["images_sha256"] != one.meta["images_sha256"]


def test_classes_differ_in_the_label_free_channels():
    """Size (bright-field) and granularity (dark-field) separate the classes on average."""
    source = SimulatedSource(
        SimulationSettings(patients=2, cells_per_sample=200, channels={1: "BF", 6: "DF"})
    )
    area, scatter = {}, {}
    for chunk in source.chunks(256):
        for image, mask, label in zip(chunk.images, chunk.masks, chunk.labels, strict=False):
            area.setdefault(label, []).append(mask[0].sum())
            scatter.setdefault(label, []).append(np.percentile(image[1], 99))
    assert np.mean(area["leukemic"]) > 1.3 * np.mean(area["normal"])
    assert np.mean(scatter["other"]) > 1.2 * np.mean(scatter["leukemic"])


def test_unknown_simulated_channel_is_a_clear_error(tmp_path, ifcml):
    code, _, err = ifcml("simulate", tmp_path / "x", "--channels", "BF,GFP")
    assert code == 2 and "GFP" in err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("fmt", ["store"])
def test_simulate_straight_to_store(tmp_path, ifcml, fmt):
    out = tmp_path / "s"
    code, _, err = ifcml(
        "simulate", out, "--format", fmt, "--patients", 1, "--timepoints", "day0", "--cells-per-sample", 10
    )
    assert code == 0, err
    store = CellStore(out)
    assert store.n_cells == 10 and store.masks is not None and store.cells["patient"].iloc[0] == "P01"


def test_a_channel_looks_the_same_whichever_other_channels_are_rendered():
    label_free = SimulatedSource(SimulationSettings(**{**SMALL.__dict__, "channels": {1: "BF", 6: "DF"}}))
    everything = SimulatedSource(SMALL)
    df = list(everything.channels.values()).index("DF")
    for few, many in zip(label_free.chunks(64), everything.chunks(64), strict=True):
        for a, b in zip(few.images, many.images, strict=True):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[df])
