"""The reference for the cp-measure engine's speed: cp-measure's own functions, run over a
store's first N cells as ifcml's engine first ran them (chunk by chunk; the same objects,
montages, families and quality columns; granularity unsubsampled), without writing a table.
``features_throughput.py`` times it in a child process like the real command.

Usage: python benchmarks/reference_engine.py STORE CELLS
"""

from __future__ import annotations

import sys
import warnings

from feature_families import CHANNELS, FAMILIES, reference_families
from ifcml.features.objects import cell_objects
from ifcml.features.quality import quality_columns
from ifcml.features.recipe import Recipe
from ifcml.io.store import CellStore


def main() -> None:
    store, cells = CellStore(sys.argv[1]), int(sys.argv[2])
    recipe = Recipe()
    warnings.simplefilter("ignore", RuntimeWarning)  # cp-measure divides by zero for empty bins
    for start in range(0, min(cells, store.n_cells), recipe.chunk_cells):
        stop = min(start + recipe.chunk_cells, cells, store.n_cells)
        images = store.read(start, stop, store.channel_indices(CHANNELS))
        sizes = store.cells[["height", "width"]].to_numpy()[start:stop]
        objects = cell_objects(images, None, sizes, CHANNELS, recipe)
        families = reference_families(images, objects, recipe)
        for family in FAMILIES:
            if family in families:
                families[family]()
        quality_columns(images, sizes, CHANNELS, objects[0])


if __name__ == "__main__":
    main()
