"""`ifcml fcs`: a cells table as an FCS 3.1 file (written by flowio), so cytometrists can gate
ifcml's cells in FlowJo or FlowKit and bring the gates back with `ifcml gate`.

Every numeric column becomes a parameter whose $PnN is the column's name (booleans as 0/1),
the cell id among them, so a GatingML file or workspace drawn on the FCS file names the
table's own columns. FCS list-mode floats are 32-bit (flowio writes no other type): the cell
id is exact up to 2^24 cells, and `ifcml gate` gates the table through the same 32-bit values.
"""

from __future__ import annotations

import math
import warnings
from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ifcml import __version__
from ifcml.cells import CELL
from ifcml.errors import IfcmlNotice, InputError
from ifcml.features.table import read_features
from ifcml.outputs import replace_atomically, writing

MARK = "IFCML_TABLE"  # keyword naming the table an FCS file was written from (its file name:
# flowio 1.4 reads back no value holding its "/" delimiter)
LARGEST_EXACT_ID = 2**24  # float32 holds every integer up to here


@dataclass(frozen=True)
class FcsExport:
    cells: int
    parameters: list[str]


def write_fcs(source: Path, out: Path, overwrite: bool = False) -> FcsExport:
    """Write the numeric columns of ``source`` (a cells table) to ``out`` (FCS 3.1)."""
    table = read_features(source)
    parameters = numeric_columns(table)
    if table[CELL].to_numpy().max(initial=0) > LARGEST_EXACT_ID:
        raise InputError(
            f"{source}: cell ids above {LARGEST_EXACT_ID:,} cannot be exact in FCS's 32-bit floats; "
            "write the cells of one instance at a time"
        )
    values = table[parameters].to_numpy(np.float32)
    _notice_missing(values, parameters, source)
    with writing(out, overwrite, _is_ifcml_fcs, "an FCS file ifcml wrote"):
        replace_atomically(out, lambda tmp: _write(tmp, values, parameters, source, out.name))
    return FcsExport(len(table), parameters)


def numeric_columns(table: pd.DataFrame) -> list[str]:
    """Numeric columns that hold a value (a metadata column no cell has, such as the patient
    of an unannotated acquisition, is not a parameter)."""
    return [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c]) and table[c].notna().any()]


def _notice_missing(values: np.ndarray, parameters: list[str], source: Path) -> None:
    missing = np.isnan(values).sum(axis=0)
    if missing.any():
        worst = parameters[int(missing.argmax())]
        warnings.warn(
            f"{source}: {int(missing.sum())} values are NaN (measurements a cell could not give, "
            f"most in {worst}); FCS keeps them as NaN, which no gate contains",
            IfcmlNotice,
            stacklevel=2,
        )


def _write(path: Path, values: np.ndarray, parameters: list[str], source: Path, name: str) -> None:
    import flowio

    finite = np.where(np.isfinite(values), np.abs(values), 0)
    keywords = {"$FIL": name, "$SYS": f"ifcml {__version__}", MARK: source.name}
    for number, top in enumerate(finite.max(axis=0, initial=0), start=1):
        keywords[f"$P{number}R"] = str(max(1, math.ceil(float(top))))  # the display range FlowJo starts from
    events = array("f")
    events.frombytes(np.ascontiguousarray(values).tobytes())
    with path.open("wb") as handle:
        flowio.create_fcs(handle, events, channel_names=parameters, metadata_dict=keywords)


def _is_ifcml_fcs(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            head = handle.read(65536)
    except OSError:
        return False
    return head.startswith(b"FCS3.1") and MARK.encode() in head
