"""The cells table every floor shares: its column names, which cells are usable, and balancing.

A cells table is a CellStore's ``cells.parquet`` (plain names) or a feature table (``Metadata_``
names first, then features). Both branches read cells through these names, so the helpers here
accept either spelling. Nothing here imports from ifcml: every floor may import it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ifcml.errors import InputError

# height and width: each cell image's true size (an exported model brings new cells to the
# training's tile size when every training cell had the same one)
METADATA = [
    "cell_id", "instance", "patient", "timepoint", "label", "object_number", "source", "height", "width",
]  # fmt: skip
CELL, INSTANCE, LABEL = "Metadata_cell_id", "Metadata_instance", "Metadata_label"
FAILED = "Metadata_segmentation_failed"


def metadata_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("Metadata_")]


def feature_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if not c.startswith("Metadata_")]


def with_metadata_names(cells: pd.DataFrame) -> pd.DataFrame:
    """A store's cells.parquet under the feature table's ``Metadata_`` names."""
    return cells.rename(columns=lambda column: f"Metadata_{column}")


def column(cells: pd.DataFrame, name: str) -> pd.Series:
    """Column ``name`` of either spelling of the cells table (``Metadata_name`` or ``name``)."""
    for found in (f"Metadata_{name}", name):
        if found in cells.columns:
            return cells[found].rename(name)
    raise InputError(f"no column {name!r} (or Metadata_{name}) in the data")


def usable_cells(table: pd.DataFrame) -> pd.DataFrame:
    """Labelled cells whose outline was found (when segmentation was part of the job), renumbered."""
    keep = table[LABEL].notna()
    if FAILED in table:
        keep &= ~table[FAILED].astype(bool)
    return table[keep].reset_index(drop=True)


def undersample_per_instance(cells: pd.DataFrame, rows: np.ndarray, seed: int) -> np.ndarray:
    """The paper's balancing: within each instance, every class cut to that instance's rarest.

    Classes absent from an instance do not count; the rows kept are sorted.
    """
    rng = np.random.default_rng(seed)
    table = pd.DataFrame(
        {
            "instance": column(cells, "instance").to_numpy()[rows],
            "label": column(cells, "label").to_numpy()[rows],
            "row": rows,
        }
    )
    kept = []
    for _, part in table.groupby("instance", sort=True):
        size = part["label"].value_counts().min()
        for _, group in part.groupby("label", sort=True):
            kept.append(rng.choice(group["row"].to_numpy(), size, replace=False))
    return np.sort(np.concatenate(kept)) if kept else rows[:0]


def is_store(path: Path | str) -> bool:
    """Whether ``path`` looks like a CellStore (a folder with ``meta.json``)."""
    return (Path(path) / "meta.json").is_file()
