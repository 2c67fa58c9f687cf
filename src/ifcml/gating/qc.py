"""The ready-made quality strategy, as the paper gated before anything else: not debris (nor
clumps), single cells, in focus.

Its thresholds come from the cells by one rule, each gate's on the cells its parent kept:
median +/- ``mads`` x the scaled median absolute deviation (1.4826 x MAD, a standard deviation
for normal data). A lab overrides them by editing the GatingML file `ifcml qc` writes, or by
drawing its own on the FCS file; the file is a strategy like any other.

    cells     Cells_AreaShape_Area within median +/- k MAD      (debris is small, clumps large)
    single    Cells_Quality_AspectRatio >= median - k MAD       (doublets are long)
    in_focus  Cells_Quality_GradientRMS_<BF> >= median - k MAD  (blur softens edges)
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ifcml.features.quality import ASPECT_RATIO, gradient_rms_name
from ifcml.gating.strategy import StrategyError

AREA = "Cells_AreaShape_Area"
QC_POPULATION = "in_focus"  # the cells the QC strategy keeps: in all three gates
QC_COLUMNS = (AREA, ASPECT_RATIO, gradient_rms_name("BF"))  # what it reads (focus on bright-field)
MAD_SCALE = 1.4826


@dataclass(frozen=True)
class Threshold:
    gate: str
    column: str
    low: float | None
    high: float | None


def qc_thresholds(table: pd.DataFrame, focus_channel: str = "BF", mads: float = 3.0) -> list[Threshold]:
    """The three gates' limits from ``table`` by the rule above."""
    focus = gradient_rms_name(focus_channel)
    missing = [c for c in (AREA, ASPECT_RATIO, focus) if c not in table]
    if missing:
        raise StrategyError(
            f"the qc strategy needs {', '.join(missing)}: measure with the quality family on "
            "(features/default.yaml: measurements.quality) and the focus channel measured"
        )
    kept = table
    thresholds = []
    for gate, column, sides in (
        ("cells", AREA, "both"),
        ("single", ASPECT_RATIO, "low"),
        ("in_focus", focus, "low"),
    ):
        values = kept[column].to_numpy(np.float32).astype(np.float64)  # as FCS and FlowKit hold them
        values = values[np.isfinite(values)]
        if len(values) == 0:
            raise StrategyError(f"the qc strategy: no cell has a value of {column} to set gate {gate!r} from")
        median = float(np.median(values))
        spread = mads * MAD_SCALE * float(np.median(np.abs(values - median)))
        low = max(median - spread, 0.0)
        high = median + spread if sides == "both" else None
        thresholds.append(Threshold(gate, column, low, high))
        inside = kept[column].to_numpy(np.float32) >= low
        if high is not None:
            inside &= kept[column].to_numpy(np.float32) < high
        kept = kept[inside]
    return thresholds


def read_qc_columns(table: Path, focus_channel: str = "BF") -> pd.DataFrame:
    """The columns the QC rule reads, alone (a table's other columns can be gigabytes)."""
    import pyarrow.parquet as pq

    from ifcml.errors import InputError

    try:
        present = set(pq.read_schema(table).names)
        wanted = [c for c in (AREA, ASPECT_RATIO, gradient_rms_name(focus_channel)) if c in present]
        return pd.read_parquet(table, columns=wanted)
    except (OSError, ValueError) as exc:
        raise InputError(f"{table}: not a readable Parquet table ({exc})") from exc


def derive_qc_strategy(
    table: Path, out: Path, focus_channel: str = "BF", mads: float = 3.0
) -> list[Threshold]:
    """Set the thresholds from ``table``'s cells and write the strategy to ``out`` atomically
    (the caller holds ``out``'s claim)."""
    from ifcml.outputs import replace_atomically

    cells = read_qc_columns(table, focus_channel)
    thresholds = qc_thresholds(cells, focus_channel, mads)
    replace_atomically(out, lambda tmp: write_qc_strategy(thresholds, tmp, mads, len(cells)))
    return thresholds


def write_qc_strategy(thresholds: list[Threshold], out: Path, mads: float, cells: int) -> None:
    """The thresholds as a GatingML 2.0 file (written by FlowKit), with the rule in a comment."""
    import flowkit as fk

    strategy = fk.GatingStrategy()
    path: tuple[str, ...] = ("root",)
    for threshold in thresholds:
        dimension = fk.Dimension(threshold.column, range_min=threshold.low, range_max=threshold.high)
        strategy.add_gate(fk.gates.RectangleGate(threshold.gate, [dimension]), gate_path=path)
        path = (*path, threshold.gate)
    buffer = io.BytesIO()
    fk.export_gatingml(strategy, buffer)
    text = buffer.getvalue().decode()
    comment = (
        f"<!-- ifcml qc: thresholds from {cells} cells, each gate's median +/- {mads:g} x {MAD_SCALE} x MAD "
        f"of the cells its parent kept; edit them to override. The QC population is {QC_POPULATION!r}. -->\n"
    )
    head, _, body = text.partition("?>")
    out.write_text(f"{head}?>\n{comment}{body.lstrip()}" if body else comment + text)
