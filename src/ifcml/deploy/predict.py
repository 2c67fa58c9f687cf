"""``ifcml predict``: an exported model on new samples, per cell and per sample.

``cells.csv``: one row per cell (store columns, ``predicted``, class probabilities).
``samples.csv``: one row per instance (sample): cells, cells classified, the fraction of each
class among classified cells and, when the model's readout class (``positive``, e.g. leukemic)
is among its classes, that fraction and its call against the cutoff (25 %, the paper's
treatment-intensity line). Where the cells carry reference labels, the reference fractions
are written beside the predicted ones.

When the model carries its design's held-out error rates (models exported by this ifcml), the
fraction is also corrected for the classifier's errors (:mod:`ifcml.readout`: adjusted
classify-and-count, probabilistic where the model has probabilities) with a 95 % interval, and
the 25 % and 10 % calls are taken on that interval: above, below or undecided.

A model whose experiment gated its cells (``data.gates``, e.g. the QC strategy) gates new
cells the same way: ``cells.csv`` gets a ``gate_<name>`` column per gate on the way to each
kept population, and the readout counts the kept cells only (as the paper counted in-focus
single cells); ``samples.csv`` says how many cells each gate removed (``removed_by_<gate>``)
and how many were ``kept``.

A sample with fewer classified cells than ``min_cells`` gets no call (an empty cell in the
CSV) and its reason in ``no_call``, never False: with 100 cells the 95 % binomial interval of a
25 % fraction is already 17-34 %, and a sample whose cells were not found is not a negative.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ifcml.cells import is_store
from ifcml.deploy.model_folder import check_exported
from ifcml.errors import InputError
from ifcml.gating.steps import (
    GATE_COLUMN,
    Gating,
    gate_columns,
    gate_store,
    measures_gate_columns,
    removed_by_gate,
)
from ifcml.io.ingest import Reading, ingest_sources
from ifcml.io.store import CellStore
from ifcml.outputs import claimed, replace_atomically
from ifcml.progress import Bars, no_bars
from ifcml.readout import CUTOFFS, ErrorRates, class_fractions, estimate

CUTOFF = CUTOFFS[0]  # the classify-and-count call's line (the paper's 25 %)
MIN_CELLS = 100  # classified cells a call needs (see the module docstring)


@dataclass
class ModelCard:
    """What an exported model says about itself (its MLmodel metadata)."""

    classes: list[str]
    channels: list[str]
    positive: str | None
    summary: str
    rates: ErrorRates | None = None  # the design's held-out error rates for ``positive``
    gatings: list[Gating] = field(default_factory=list)  # gates applied before the readout


def model_card(model_dir: Path) -> ModelCard:
    """What the exported model at ``model_dir`` says (checked: see :mod:`ifcml.deploy.model_folder`)."""
    if not (Path(model_dir) / "MLmodel").is_file():
        raise InputError(f"{model_dir}: not an exported model (no MLmodel file; `ifcml export` makes one)")
    meta = check_exported(model_dir)
    summary = (
        f"{meta['model']} on {meta['channel_set']} from experiment {meta['experiment']} "
        f"({meta['metric']} {meta['metric_value']:.3f})"
    )
    positive, readout = meta.get("positive"), meta.get("readout")
    rates = (
        ErrorRates.from_dict(readout) if positive and readout and readout["positive"] == positive else None
    )
    gatings = [Gating.from_dict(g) for g in meta["inputs"].get("gates", [])]
    if gatings:
        summary += f"; gates {', '.join(f'{g.file_name}:{g.keep}' for g in gatings)}"
    return ModelCard(
        list(meta["classes"]), list(meta["inputs"]["channels"]), positive, summary, rates, gatings
    )


@contextmanager
def stores_for(
    paths: Sequence[Path],
    card: ModelCard,
    reading: Reading,
    scratch: Path,
    bars: Bars = no_bars,
) -> Iterator[list[CellStore]]:
    """The sources as stores: CellStores as they are, every other source (``ingest``'s formats,
    read as ``reading`` says) ingested together into a temporary store under ``scratch``."""
    stores = [CellStore(p) for p in paths if is_store(p)]
    others = [p for p in paths if not is_store(p)]
    if others:
        _check_channel_names(card, reading.channels)
    sources = [reading.open(p) for p in others]  # every source planned before anything is written
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".ingest-") as tmp:
        if sources:
            stores.append(ingest_sources(sources, Path(tmp) / "cells.store", bars=bars))
        yield stores


def _check_channel_names(card: ModelCard, channel_map: dict[int, str] | None) -> None:
    """Before reading anything: will the ingested store have the channels the model reads?"""
    names = set(channel_map.values()) if channel_map else None
    missing = [c for c in card.channels if (c not in names if names else not re.fullmatch(r"Ch\d+", c))]
    if missing:
        given = f"--channels names {', '.join(sorted(names))}" if names else "without --channels: Ch<k>"
        raise InputError(
            f"the model reads {', '.join(card.channels)}; {given}: name the instrument channels, "
            f"e.g. --channels 1:{card.channels[0]}"
        )


def write_predictions(
    model_dir: Path,
    stores: Sequence[CellStore],
    out: Path,
    workers: int = 1,
    on_cells: Callable[[int], None] | None = None,
    min_cells: int = MIN_CELLS,
) -> pd.DataFrame:
    """``cells.csv`` and ``samples.csv`` in ``out`` (refused if either exists); returns the samples."""
    with claimed(out):
        return _predict_into(model_card(model_dir), model_dir, stores, out, workers, on_cells, min_cells)


def _predict_into(
    card: ModelCard,
    model_dir: Path,
    stores: Sequence[CellStore],
    out: Path,
    workers: int,
    on_cells: Callable[[int], None] | None,
    min_cells: int,
) -> pd.DataFrame:
    targets = [out / "cells.csv", out / "samples.csv"]
    existing = [str(p) for p in targets if p.exists()]
    if existing:
        raise InputError(f"{', '.join(existing)}: already exist(s); predict into another --out")
    from ifcml.deploy.predictors import FeaturePredictor
    from ifcml.deploy.pyfunc import open_exported  # mlflow: seconds to import

    classifier = open_exported(model_dir)
    predictor = classifier.predictor
    columns = gate_columns(card.gatings)
    parts = []
    for store in stores:
        measured_once = isinstance(predictor, FeaturePredictor) and measures_gate_columns(
            predictor.recipe, predictor.engine, columns, has_masks=store.masks is not None
        )  # the gates read what the model measures anyway: measure each cell once
        kept = columns if measured_once else []
        predicted = classifier.predict_store(store, workers, on_cells, keep=kept)
        if card.gatings:
            gates = gate_store(store, card.gatings, workers, predicted[kept] if measured_once else None)
            predicted = pd.concat([predicted.drop(columns=kept), gates], axis=1)
        parts.append(predicted)
    cells = pd.concat(parts, ignore_index=True)
    if cells["label"].isna().all():
        cells = cells.drop(columns=["label"])
    samples = sample_readout(cells, card, min_cells)
    out.mkdir(parents=True, exist_ok=True)
    for table, path in ((cells, targets[0]), (samples, targets[1])):
        replace_atomically(path, lambda tmp, table=table: table.to_csv(tmp, index=False))
    return samples


def sample_readout(cells: pd.DataFrame, card: ModelCard, min_cells: int = MIN_CELLS) -> pd.DataFrame:
    """One row per instance (see the module docstring)."""
    rows = []
    gates = [c for c in cells.columns if c.startswith(GATE_COLUMN)]
    for k, (instance, part) in enumerate(cells.groupby("instance", sort=True)):
        row = {"instance": instance, "cells": len(part)}
        if gates:  # the readout counts the cells every gate kept
            row |= removed_by_gate(part[gates])
            part = part[part[gates].all(axis=1)]
            row["kept"] = len(part)
        classified = part[part["predicted"].notna()]
        row["classified"] = len(classified)
        row |= class_fractions(classified["predicted"], card.classes, "fraction_")
        if "label" in part and part["label"].notna().any():
            row |= class_fractions(part["label"], card.classes, "reference_fraction_")
        if card.positive:
            row |= _positive_readout(classified, card, min_cells, seed=k)
        rows.append(row)
    return pd.DataFrame(rows)


def _positive_readout(classified: pd.DataFrame, card: ModelCard, min_cells: int, seed: int) -> dict:
    """The readout class's fraction (classify-and-count and, with the design's error rates,
    corrected with its interval) and the calls, or no call below ``min_cells``."""
    positive, enough = card.positive, len(classified) >= min_cells
    fraction = class_fractions(classified["predicted"], [positive], "")[positive]
    row = {
        f"{positive}_fraction": fraction,
        f"{positive}_at_or_above_{CUTOFF:.0%}".replace("%", "pct"): fraction >= CUTOFF if enough else None,
    }
    if card.rates is not None:
        probability = classified.get(f"probability_{positive}")
        result = estimate(classified["predicted"].to_numpy() == positive, card.rates, probability, seed)
        row |= {
            f"{positive}_fraction_corrected": result.corrected,
            f"{positive}_fraction_low": result.low,
            f"{positive}_fraction_high": result.high,
            "correction": result.method,
        }
        for cutoff in CUTOFFS:
            row[f"{positive}_call_{cutoff:.0%}".replace("%", "pct")] = result.call(cutoff) if enough else None
    row["no_call"] = (
        "" if enough else f"{len(classified)} classified cell(s), fewer than --min-cells {min_cells}"
    )
    return row
