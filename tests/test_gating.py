"""`ifcml gate` and `ifcml fcs` on real Jurkat cells: membership equals FlowKit's reading of
the FCS file cell for cell, labels come from populations, workspaces apply unchanged, and bad
strategies are refused before anything is written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import JURKAT
from ifcml.executors import Running
from ifcml.features.recipe import Measurements, Recipe
from ifcml.features.table import write_features

flowkit = pytest.importorskip("flowkit")

AREA = "Cells_AreaShape_Area"
MAJOR, MINOR = "Cells_AreaShape_MajorAxisLength", "Cells_AreaShape_MinorAxisLength"
DNA = "Cells_Intensity_IntegratedIntensity_DNA"
BF = "Cells_Intensity_IntegratedIntensity_BF"
DF = "CellsExpanded_Intensity_IntegratedIntensity_DF"

HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<gating:Gating-ML xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating"
    xmlns:transforms="http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
    xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">
"""
TAIL = "</gating:Gating-ML>\n"

EVERY_KIND_OF_GATE = Path(__file__).parent / "gates" / "every_kind_of_gate.xml"
# the transforms of that file, to place its thresholds in each one's scale
TRANSFORMS = {
    "Lin": flowkit.transforms.LinearTransform(param_t=1000, param_a=0),
    "Log": flowkit.transforms.LogTransform(param_t=10, param_m=2),
    "Asinh": flowkit.transforms.AsinhTransform(param_t=1000, param_m=4, param_a=0),
    "Logicle": flowkit.transforms.LogicleTransform(param_t=10, param_w=0.5, param_m=4.5, param_a=0),
    "Hyperlog": flowkit.transforms.HyperlogTransform(param_t=10, param_w=0.5, param_m=4.5, param_a=0),
}


@pytest.fixture(scope="module")
def jurkat_table(tmp_path_factory):
    """The real Jurkat cells with their DNA stain: size, shape and intensity features."""
    from ifcml.io.detect import open_source
    from ifcml.io.store import write_store

    if not JURKAT.is_dir():
        pytest.skip(f"real Jurkat montages not found at {JURKAT}")

    folder = tmp_path_factory.mktemp("gating")
    source = open_source(JURKAT, "montage", channels={3: "BF", 4: "DNA", 6: "DF"}, grid="30x30")
    store = write_store([source], folder / "store")
    light = Measurements.model_validate(
        {
            "sizeshape": {"zernike_degree": 0, "feret": False},
            **{
                f: {"enabled": False}
                for f in ("texture", "granularity", "radial_distribution", "correlation")
            },
        }
    )
    return write_features(
        store.path, folder / "cells.parquet", recipe=Recipe(measurements=light), run=Running(workers=2)
    )


def _at(table: pd.DataFrame, column: str, transform: str | None = None, percentile: float = 50) -> float:
    """A percentile of a column (as FCS holds it) in a transform's scale, nudged off any cell's value."""
    value = np.nanpercentile(table[column].to_numpy(np.float32), percentile)
    if transform:
        value = TRANSFORMS[transform].apply(np.array([[value]]))[0, 0]
    return float(value) + 1e-7


def every_kind_of_gate(table: pd.DataFrame) -> str:
    """Rectangle, polygon, ellipse, quadrants and a Boolean gate; linear, log, asinh, logicle
    and hyperlog transforms; and a spillover matrix, placed so that each splits the real cells."""
    major, minor = _at(table, MAJOR, "Lin"), _at(table, MINOR)
    return EVERY_KIND_OF_GATE.read_text().format(
        area_low=_at(table, AREA, percentile=5),
        area_high=_at(table, AREA, percentile=97),
        major_2=major * 2,
        major_09=major * 0.9,
        minor_2=minor * 2,
        minor_09=minor * 0.9,
        dna_logicle=_at(table, DNA, "Logicle") + 0.05,
        df_asinh=_at(table, DF, "Asinh"),
        dna_log=_at(table, DNA, "Log"),
        dna_log_hi=_at(table, DNA, "Log", 90),
        dna_log_lo=_at(table, DNA, "Log", 10),
        bf_hyperlog=_at(table, BF, "Hyperlog"),
        bf_hyperlog_hi=_at(table, BF, "Hyperlog", 90),
        bf_hyperlog_lo=_at(table, BF, "Hyperlog", 10),
    )


def _dimension(column: str, **bounds: float) -> str:
    limits = "".join(f' gating:{k}="{v}"' for k, v in bounds.items())
    return (
        f'<gating:dimension gating:compensation-ref="uncompensated"{limits}>'
        f'<data-type:fcs-dimension data-type:name="{column}"/></gating:dimension>'
    )


def _rectangle(gate: str, column: str, parent: str | None = None, **bounds: float) -> str:
    parent_id = f' gating:parent_id="{parent}"' if parent else ""
    inside = _dimension(column, **bounds)
    return f'<gating:RectangleGate gating:id="{gate}"{parent_id}>{inside}</gating:RectangleGate>'


def _strategy(*gates: str) -> str:
    return HEAD + "\n".join(gates) + "\n" + TAIL


def test_every_gate_equals_flowkit_reading_the_fcs_file_cell_for_cell(jurkat_table, tmp_path, ifcml):
    strategy = tmp_path / "strategy.xml"
    strategy.write_text(every_kind_of_gate(pd.read_parquet(jurkat_table)))
    code, out, err = ifcml("gate", jurkat_table, "--gates", strategy, "--out", tmp_path / "gated.parquet")
    assert code == 0, err
    code, _, err = ifcml("fcs", jurkat_table, "--out", tmp_path / "cells.fcs")
    assert code == 0, err

    gated = pd.read_parquet(tmp_path / "gated.parquet")
    sample = flowkit.Sample(str(tmp_path / "cells.fcs"))
    results = flowkit.parse_gating_xml(str(strategy)).gate_sample(sample)
    assert (sample.get_channel_events("Metadata_cell_id", source="raw") == gated["Metadata_cell_id"]).all()
    populations = ["Cells", "Round", "Bright", "RoundDim"] + [
        f"DNA{a}_BF{b}" for a in ("hi", "lo") for b in ("hi", "lo")
    ]
    for name in populations:
        ours = gated[f"Metadata_Gate_{name}"].to_numpy()
        assert 0 < ours.sum() < len(ours), f"{name}: the test's gate should split the real cells"
        np.testing.assert_array_equal(ours, results.get_gate_membership(name), err_msg=name)
        if name != "Bright":  # every other gate lies inside Cells: its cells are Cells' too
            assert not (ours & ~gated["Metadata_Gate_Cells"]).any(), name
        assert f"│ {name} " in out and str(int(ours.sum())) in out


def test_fcs_holds_every_numeric_column_with_its_name(jurkat_table, tmp_path, ifcml):
    code, out, err = ifcml("fcs", jurkat_table, "--out", tmp_path / "cells.fcs")
    assert code == 0, err
    table = pd.read_parquet(jurkat_table)
    sample = flowkit.Sample(str(tmp_path / "cells.fcs"))
    assert sample.event_count == len(table) == 3419
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c]) and table[c].notna().any()]
    assert sample.pnn_labels == numeric and "Metadata_label" not in sample.pnn_labels
    raw = sample.as_dataframe(source="raw")
    for column in (AREA, DNA, "Metadata_cell_id"):
        np.testing.assert_array_equal(raw[column].to_numpy().ravel(), table[column].to_numpy(np.float32))
    assert sample.metadata["ifcml_table"] == jurkat_table.name
    code, _, err = ifcml("fcs", jurkat_table, "--out", tmp_path / "cells.fcs")
    assert code == 2 and "already exists" in err


def test_label_gates_label_the_cells_of_exactly_one_population(jurkat_table, tmp_path, ifcml):
    table = pd.read_parquet(jurkat_table)
    strategy = tmp_path / "dna.xml"
    strategy.write_text(dna_content_gates(table))
    out = tmp_path / "labelled.parquet"
    code, printed, err = ifcml(
        "gate", jurkat_table, "--gates", strategy, "--out", out, "--label-gates", "G1,S,G2M"
    )
    assert code == 0, err
    gated = pd.read_parquet(out)
    inside = gated[[f"Metadata_Gate_{g}" for g in ("G1", "S", "G2M")]].to_numpy()
    one = inside.sum(axis=1) == 1
    assert (
        gated.loc[one, "Metadata_label"].to_numpy() == np.array(["G1", "S", "G2M"])[inside[one].argmax(1)]
    ).all()
    assert gated.loc[~one, "Metadata_label"].isna().all()
    assert (gated["Metadata_label_source"] == table["Metadata_label"]).all()
    assert (gated["Metadata_cell_id"] == table["Metadata_cell_id"]).all()
    assert f"{(inside.sum(axis=1) == 0).sum()} cells in none of them" in printed


def dna_content_gates(table: pd.DataFrame) -> str:
    """G1 / S / G2-M on integrated DNA intensity, split where G1's and G2's peaks lie."""
    dna = table[DNA].to_numpy()
    g1, g2 = np.nanpercentile(dna, [30, 85])
    edges = [0, g1 * 1.1, g2 * 0.9, np.nanmax(dna) * 2]
    phases = zip(("G1", "S", "G2M"), edges[:-1], edges[1:], strict=True)
    return _strategy(*(_rectangle(name, DNA, min=low, max=high) for name, low, high in phases))


def test_a_workspace_made_on_the_fcs_file_applies_unchanged(jurkat_table, tmp_path, ifcml):
    """FlowKit writes the FlowJo 10 workspace of a strategy drawn on ifcml's FCS file; the
    workspace gates the table as the GatingML does."""
    table = pd.read_parquet(jurkat_table)
    gatingml = tmp_path / "dna.xml"
    gatingml.write_text(dna_content_gates(table))
    assert ifcml("fcs", jurkat_table, "--out", tmp_path / "cells.fcs")[0] == 0
    session = flowkit.Session(gating_strategy=str(gatingml), fcs_samples=[str(tmp_path / "cells.fcs")])
    with (tmp_path / "cells.wsp").open("wb") as handle:
        session.export_wsp(handle, "ifcml")
    for strategy, out in ((gatingml, "from_xml.parquet"), (tmp_path / "cells.wsp", "from_wsp.parquet")):
        code, _, err = ifcml("gate", jurkat_table, "--gates", strategy, "--out", tmp_path / out)
        assert code == 0, err
    from_xml, from_wsp = (pd.read_parquet(tmp_path / f) for f in ("from_xml.parquet", "from_wsp.parquet"))
    gates = [c for c in from_xml if c.startswith("Metadata_Gate_")]
    assert len(gates) == 3
    pd.testing.assert_frame_equal(from_xml[gates], from_wsp[gates])


def test_a_store_is_measured_first_and_its_table_reused(simulated_store, tmp_path, ifcml):
    strategy = tmp_path / "size.xml"
    strategy.write_text(_strategy(_rectangle("Big", AREA, min=100)))
    code, _, err = ifcml(
        "gate", simulated_store.path, "--gates", strategy, "--out", tmp_path / "gated.parquet"
    )
    assert code == 0, err
    measured = tmp_path / "gated.features.parquet"
    assert measured.is_file()
    before = measured.stat().st_mtime_ns
    code, _, err = ifcml(
        "gate", simulated_store.path, "--gates", strategy, "--out", tmp_path / "gated.parquet", "--overwrite"
    )
    assert code == 0, err
    assert measured.stat().st_mtime_ns == before
    assert pd.read_parquet(tmp_path / "gated.parquet")["Metadata_Gate_Big"].sum() > 0


@pytest.mark.parametrize(
    ("body", "options", "expected"),
    [
        (
            _rectangle("Ghost", "Cells_Ghost", min=1),
            [],
            "gate 'Ghost' reads column 'Cells_Ghost'",
        ),
        (
            _rectangle("Label", "Metadata_label", min=1),
            [],
            "'Metadata_label', which is not numeric",
        ),
        (
            _rectangle("Empty", AREA, min=500, max=100),
            [],
            "gate 'Empty' can hold no cells",
        ),
        ('<gating:SpiralGate gating:id="S"/>', [], "line 5"),
        ("<gating:RectangleGate", [], "not a GatingML 2.0 strategy"),
        (
            _rectangle("A", AREA, min=1) + _rectangle("B", AREA, parent="A", min=2),
            ["--label-gates", "A,B"],
            "label gates 'A' and 'B' overlap",
        ),
        (
            _rectangle("A", AREA, min=1),
            ["--label-gates", "A,Z"],
            "'Z' is not a gate",
        ),
    ],
    ids=[
        "missing column",
        "text column",
        "empty range",
        "unknown element",
        "malformed",
        "nested labels",
        "unknown label",
    ],
)
def test_bad_strategies_are_refused_before_anything_is_written(
    jurkat_table, tmp_path, ifcml, body, options, expected
):
    strategy = tmp_path / "bad.xml"
    strategy.write_text(_strategy(body))
    code, out, err = ifcml(
        "gate", jurkat_table, "--gates", strategy, "--out", tmp_path / "gated.parquet", *options
    )
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.xml"]


def test_an_empty_gate_of_a_valid_strategy_is_a_notice(jurkat_table, tmp_path, ifcml):
    strategy = tmp_path / "huge.xml"
    strategy.write_text(_strategy(_rectangle("Huge", AREA, min=1e9)))
    code, out, err = ifcml("gate", jurkat_table, "--gates", strategy, "--out", tmp_path / "gated.parquet")
    assert code == 0
    assert "notice: gate 'Huge' holds none of the 3419 cells" in err
    assert not pd.read_parquet(tmp_path / "gated.parquet")["Metadata_Gate_Huge"].any()


def test_qc_thresholds_follow_the_rule_and_an_edit_overrides_them(jurkat_table, tmp_path, ifcml):
    code, printed, err = ifcml("qc", jurkat_table, "--out", tmp_path / "qc.xml")
    assert code == 0, err
    table = pd.read_parquet(jurkat_table)
    area = table[AREA].dropna().to_numpy(np.float32).astype(float)
    median = np.median(area)
    spread = 3 * 1.4826 * np.median(np.abs(area - median))
    text = (tmp_path / "qc.xml").read_text()
    assert f'gating:min="{median - spread:.4f}"'[:24] in text and "The QC population is 'in_focus'" in text

    code, printed, err = ifcml(
        "gate", jurkat_table, "--gates", tmp_path / "qc.xml", "--out", tmp_path / "qc.parquet"
    )
    assert code == 0, err
    gated = pd.read_parquet(tmp_path / "qc.parquet")
    kept = gated["Metadata_Gate_in_focus"]
    assert 0.8 * len(gated) < kept.sum() < len(gated)
    assert not (kept & ~gated["Metadata_Gate_single"]).any()
    assert not (gated["Metadata_Gate_single"] & ~gated["Metadata_Gate_cells"]).any()

    ratio_min = text.split('gating:min="')[2].split('"')[0]  # the second gate's: single
    (tmp_path / "strict.xml").write_text(text.replace(f'gating:min="{ratio_min}"', 'gating:min="0.9"'))
    assert (
        ifcml("gate", jurkat_table, "--gates", tmp_path / "strict.xml", "--out", tmp_path / "strict.parquet")[
            0
        ]
        == 0
    )
    strict = pd.read_parquet(tmp_path / "strict.parquet")
    assert strict["Metadata_Gate_single"].sum() < gated["Metadata_Gate_single"].sum()
    assert ifcml("qc", jurkat_table, "--out", tmp_path / "qc.xml")[0] == 2  # never replaced silently


def test_plots_draw_every_gate_with_cells_inside_and_just_outside(jurkat_table, tmp_path, ifcml):
    strategy = tmp_path / "strategy.xml"
    strategy.write_text(every_kind_of_gate(pd.read_parquet(jurkat_table)))
    plots = tmp_path / "plots"
    code, printed, err = ifcml(
        "gate", jurkat_table, "--gates", strategy, "--out", tmp_path / "g.parquet",
        "--plots", plots, "--store", jurkat_table.parent / "store",
    )  # fmt: skip
    assert code == 0, err
    page = (plots / "index.html").read_text()
    for name in ["Cells", "Round", "Bright", "DNAhi_BFhi", "DNAlo_BFlo", "RoundDim"]:
        assert f"<h2>{name} " in page
    drawn = sorted(p.name for p in plots.glob("*.png"))
    assert len([p for p in drawn if not p.endswith("_cells.png")]) == 7  # every gate but the Boolean one
    assert len([p for p in drawn if p.endswith("_cells.png")]) == 8
    for name in drawn:
        assert f'src="{name}"' in page


def test_cells_just_outside_a_gate_are_in_its_parent_and_nearest_to_it():
    from ifcml.gating.plots import EXAMPLES, _examples

    rng = np.random.default_rng(1)
    coordinates = rng.normal(size=(500, 2))
    in_parent = coordinates[:, 1] > -1.5
    inside = in_parent & (coordinates[:, 0] < 0)
    shown = _examples(coordinates, in_parent, inside)
    assert len(shown["inside"]) == len(shown["just outside"]) == EXAMPLES
    assert inside[shown["inside"]].all()
    outside = shown["just outside"]
    assert (in_parent & ~inside)[outside].all()
    assert coordinates[outside, 0].max() < np.sort(coordinates[in_parent & ~inside, 0])[EXAMPLES * 3]


def test_the_shipped_panel_gates_simulated_stained_channels_into_the_true_classes(tmp_path, ifcml):
    """The paper's ground truth by gating: DAPI, CD19, CD45 (compensated for the simulator's
    spillover) name leukemic, normal and other cells as the simulation made them."""
    from ifcml.io.store import write_store
    from ifcml.simulate import PAPER_CHANNELS, SimulatedSource, SimulationSettings

    settings = SimulationSettings(patients=2, timepoints=("day0", "day15"), cells_per_sample=150)
    store = write_store([SimulatedSource(settings)], tmp_path / "store")
    assert set(store.channels) == set(PAPER_CHANNELS.values())
    intensities = Measurements.model_validate(
        {
            f: {"enabled": False}
            for f in ("sizeshape", "texture", "granularity", "radial_distribution", "correlation")
        }
    )
    table = write_features(store.path, tmp_path / "cells.parquet", recipe=Recipe(measurements=intensities))
    panel = Path(__file__).resolve().parents[1] / "gates" / "simulated_panel.xml"
    code, printed, err = ifcml(
        "gate",
        table,
        "--gates",
        panel,
        "--out",
        tmp_path / "labelled.parquet",
        "--label-gates",
        "leukemic,normal,other",
    )
    assert code == 0, err
    labelled = pd.read_parquet(tmp_path / "labelled.parquet")
    truth, gated = labelled["Metadata_label_source"], labelled["Metadata_label"]
    assert (gated == truth).mean() > 0.95
    for name in ("leukemic", "normal", "other"):
        assert ((gated == name) & (truth == name)).sum() > 0.9 * (truth == name).sum(), name


def test_a_simulated_channel_is_the_same_whichever_channels_are_rendered():
    """Spillover sources are drawn for a channel even when they are not asked for."""
    from ifcml.simulate import SimulatedSource, SimulationSettings

    def first_chunk(channels):
        settings = SimulationSettings(
            patients=1, timepoints=("day0",), cells_per_sample=20, channels=channels
        )
        return next(SimulatedSource(settings).chunks(20)).images

    alone = first_chunk({4: "CD34"})
    together = first_chunk({1: "BF", 3: "CD10", 4: "CD34"})
    for one, many in zip(alone, together, strict=True):
        np.testing.assert_array_equal(one[0], many[2])
