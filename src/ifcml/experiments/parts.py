"""The single-model designs a hybrid or a stack is made of, read onto one cells table.

Parts that read features read the feature table; parts that read crops read the store it was
measured from. All parts then share the feature table's usable cells (a cell whose outline was
not found has no features, so no composite can learn from it), so their folds, their training
rows and their held-out rows are the same cells.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from ifcml.cells import is_store
from ifcml.errors import InputError
from ifcml.experiments.classical_design import ClassicalDesign
from ifcml.experiments.design import Design, Relabel
from ifcml.experiments.network_design import NetworkDesign
from ifcml.experiments.results import Trained
from ifcml.features.recipe import Pruning
from ifcml.models.classical import ModelSpec
from ifcml.models.network_spec import NetworkSpec
from ifcml.models.saved import COMPOSITE


@dataclass(kw_only=True)
class CompositeDesign(Design):
    """A design made of single-model designs (:attr:`parts`); its model a
    :class:`~ifcml.models.composite.Composite`, whose input is cells, not one array."""

    @property
    @abstractmethod
    def parts(self) -> list[Design]:
        """The single-model designs it trains on its rows."""

    @property
    def flavor(self) -> str:
        return COMPOSITE

    def example(self, trained: Trained) -> None:
        return None

    def finished(self) -> None:
        for part in self.parts:
            part.finished()


@dataclass
class Parts:
    table: pd.DataFrame  # the usable cells every part trains and predicts on
    designs: list[Design]
    source: str
    digest: str
    channels: list[str]


def read_parts(
    data: Path,
    specs: list[ModelSpec | NetworkSpec],
    channels: list[str] | None,
    relabel: Relabel | None,
    pruning: Pruning,
    store: Path | None,
    owner: str,
) -> Parts:
    """Every spec's design on ``data`` (a feature table, or a store when no part reads
    features), network parts on ``store`` (or ``data`` itself when it is the store); ``owner``
    names the composite in errors and keeps its parts' checkpoints apart from other designs'."""
    classical = any(isinstance(spec, ModelSpec) for spec in specs)
    if classical and is_store(data):
        raise InputError(
            f"{data}: {owner} reads CellProfiler features: give the feature table (and its store)"
        )
    crops_from = data if is_store(data) else store
    if any(isinstance(spec, NetworkSpec) for spec in specs) and crops_from is None:
        raise InputError(f"{data}: {owner} reads crops too: give the store the table was measured from")
    designs: list[Design] = []
    for spec in specs:
        if isinstance(spec, ModelSpec):
            designs.append(ClassicalDesign.read(data, spec, channels, relabel, pruning))
        else:
            network = NetworkDesign.read(crops_from, spec, channels, relabel, pruning)
            designs.append(replace(network, checkpoint_root=network.checkpoint_root / owner))
    first = next((d for d in designs if isinstance(d, ClassicalDesign)), designs[0])
    for design in designs:
        if design.digest[:12] != first.digest[:12]:  # both begin with the store's image hash
            raise InputError(
                f"{design.source} and {first.source}: not the same cells (the feature table was "
                "measured from another store)"
            )
    table = first.table
    return Parts(
        table, [replace(d, table=table) for d in designs], first.source, first.digest, first.channels
    )


def parts_inputs(designs: list[Design], kind: str) -> dict | None:
    """What the composite reads of a raw cell: every channel its parts read (None when a part
    cannot say how it reads a raw cell, e.g. a table of an older ifcml)."""
    if any(d.inputs is None for d in designs):
        return None
    channels = list(dict.fromkeys(c for d in designs for c in d.inputs["channels"]))
    return {"kind": kind, "channels": channels}
