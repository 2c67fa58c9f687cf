"""How cells are divided into training and held-out sets, for both branches.

Every split holds out whole acquisition units (instances, patients, files) except stratified
k-fold, which mixes cells of one acquisition into training and test and so measures the
acquisition as much as the biology; :func:`confound_check` says when that happens.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold

from ifcml.cells import column
from ifcml.errors import InputError

SPLITS = (
    "leave-one-instance-out",
    "leave-one-group-out:<column>",
    "holdout:<instance>,...",
    "stratified-kfold:<k>",
)


@dataclass(frozen=True)
class Fold:
    """One evaluation: row positions to train on and to test on, and what was held out."""

    name: str
    train: np.ndarray
    test: np.ndarray


def make_folds(cells: pd.DataFrame, split: str, seed: int = 0) -> list[Fold]:
    """Folds over the rows of ``cells`` (a feature table or cells.parquet; columns with or
    without the ``Metadata_`` prefix) for a split named as in :data:`SPLITS`."""
    kind, _, argument = split.partition(":")
    if kind == "leave-one-instance-out":
        return list(_leave_one_group_out(column(cells, "instance")))
    if kind == "leave-one-group-out" and argument:
        return list(_leave_one_group_out(column(cells, argument)))
    if kind == "holdout" and argument:
        instances = column(cells, "instance")
        held = [name.strip() for name in argument.split(",") if name.strip()]
        unknown = sorted(set(held) - set(instances))
        if unknown:
            raise InputError(f"split {split!r}: no instance(s) {', '.join(unknown)} in the data")
        test = np.flatnonzero(instances.isin(held))
        return [Fold("+".join(held), np.flatnonzero(~instances.isin(held)), test)]
    if kind == "stratified-kfold" and argument.isdigit() and int(argument) >= 2:
        labels = column(cells, "label")
        folds = StratifiedKFold(int(argument), shuffle=True, random_state=seed).split(labels, labels)
        return [Fold(f"fold{k}", train, test) for k, (train, test) in enumerate(folds)]
    raise InputError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def _leave_one_group_out(groups: pd.Series) -> Iterator[Fold]:
    values = groups.astype(str).to_numpy()
    names = sorted(set(values))
    if len(names) < 2:
        raise InputError(
            f"cannot leave one {groups.name!r} out: all cells share {groups.name} = {names[0]!r}"
        )
    for name in names:
        yield Fold(name, np.flatnonzero(values != name), np.flatnonzero(values == name))


def limit_per_class(
    cells: pd.DataFrame, rows: np.ndarray, per_class: int, seed: int, draw: str
) -> np.ndarray:
    """At most ``per_class`` of ``rows`` per label: a learning curve's smaller training set.

    Every cell of ``cells`` gets a random key from (``seed``, ``draw``, e.g. the fold's name) and
    each class keeps its lowest keys, so the draw repeats exactly and a smaller size is a subset
    of every larger one (the curve's points are nested). The rows kept are sorted.
    """
    codes = pd.factorize(column(cells, "label").to_numpy()[rows])[0]
    keys = np.random.default_rng([seed, zlib.crc32(draw.encode())]).random(len(cells))[rows]
    order = np.lexsort((keys, codes))  # by class, then key
    ranked = codes[order]
    rank_in_class = np.arange(len(order)) - np.searchsorted(ranked, ranked, side="left")
    return np.sort(rows[order[rank_in_class < per_class]])


@dataclass(frozen=True)
class ConfoundReport:
    """How far labels are determined by acquisition units (instance, source file, montage)."""

    unit: str
    purity: float  # fraction of cells whose label is their unit's majority label
    single_unit_labels: list[str]  # labels that occur in one unit only
    n_units: int

    @property
    def confounded(self) -> bool:
        return self.n_units > 1 and (self.purity >= 0.95 or bool(self.single_unit_labels))

    def message(self) -> str:
        problem = (
            f"labels are (nearly) determined by {self.unit!r}: {self.purity:.0%} of cells carry their "
            f"{self.unit}'s majority label"
        )
        if self.single_unit_labels:
            problem += f"; {', '.join(self.single_unit_labels)} occur(s) in a single {self.unit} only"
        return (
            f"CONFOUNDED DESIGN: {problem}. Cross-validation inside these units measures the acquisition "
            f"(instrument settings, focus, staining of one {self.unit}), not the biology. Split across units "
            f"(leave-one-group-out:{self.unit}); labels seen in a single {self.unit} cannot be evaluated "
            "honestly at all: acquire each class in several units."
        )


MIN_UNIT_CELLS = 10  # a unit column whose typical unit holds fewer cells is not an acquisition


def confound_check(
    cells: pd.DataFrame, units: tuple[str, ...] = ("instance", "source")
) -> list[ConfoundReport]:
    """Reports for every unit column present whose cells' labels are confounded with it."""
    labels = column(cells, "label").astype(str)
    reports = []
    for unit in units:
        try:
            groups = column(cells, unit).astype(str)
        except InputError:
            continue
        if groups.value_counts().median() < MIN_UNIT_CELLS:  # e.g. one TIFF file per cell: not acquisitions
            continue
        crosstab = pd.crosstab(groups, labels)
        purity = float(crosstab.max(axis=1).sum() / crosstab.to_numpy().sum())
        single = sorted(str(label) for label in crosstab.columns if (crosstab[label] > 0).sum() == 1)
        report = ConfoundReport(unit, purity, single if len(crosstab) > 1 else [], len(crosstab))
        if report.confounded:
            reports.append(report)
    return reports
