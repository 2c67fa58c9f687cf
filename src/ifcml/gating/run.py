"""`ifcml gate` and `ifcml qc` as library calls: read a table (measuring a CellStore first),
gate it or derive the QC strategy from it, and write the result atomically, keeping the
table's provenance."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ifcml.cells import CELL, LABEL, is_store
from ifcml.errors import IfcmlNotice, InputError
from ifcml.executors import Running
from ifcml.features.table import table_manifest, write_features
from ifcml.gating.apply import (
    CHUNK_CELLS,
    LABEL_SOURCE,
    Labelled,
    counts,
    gated_table,
    label_from,
    membership,
    warn_empty,
)
from ifcml.gating.plots import draw_gates
from ifcml.gating.qc import Threshold, derive_qc_strategy
from ifcml.gating.strategy import Strategy, load_strategy
from ifcml.io.store import CellStore
from ifcml.outputs import is_ifcml_table, replace_atomically, writing


@dataclass(frozen=True)
class GateRun:
    """What `ifcml gate` did: FlowJo's counts table, and the labels' gaps when asked."""

    strategy: Strategy
    counts: pd.DataFrame
    labelled: Labelled | None
    table: Path  # the table that was gated (the measured one, for a store)


@dataclass(frozen=True)
class Gallery:
    """Where ``gate_file`` draws each gate (``folder``), and the CellStore its example cells
    come from (``images``; by default the gated source, when it is a store)."""

    folder: Path
    images: Path | None = None


def gate_file(
    source: Path,
    gates: Path,
    out: Path,
    *,
    label_gates: Sequence[str] = (),
    sample: str | None = None,
    plots: Gallery | None = None,
    run: Running = Running(),
) -> GateRun:
    """Gate ``source`` (a cells table, or a CellStore measured first, as ``run`` says) with
    ``gates`` (``sample``'s strategy, in a FlowJo workspace) into ``out``; label cells by
    ``label_gates``; draw each gate in ``plots``."""
    strategy = load_strategy(gates, sample)
    folder = plots.folder if plots else None
    if folder is not None and folder.exists() and any(folder.iterdir()) and not run.overwrite:
        raise InputError(f"--plots {folder}: already holds files; choose another folder or pass --overwrite")
    with writing(out, run.overwrite, is_ifcml_table, "an ifcml cells table"):
        table_path = _measured(source, out, run) if is_store(source) else source
        view = _gating_view(table_path, strategy)
        members = membership(view, strategy, str(table_path))
        labelled = label_from(members, strategy, label_gates) if label_gates else None
        warn_empty(members, strategy, str(table_path))
        replace_atomically(out, lambda tmp: _write_gated(table_path, members, labelled, strategy, tmp))
    if plots is not None:
        store = _images_of(table_path, plots.images or (source if is_store(source) else None))
        draw_gates(view, members, strategy, plots.folder, store)
    return GateRun(strategy, counts(members, strategy), labelled, table_path)


def _gating_view(path: Path, strategy: Strategy) -> pd.DataFrame:
    """The cell ids and the columns the gates read: all gating needs, a sliver of the table."""
    if not Path(path).is_file():
        raise InputError(f"{path}: no such cells table (make one with `ifcml features`)")
    try:
        names = pq.read_schema(path).names
    except Exception as exc:  # pyarrow raises several kinds for a damaged or foreign file
        raise InputError(f"{path}: not a readable Parquet table ({exc})") from exc
    if CELL not in names:
        raise InputError(f"{path}: not an ifcml cells table (no {CELL} column)")
    strategy.check_columns(names, path)
    try:
        return pd.read_parquet(path, columns=[CELL, *strategy.dimensions])
    except Exception as exc:
        raise InputError(f"{path}: not a readable Parquet table ({exc})") from exc


def _images_of(table: Path, store_path: Path | None) -> CellStore | None:
    """The store whose cells the table measured (checked by its images' hash)."""
    if store_path is None:
        return None
    store = CellStore(store_path)
    if table_manifest(table).get("store_images_sha256") != store.meta["images_sha256"]:
        raise InputError(f"--store {store_path}: not the store {table} was measured from")
    return store


def qc_file(
    source: Path,
    out: Path,
    *,
    focus_channel: str = "BF",
    mads: float = 3.0,
    run: Running = Running(),
) -> list[Threshold]:
    """Write the ready-made QC strategy with thresholds from ``source``'s cells (see
    :mod:`ifcml.gating.qc`)."""
    with writing(out, run.overwrite, _is_qc_strategy, "a QC strategy ifcml wrote"):
        table = _measured(source, out, run) if is_store(source) else source
        return derive_qc_strategy(table, out, focus_channel, mads)


def _is_qc_strategy(path: Path) -> bool:
    return path.is_file() and "<!-- ifcml qc:" in path.read_text(errors="replace")[:2000]


def _measured(store_path: Path, out: Path, run: Running) -> Path:
    """The store's feature table beside ``out``: measured once (on ``run``'s workers), reused
    when it is this store's."""
    features = out.with_name(f"{out.stem}.features.parquet")
    digest = CellStore(store_path).meta["images_sha256"]
    if features.exists():
        if table_manifest(features).get("store_images_sha256") != digest:
            raise InputError(
                f"{features}: measured from another store than {store_path}; move it away to measure again"
            )
        return features
    return write_features(
        store_path, features, run=Running(run.workers, run.scheduler, on_cells=run.on_cells)
    )


def _write_gated(source: Path, members: pd.DataFrame, labelled, strategy: Strategy, path: Path) -> None:
    """The source table, a chunk of rows at a time, with the gate columns (and labels) added:
    memory stays flat with the number of cells. The table's ifcml provenance is kept and the
    strategy that gated it added."""
    parquet = pq.ParquetFile(source)
    replaced = [c for c in members.columns if c in parquet.schema_arrow.names]
    if replaced:
        warnings.warn(
            f"replacing {len(replaced)} gate columns {source} already had", IfcmlNotice, stacklevel=2
        )
    schema = _gated_schema(parquet.schema_arrow, replaced, members, labelled is not None)
    metadata = {k: v for k, v in (parquet.schema_arrow.metadata or {}).items() if k != b"pandas"}
    metadata[b"ifcml_gating"] = json.dumps(
        {"strategy": str(strategy.source.resolve()), "gates": [p.column for p in strategy.populations]}
    ).encode()
    schema = schema.with_metadata(metadata)
    start = 0
    with pq.ParquetWriter(path, schema) as writer:
        for batch in parquet.iter_batches(batch_size=CHUNK_CELLS):
            rows = slice(start, start + batch.num_rows)
            labels = None if labelled is None else labelled.labels.iloc[rows].reset_index(drop=True)
            part = gated_table(batch.to_pandas(), members.iloc[rows].reset_index(drop=True), labels)
            writer.write_table(
                pa.Table.from_pandas(part, preserve_index=False).select(schema.names).cast(schema)
            )
            start += batch.num_rows


def _gated_schema(source: pa.Schema, replaced: list[str], members: pd.DataFrame, labelled: bool) -> pa.Schema:
    fields = [f for f in source if f.name not in replaced] + [
        pa.field(c, pa.bool_()) for c in members.columns
    ]
    if labelled:
        names = [f.name for f in fields]
        if LABEL in names and LABEL_SOURCE not in names:
            fields.append(pa.field(LABEL_SOURCE, source.field(LABEL).type))
        fields = [f for f in fields if f.name != LABEL] + [pa.field(LABEL, pa.string())]
    return pa.schema(fields)
