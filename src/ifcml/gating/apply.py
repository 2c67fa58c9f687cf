"""Apply a gating strategy to a cells table: one boolean column per population, counts as
FlowJo shows them, and labels from chosen populations.

FlowKit gates the cells, a chunk at a time (gates, transforms and compensation act on each
cell alone, so chunks change nothing and keep memory bounded). FlowKit takes a table's values
through FCS's 32-bit floats, as it would read them from the file `ifcml fcs` writes, so a
strategy drawn on that file gives the same cells here.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ifcml.cells import LABEL
from ifcml.errors import IfcmlNotice
from ifcml.gating.strategy import Population, Strategy, StrategyError

CHUNK_CELLS = 50_000
LABEL_SOURCE = "Metadata_label_source"
COUNT_COLUMNS = ["gate", "parent", "count", "% of parent", "% of all"]


@dataclass(frozen=True)
class Labelled:
    """Labels taken from populations, and how many cells got none."""

    labels: pd.Series
    in_none: int
    in_several: int


def membership(table: pd.DataFrame, strategy: Strategy, table_name: str) -> pd.DataFrame:
    """One boolean column per population (in the gate and all its ancestors), row for row."""
    import flowkit as fk

    strategy.check_columns(list(table.columns), table_name)
    _check_numeric(table, strategy, table_name)
    columns = list(strategy.dimensions)
    parts = []
    for start in range(0, len(table), CHUNK_CELLS):
        values = table[columns].iloc[start : start + CHUNK_CELLS].astype(np.float64)
        results = strategy.gating.gate_sample(fk.Sample(values, sample_id=table_name))
        parts.append(
            pd.DataFrame(
                {p.column: results.get_gate_membership(p.name, p.path_text) for p in strategy.populations}
            )
        )
    members = pd.concat(parts, ignore_index=True) if parts else _no_members(strategy)
    members.index = table.index
    return members


def _no_members(strategy: Strategy) -> pd.DataFrame:
    return pd.DataFrame({p.column: np.zeros(0, bool) for p in strategy.populations})


def _check_numeric(table: pd.DataFrame, strategy: Strategy, table_name: str) -> None:
    for column in strategy.dimensions:
        if not pd.api.types.is_numeric_dtype(table[column]) or pd.api.types.is_bool_dtype(table[column]):
            raise StrategyError(
                f"{strategy.source}: a gate reads column {column!r}, which is not numeric in {table_name} "
                f"({table[column].dtype})"
            )


def counts(members: pd.DataFrame, strategy: Strategy) -> pd.DataFrame:
    """gate, parent, count, % of parent, % of all: FlowJo's table."""
    total = len(members)
    rows = []
    for population in strategy.populations:
        count = int(members[population.column].sum())
        parent = parent_of(population, strategy)
        parent_count = total if parent is None else int(members[parent.column].sum())
        rows.append(
            [
                population.name,
                population.parent if parent is None else parent.name,
                count,
                _percent(count, parent_count),
                _percent(count, total),
            ]
        )
    return pd.DataFrame(rows, columns=COUNT_COLUMNS)


def parent_of(population: Population, strategy: Strategy) -> Population | None:
    """The population a gate's cells are counted in (None: all cells)."""
    for candidate in strategy.populations:
        if (*candidate.path, candidate.name) == population.path:
            return candidate
    return None


def _percent(count: int, of: int) -> float:
    return round(100.0 * count / of, 2) if of else float("nan")


def warn_empty(members: pd.DataFrame, strategy: Strategy, table_name: str) -> None:
    """A valid gate that holds none of these cells is worth a notice, not an error."""
    for population in strategy.populations:
        if len(members) and not members[population.column].any():
            warnings.warn(
                f"gate {population.name!r} holds none of the {len(members)} cells of {table_name}",
                IfcmlNotice,
                stacklevel=2,
            )


def label_from(members: pd.DataFrame, strategy: Strategy, gate_names: Sequence[str]) -> Labelled:
    """Each cell's label: the one population of ``gate_names`` it lies in (none when it lies
    in none of them, or in several)."""
    populations = [strategy.population(name) for name in gate_names]
    _check_disjoint_by_design(populations, strategy)
    inside = members[[p.column for p in populations]].to_numpy()
    hits = inside.sum(axis=1)
    names = np.array([p.name for p in populations], dtype=object)
    labels = np.where(hits == 1, names[inside.argmax(axis=1)] if len(names) else None, None)
    return Labelled(
        pd.Series(labels, index=members.index, dtype=object), int((hits == 0).sum()), int((hits > 1).sum())
    )


def _check_disjoint_by_design(populations: list[Population], strategy: Strategy) -> None:
    """Label gates nested in one another would label no cell: refuse them."""
    for population in populations:
        if populations.count(population) > 1:
            raise StrategyError(f"{strategy.source}: label gate {population.name!r} is named twice")
        for other in populations:
            if other is not population and other.name in population.path[1:]:
                raise StrategyError(
                    f"{strategy.source}: label gates {other.name!r} and {population.name!r} overlap: "
                    f"{population.name!r} lies inside {other.name!r}, so its cells would be in both"
                )


def gated_table(table: pd.DataFrame, members: pd.DataFrame, labels: pd.Series | None) -> pd.DataFrame:
    """The table with its population columns (replacing earlier ones of the same names) and,
    with ``labels``, the new ``Metadata_label`` (the earlier one kept as the source)."""
    replaced = [c for c in members.columns if c in table.columns]
    out = pd.concat([table.drop(columns=replaced), members.set_index(table.index)], axis=1)
    if labels is not None:
        if LABEL in out and LABEL_SOURCE not in out:
            out[LABEL_SOURCE] = out[LABEL]
        out[LABEL] = labels.set_axis(table.index)
    return out
