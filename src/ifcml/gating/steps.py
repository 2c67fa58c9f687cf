"""Gates an experiment applies before training, and its exported models before their readout.

A spec's ``data.gates`` names strategies (a GatingML file, a FlowJo workspace, or ``qc``: the
ready-made QC strategy with thresholds from the experiment's cells, written once beside their
table) and the population of each whose cells are kept. Training sees only kept cells; the
strategy's text travels with every design into the exported model, so ``ifcml predict``
measures what the gates read, applies the same gates and reads out the kept cells only, saying
how many cells each gate removed, as the paper counted its readout on in-focus single cells.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ifcml.executors import Running
from ifcml.features.recipe import Recipe, outline_source
from ifcml.gating.apply import membership, parent_of
from ifcml.gating.qc import QC_COLUMNS, derive_qc_strategy
from ifcml.gating.strategy import Population, Strategy, StrategyError, load_strategy

QC = "qc"
GATE_COLUMN = "gate_"  # cells.csv: in that gate (and its ancestors)
REMOVED_PREFIX = "removed_by_"  # samples.csv: cells each gate removed
# a feature column's category (Object_Category_...) -> the recipe's measurement family
FAMILIES = {
    "AreaShape": "sizeshape",
    "Intensity": "intensity",
    "Texture": "texture",
    "Granularity": "granularity",
    "RadialDistribution": "radial_distribution",
    "Correlation": "correlation",
    "Quality": "quality",
}


@dataclass(frozen=True)
class Gating:
    """One resolved gate step: a strategy's text (it travels with models) and the kept population."""

    file_name: str
    text: str
    keep: str
    sample: str | None = None

    @cached_property
    def strategy(self) -> Strategy:
        with tempfile.TemporaryDirectory(prefix="ifcml-gates-") as folder:
            path = Path(folder) / self.file_name
            path.write_text(self.text)
            strategy = load_strategy(path, self.sample)
        strategy.population(self.keep)  # a kept population the strategy lacks fails here
        return strategy

    @property
    def chain(self) -> list[Population]:
        """The kept population and its ancestors, outermost first."""
        chain, population = [], self.strategy.population(self.keep)
        while population is not None:
            chain.insert(0, population)
            population = parent_of(population, self.strategy)
        return chain

    def to_dict(self) -> dict:
        return {"file_name": self.file_name, "text": self.text, "keep": self.keep, "sample": self.sample}

    @classmethod
    def from_dict(cls, given: dict) -> Gating:
        return cls(given["file_name"], given["text"], given["keep"], given.get("sample"))


def resolve(steps, table: Path | None) -> list[Gating]:
    """Gate steps (``strategy``, ``keep``, ``sample``) as texts; ``qc`` is derived from ``table``
    once and kept beside it as ``<table>.qc.xml`` (an edit there overrides the thresholds)."""
    resolved = []
    for step in steps:
        path = qc_path(table) if step.strategy == QC else Path(step.strategy)
        if step.strategy == QC and not path.exists():
            _write_qc(table, path)
        if not path.is_file():
            raise StrategyError(f"data.gates: {path}: no such gating strategy file")
        resolved.append(Gating(path.name, path.read_text(), step.keep, step.sample))
    return resolved


def qc_path(table: Path | None) -> Path:
    if table is None:
        raise StrategyError("data.gates: the qc strategy is set from a feature table, and there is none")
    return table.with_name(f"{table.stem}.qc.xml")


def _write_qc(table: Path, path: Path) -> None:
    from ifcml.outputs import claimed

    with claimed(path, wait=True):
        if not path.exists():  # another grid may have written it while this one waited
            derive_qc_strategy(table, path)


def strategy_columns(steps) -> set[str]:
    """The table columns the steps' strategies read (the qc strategy's are known in advance)."""
    columns = set()
    for step in steps:
        columns |= set(
            QC_COLUMNS if step.strategy == QC else load_strategy(Path(step.strategy), step.sample).dimensions
        )
    return columns


def chain_membership(table: pd.DataFrame, gatings: list[Gating], table_name: str) -> pd.DataFrame:
    """``gate_<name>``: one boolean column per population on the way to each kept population,
    outermost first (a cell is kept when it is in all of them)."""
    columns = {}
    for gating in gatings:
        members = membership(table, gating.strategy, table_name)
        for population in gating.chain:
            columns[GATE_COLUMN + population.name] = members[population.column].to_numpy()
    return pd.DataFrame(columns, index=table.index)


def removed_by_gate(chain: pd.DataFrame) -> dict[str, int]:
    """``removed_by_<gate>``: the cells each gate removed of those every earlier gate kept."""
    kept = np.ones(len(chain), bool)
    removed = {}
    for column in chain.columns:
        inside = kept & chain[column].to_numpy(bool)
        removed[REMOVED_PREFIX + column.removeprefix(GATE_COLUMN)] = int((kept & ~inside).sum())
        kept = inside
    return removed


def gate_columns(gatings: list[Gating]) -> list[str]:
    """The measured columns ``gatings`` read."""
    return sorted({c for g in gatings for c in g.strategy.dimensions})


def gate_store(
    store, gatings: list[Gating], workers: int = 1, measured: pd.DataFrame | None = None
) -> pd.DataFrame:
    """:func:`chain_membership` of every cell of a new sample's ``store``, in store order. What
    the gates read is ``measured`` (one row per store cell) when given, else measured first
    (only those measurement families and channels)."""
    from ifcml.features.table import read_features

    if measured is None:
        with tempfile.TemporaryDirectory(prefix="ifcml-gates-") as folder:
            out = Path(folder) / "gates.parquet"
            measured = read_features(measure_for(set(gate_columns(gatings)), store, out, Running(workers)))
    return chain_membership(measured, gatings, str(store.path)).reset_index(drop=True)


def measures_gate_columns(recipe: Recipe, engine: str, columns: list[str], has_masks: bool) -> bool:
    """Whether a table measured with ``recipe`` by ``engine`` on a store (with or without the
    instrument's masks) holds ``columns`` with the values :func:`gate_store` would measure
    there: the same engine, outlines, objects and tiles, and every family the columns come from
    enabled with the same settings."""
    gates = recipe_for(set(columns))
    apart = {"measurements", "pruning", "chunk_cells", "segmentation"}
    if engine != "cp-measure" or recipe.model_dump(exclude=apart) != gates.model_dump(exclude=apart):
        return False
    if _outlines(recipe, has_masks) != _outlines(gates, has_masks):
        return False
    toggles = {"enabled", "zernike_degree", "feret"}  # which columns appear, not their values
    for family in _families(columns):
        ours, theirs = getattr(recipe.measurements, family), getattr(gates.measurements, family)
        if not ours.enabled or ours.model_dump(exclude=toggles) != theirs.model_dump(exclude=toggles):
            return False
    return True


def _outlines(recipe: Recipe, has_masks: bool) -> dict:
    """The segmentation settings with the source the cells' outlines will come from ("auto"
    resolved for this store)."""
    return {**recipe.segmentation.model_dump(), "source": outline_source(recipe, has_masks)}


def measure_for(columns: set[str], store, out: Path, run: Running = Running()) -> Path:
    """Measure ``store`` into ``out`` with only the families and channels ``columns`` need
    (resuming an interrupted run)."""
    from ifcml.features.table import write_features

    recipe = recipe_for(columns)
    wanted = {recipe.segmentation.channel} | {token for c in columns for token in c.split("_")}
    channels = [c for c in store.channels if c in wanted]
    return write_features(store.path, out, recipe=recipe, channels=channels, run=replace(run, resume=True))


def _families(columns) -> set[str | None]:
    """The recipe's measurement families feature ``columns`` (Object_Category_...) come from."""
    return {FAMILIES.get(c.split("_")[1]) for c in columns if c.count("_") >= 2}


def recipe_for(columns: set[str]) -> Recipe:
    """The default recipe with only the measurement families ``columns`` come from: what a
    model that measures nothing else (a network) has to measure of new cells to gate them."""
    needed = _families(columns)
    base = Recipe()
    measurements = {
        name: {**getattr(base.measurements, name).model_dump(), "enabled": name in needed}
        for name in type(base.measurements).model_fields
    }
    shape = measurements["sizeshape"]
    shape["zernike_degree"] = shape["zernike_degree"] if any("Zernike" in c for c in columns) else 0
    shape["feret"] = shape["feret"] and any("Feret" in c for c in columns)
    return base.model_copy(update={"measurements": type(base.measurements).model_validate(measurements)})
