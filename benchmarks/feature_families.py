"""Where a cell's measurement time goes: each family of the default recipe, ifcml's engine
against the cp-measure library's own functions, on the same real cells and objects, one core.

ifcml's time for a family is its engine (``measure_cells``) with only that family on, given
the cells' objects (the ``objects`` row: segmentation and expansion, the same for both; and
``quality``, ifcml's own, counted alike). The reference runs cp-measure's functions on the same
montages the engine builds, as ifcml's engine first ran them (granularity unsubsampled, as
ifcml measures it; the row "all but granularity" leaves out the family ifcml compiled first).
Cells are measured in batches of the recipe's ``chunk_cells``; each figure is the best of
``--repeats`` runs, in ms per cell. Both give the same values (tests/test_features.py,
tests/test_engines.py); only time is measured.

Usage: python benchmarks/feature_families.py [--cells 512] [--repeats 3] [--store PATH]
Results: printed as a table and written to benchmarks/results/feature_families.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from itertools import combinations
from pathlib import Path

import numpy as np
from cp_measure.core import (
    measurecolocalization,
    measuregranularity,
    measureobjectintensity,
    measureobjectintensitydistribution,
    measureobjectsizeshape,
    measuretexture,
)

from ifcml.features.measure import measure_cells
from ifcml.features.objects import cell_objects
from ifcml.features.quality import quality_columns
from ifcml.features.recipe import Measurements, Recipe
from ifcml.features.table import measure_images
from ifcml.features.tiling import Layout, tile, tile_labels
from ifcml.io.detect import open_source
from ifcml.io.store import CellStore, write_store

ROOT = Path(__file__).resolve().parents[1]
JURKAT = ROOT.parent / "shared" / "data" / "jurkat_ifc" / "Experiment_1"
CHANNELS = ["BF", "DF"]
FAMILIES = list(Measurements.model_fields)  # the recipe's families, in its order


def only(family: str) -> Recipe:
    """The default recipe with only ``family`` measured."""
    return Recipe(measurements=Measurements.model_validate({f: {"enabled": f == family} for f in FAMILIES}))


def reference_families(
    images: np.ndarray, objects: tuple[np.ndarray, np.ndarray], recipe: Recipe
) -> dict[str, Callable[[], object]]:
    """cp-measure's functions for every family, on the montages ifcml's engine builds from the
    cells' ``objects`` (Cells, CellsExpanded)."""
    cells, expanded = objects
    layout = Layout(len(images), *images.shape[2:], recipe.tile_padding)
    labels = {"Cells": tile_labels(cells, layout), "CellsExpanded": tile_labels(expanded, layout)}
    pixels = {ch: tile(images[:, k].astype(np.float64) / 65535, layout) for k, ch in enumerate(CHANNELS)}
    own = {
        ch: labels["CellsExpanded" if ch in recipe.objects.expanded_channels else "Cells"] for ch in CHANNELS
    }
    m = recipe.measurements

    def per_channel(function: Callable) -> Callable[[], object]:
        return lambda: [function(own[ch], pixels[ch]) for ch in CHANNELS]

    def correlation() -> None:
        for a, b in combinations(CHANNELS, 2):
            measurecolocalization.get_correlation_pearson(pixels[a], pixels[b], labels["Cells"])
            measurecolocalization.get_correlation_manders_fold(pixels[a], pixels[b], labels["Cells"], thr=15)
            measurecolocalization.get_correlation_rwc(pixels[a], pixels[b], labels["Cells"], thr=15)

    g, r = m.granularity, m.radial_distribution
    return {
        "sizeshape": lambda: (
            measureobjectsizeshape.get_sizeshape(labels["Cells"], None),
            measureobjectsizeshape.get_zernike(labels["Cells"], None, m.sizeshape.zernike_degree),
            measureobjectsizeshape.get_feret(labels["Cells"], None),
        ),
        "intensity": per_channel(measureobjectintensity.get_intensity),
        "texture": per_channel(lambda lab, px: measuretexture.get_texture(lab, px, 3, m.texture.gray_levels)),
        "granularity": per_channel(
            lambda lab, px: measuregranularity.get_granularity(
                lab, px, 1.0, 1.0, g.element_size, g.spectrum_length
            )
        ),
        "radial_distribution": per_channel(
            lambda lab, px: (
                measureobjectintensitydistribution.get_radial_distribution(lab, px, bin_count=r.bins),
                measureobjectintensitydistribution.get_radial_zernikes(lab, px, r.zernike_degree),
            )
        ),
        "correlation": correlation,
    }


def best_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--store", type=Path, help="a CellStore with BF and DF (default: the real Jurkat cells)"
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, [min(os.sched_getaffinity(0))])  # one core
    warnings.simplefilter("ignore", RuntimeWarning)  # cp-measure divides by zero for empty bins
    with tempfile.TemporaryDirectory() as tmp:
        if args.store is None:
            source = open_source(JURKAT, "montage", channels={3: "BF", 6: "DF"}, grid="30x30")
            store = write_store([source], Path(tmp) / "jurkat")
        else:
            store = CellStore(args.store)
        n = min(args.cells, store.n_cells)
        images = store.read(0, n, store.channel_indices(CHANNELS))
        sizes = store.cells[["height", "width"]].to_numpy()[:n]
    recipe = Recipe()
    step = recipe.chunk_cells
    batches = []
    for a in range(0, n, step):
        batch_images, batch_sizes = images[a : a + step], sizes[a : a + step]
        objects = cell_objects(batch_images, None, batch_sizes, CHANNELS, recipe)
        batches.append((batch_images, batch_sizes, objects))

    def ms_per_cell(run: Callable[[], object]) -> float:
        return best_seconds(run, args.repeats) * 1000 / n

    def ours(family: str) -> Callable[[], object]:
        if family == "quality":
            return lambda: [quality_columns(i, s, CHANNELS, cells) for i, s, (cells, _) in batches]
        return lambda: [measure_cells(i, CHANNELS, *objects, only(family)) for i, _, objects in batches]

    [ours(family)() for family in FAMILIES]  # compile and warm every kernel before timing
    segmentation = ms_per_cell(lambda: [cell_objects(i, None, s, CHANNELS, recipe) for i, s, _ in batches])
    rows = [{"family": "objects (segmentation)", "ifcml_ms": segmentation, "cp_measure_ms": segmentation}]
    references = [reference_families(i, objects, recipe) for i, _, objects in batches]
    for family in FAMILIES:
        mine = ms_per_cell(ours(family))
        if family == "quality":  # ifcml's own: no cp-measure counterpart, the same cost in both
            reference = mine
        else:
            reference = ms_per_cell(lambda f=family: [r[f]() for r in references])
        rows.append({"family": family, "ifcml_ms": mine, "cp_measure_ms": reference})
    total = ms_per_cell(lambda: [measure_images(i, None, s, CHANNELS, recipe) for i, s, _ in batches])
    reference_total = sum(row["cp_measure_ms"] for row in rows)
    granularity = next(row for row in rows if row["family"] == "granularity")
    rows.append({"family": "all (one call)", "ifcml_ms": total, "cp_measure_ms": reference_total})
    rows.append(
        {
            "family": "all but granularity",
            "ifcml_ms": total - granularity["ifcml_ms"],
            "cp_measure_ms": reference_total - granularity["cp_measure_ms"],
        }
    )
    print(f"{n} real cells, BF + DF, one core, best of {args.repeats}; ms per cell")
    print(f"{'family':32} {'ifcml':>8} {'cp-measure':>11} {'speed-up':>9}")
    for row in rows:
        row["speed_up"] = row["cp_measure_ms"] / row["ifcml_ms"] if row["ifcml_ms"] > 0 else float("nan")
        print(
            f"{row['family']:32} {row['ifcml_ms']:8.2f} {row['cp_measure_ms']:11.2f} {row['speed_up']:8.2f}x"
        )
    out = ROOT / "benchmarks" / "results" / "feature_families.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cells": n, "repeats": args.repeats, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
