"""Gates on the real Jurkat cells: a DNA-content gate (G1 / S / G2-M) against the experts'
phases, and what the ready-made QC strategy removes from each phase.

The DNA gate is drawn by one rule on the cells' integrated DNA-stain intensity (Ch4, measured on
the bright-field outline): the G1 peak p is the histogram's mode, the G2 peak q the mode above
1.5 p; G1 ends a quarter of the way from p to q, S three quarters of the way, G2-M above. The
experts phased the cells from the DNA stain and morphology, so mitotic phases (prophase to
telophase) belong with G2-M by DNA content, and anaphase / telophase cells, two nuclei under one
outline, may read as either.

Usage: python benchmarks/jurkat_gates.py [--data ../shared/data/jurkat_ifc/Experiment_1]
Writes benchmarks/results/jurkat_dna_gates.csv and jurkat_qc_by_phase.csv; prints both tables.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from ifcml.executors import Running
from ifcml.features.recipe import Measurements, Recipe
from ifcml.features.table import write_features
from ifcml.gating.run import gate_file, qc_file
from ifcml.io.detect import open_source
from ifcml.io.store import write_store

RESULTS = Path(__file__).resolve().parent / "results"
DNA = "Cells_Intensity_IntegratedIntensity_DNA"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "jurkat_ifc" / "Experiment_1"
HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<gating:Gating-ML '
    'xmlns:gating="http://www.isac-net.org/std/Gating-ML/v2.0/gating" '
    'xmlns:data-type="http://www.isac-net.org/std/Gating-ML/v2.0/datatypes">\n'
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        source = open_source(args.data, "montage", channels={3: "BF", 4: "DNA", 6: "DF"}, grid="30x30")
        store = write_store([source], work / "store")
        light = Measurements.model_validate(
            {
                "sizeshape": {"zernike_degree": 0, "feret": False},
                **{
                    f: {"enabled": False}
                    for f in ("texture", "granularity", "radial_distribution", "correlation")
                },
            }
        )
        table = write_features(
            store.path,
            work / "cells.parquet",
            recipe=Recipe(measurements=light),
            run=Running(workers=args.workers),
        )
        cells = pd.read_parquet(table)
        edges = dna_edges(cells[DNA].to_numpy())
        strategy = work / "dna.xml"
        strategy.write_text(dna_strategy(edges))
        gate_file(table, strategy, work / "dna.parquet", label_gates=["G1", "S", "G2M"])
        gated = pd.read_parquet(work / "dna.parquet")
        agreement = pd.crosstab(gated["Metadata_label_source"], gated["Metadata_label"].fillna("none"))
        agreement = agreement.reindex(columns=["G1", "S", "G2M", "none"], fill_value=0)
        agreement.to_csv(RESULTS / "jurkat_dna_gates.csv")

        qc_file(table, work / "qc.xml")
        gate_file(table, work / "qc.xml", work / "qc.parquet")
        qc = pd.read_parquet(work / "qc.parquet")
        removed = qc.groupby("Metadata_label").agg(
            cells=("Metadata_cell_id", "size"),
            kept=("Metadata_Gate_in_focus", "sum"),
            not_cells=("Metadata_Gate_cells", lambda s: int((~s).sum())),
        )
        removed["not_single"] = (
            qc.assign(x=qc["Metadata_Gate_cells"] & ~qc["Metadata_Gate_single"])
            .groupby("Metadata_label")["x"]
            .sum()
        )
        removed["out_of_focus"] = (
            qc.assign(x=qc["Metadata_Gate_single"] & ~qc["Metadata_Gate_in_focus"])
            .groupby("Metadata_label")["x"]
            .sum()
        )
        removed["kept %"] = (100 * removed["kept"] / removed["cells"]).round(1)
        removed.to_csv(RESULTS / "jurkat_qc_by_phase.csv")
    print(f"DNA gate edges (integrated DNA intensity): {', '.join(f'{e:.3f}' for e in edges[1:-1])}")
    print(agreement.to_string())
    phases = {"G1": "G1", "S_phase": "S"}
    agree = (
        sum(agreement.loc[p, g] for p, g in phases.items())
        + agreement.loc[["G2", "Prophase", "Metaphase"], "G2M"].sum()
    )
    judged = agreement.loc[[*phases, "G2", "Prophase", "Metaphase"]].to_numpy().sum()
    print(f"agreement on G1, S, G2 and prophase-metaphase cells: {agree}/{judged} = {agree / judged:.1%}")
    print(removed.to_string())


def dna_edges(dna: np.ndarray) -> list[float]:
    """0, end of G1, end of S, beyond the brightest cell (the rule in the module docstring)."""
    dna = dna[np.isfinite(dna)]
    counts, bins = np.histogram(dna, bins=80)
    centres = (bins[:-1] + bins[1:]) / 2
    g1 = centres[counts.argmax()]
    upper = centres > 1.5 * g1
    g2 = centres[upper][counts[upper].argmax()]
    return [0.0, g1 + 0.25 * (g2 - g1), g1 + 0.75 * (g2 - g1), float(dna.max()) * 2]


def dna_strategy(edges: list[float]) -> str:
    gates = []
    for name, low, high in zip(("G1", "S", "G2M"), edges[:-1], edges[1:], strict=True):
        gates.append(
            f'<gating:RectangleGate gating:id="{name}">'
            f'<gating:dimension gating:min="{low}" gating:max="{high}" '
            'gating:compensation-ref="uncompensated">'
            f'<data-type:fcs-dimension data-type:name="{DNA}"/>'
            "</gating:dimension></gating:RectangleGate>\n"
        )
    return HEAD + "".join(gates) + "</gating:Gating-ML>\n"


if __name__ == "__main__":
    main()
