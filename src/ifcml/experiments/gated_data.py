"""The cells an experiment trains on when its spec gates them: labels from gated populations
(``data.labels_from``, the paper's ground truth from stained channels) and the populations kept
(``data.gates``, e.g. the QC strategy), both applied to one gating table.

The gating table is ``data.features`` when it has every column the strategies read; otherwise
``<store>.gating.parquet``, measured once beside the store with only the measurement families
and channels the gates need (a few intensities and shapes: seconds, not the full recipe).
Everything is keyed by the spec's JSON and computed once per process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from ifcml.cells import CELL, LABEL
from ifcml.executors import Running
from ifcml.experiments.spec import Data, ExperimentSpec
from ifcml.gating.apply import label_from, membership
from ifcml.gating.steps import Gating, chain_membership, measure_for, resolve, strategy_columns
from ifcml.gating.strategy import load_strategy


def is_gated(data: Data) -> bool:
    return bool(data.gates or data.labels_from)


def _needed(data: Data) -> set[str]:
    columns = strategy_columns(data.gates)
    if data.labels_from:
        columns |= set(load_strategy(Path(data.labels_from.strategy), data.labels_from.sample).dimensions)
    return columns


def gating_table(data: Data) -> Path:
    """Where the gates read their columns (see the module docstring)."""
    if data.features is not None and data.features.exists():
        if _needed(data) <= set(pq.read_schema(data.features).names):
            return data.features
    return data.store.with_name(f"{data.store.name}.gating.parquet")


def measure_gating_table(data: Data, run: Running = Running()) -> None:
    """Measure the gating table when the feature table does not serve (resumable)."""
    from ifcml.io.store import CellStore

    path = gating_table(data)
    if path != data.features and not path.exists():
        measure_for(_needed(data), CellStore(data.store), path, run)


@lru_cache(maxsize=4)
def gatings(spec_json: str) -> list[Gating]:
    """The spec's kept-population steps, resolved (``qc`` derived from the gating table)."""
    data = ExperimentSpec.model_validate_json(spec_json).data
    return resolve(data.gates, gating_table(data)) if data.gates else []


@lru_cache(maxsize=4)
def _table(spec_json: str) -> pd.DataFrame:
    """The cell ids and the columns the gates read (a feature table's others are not needed)."""
    data = ExperimentSpec.model_validate_json(spec_json).data
    return pd.read_parquet(gating_table(data), columns=[CELL, *sorted(_needed(data))])


@lru_cache(maxsize=4)
def kept_ids(spec_json: str) -> frozenset[int]:
    """The cells every kept population holds, by cell id."""
    table = _table(spec_json)
    kept = chain_membership(table, gatings(spec_json), "the gating table").all(axis=1).to_numpy()
    return frozenset(table[CELL].to_numpy()[kept].tolist())


@lru_cache(maxsize=4)
def gate_labels(spec_json: str) -> pd.Series:
    """Each cell's label from the label gates (cell id -> label; unlabelled cells absent)."""
    given = ExperimentSpec.model_validate_json(spec_json).data.labels_from
    strategy = load_strategy(Path(given.strategy), given.sample)
    table = _table(spec_json)
    members = membership(table, strategy, "the gating table")
    labels = label_from(members, strategy, given.gates).labels
    return pd.Series(labels.to_numpy(), index=table[CELL].to_numpy()).dropna()


def relabelled(spec_json: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """The cells table as the spec wants it: gate labels in place of the store's, then
    data.merge / data.labels, then only the kept cells."""
    spec = ExperimentSpec.model_validate_json(spec_json)
    data = spec.data

    def relabel(table: pd.DataFrame) -> pd.DataFrame:
        if data.labels_from:
            labels = gate_labels(spec_json)
            table = table.assign(**{LABEL: table[CELL].map(labels)}).dropna(subset=[LABEL])
        table = data.relabel(table, LABEL)
        return table[table[CELL].isin(kept_ids(spec_json))] if data.gates else table

    return relabel


def gating_digest(spec_json: str) -> str:
    """Names the gates and label gates the cells went through (part of a design's key)."""
    data = ExperimentSpec.model_validate_json(spec_json).data
    texts = [g.to_dict() for g in gatings(spec_json)]
    if data.labels_from:
        texts.append({"labels": data.labels_from.gates, "text": Path(data.labels_from.strategy).read_text()})
    return hashlib.sha256(repr(texts).encode()).hexdigest()[:12]


def gating_summary(spec: ExperimentSpec, store_labels: pd.Series) -> list[str]:
    """What the gates did to the experiment's cells, in words (``store_labels``: cell id -> the
    store's own label, to compare gate labels with)."""
    spec_json, data = spec.model_dump_json(), spec.data
    lines = []
    if data.labels_from:
        labels = gate_labels(spec_json)
        known = store_labels.reindex(labels.index).dropna()
        agree = f"; they agree with the store's labels for {(labels[known.index] == known).mean():.1%}"
        lines.append(
            f"labels from {Path(data.labels_from.strategy).name}: {len(labels)} of {len(store_labels)} cells "
            f"labelled{agree if len(known) else ''}"
        )
    if data.gates:
        kept = kept_ids(spec_json)
        steps = ", ".join(f"{g.file_name}:{g.keep}" for g in gatings(spec_json))
        lines.append(f"gates {steps} keep {len(kept)} of {len(_table(spec_json))} cells")
    return lines
