"""Experiment specs (``experiments/*.yaml``): the data, the models, the channel sets, the split.

Validated by pydantic: unknown or misspelt keys are errors naming the file and the key's path.
Relative paths are taken from the folder the command runs in (the repository root for the
shipped specs). Models are names in ``models/`` or paths, each optionally with settings that
override its spec (validated with it): a smaller search budget, fewer epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ifcml.errors import InputError
from ifcml.models.registry import AnySpec, load_model_spec
from ifcml.readout import DEFAULT_POSITIVE
from ifcml.specs import describe, load_spec

EXPERIMENTS_DIR = Path(__file__).resolve().parents[3] / "experiments"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Ingest(_Strict):
    """How to make the store when it does not exist yet (as ``ifcml ingest`` would)."""

    sources: list[Path] = Field(min_length=1)
    format: str = "auto"
    channels: str | None = None  # e.g. "3:BF,4:DNA,6:DF"
    grid: str | None = None  # montages: ROWSxCOLS


class GateStep(_Strict):
    """A gating strategy applied before training and in ``predict`` (see :mod:`ifcml.gating.steps`)."""

    strategy: str  # a GatingML (.xml) or FlowJo workspace (.wsp) path, or "qc" (ifcml's, from the data)
    keep: str  # the population whose cells are kept, e.g. in_focus
    sample: str | None = None  # a workspace's sample whose gates apply


class LabelGates(_Strict):
    """Labels from gated populations, as the paper made its ground truth (a cell in none of
    ``gates``, or in several, is left unlabelled and unused)."""

    strategy: str  # a GatingML (.xml) or FlowJo workspace (.wsp) path
    gates: list[str] = Field(min_length=2)  # each population's gate id is its cells' label
    sample: str | None = None


class Data(_Strict):
    store: Path
    ingest: Ingest | None = None
    features: Path | None = None  # classical models' table; measured with ``recipe`` when missing
    recipe: Path | None = None  # feature recipe (default: features/default.yaml's settings)
    labels: list[str] | None = None  # keep only these labels (after merging)
    merge: dict[str, list[str]] = {}  # new label -> the labels it replaces, e.g. M: [Prophase, ...]
    labels_from: LabelGates | None = None  # labels from stained channels' gates (else the store's)
    gates: list[GateStep] = []  # strategies whose kept cells alone are trained on and read out

    @model_validator(mode="after")
    def _merge_once(self):
        merged = [label for group in self.merge.values() for label in group]
        twice = sorted({label for label in merged if merged.count(label) > 1})
        if twice:
            raise ValueError(f"merge: {', '.join(twice)} merged into more than one label")
        return self

    def relabel(self, table: pd.DataFrame, column: str) -> pd.DataFrame:
        """Merged labels, then only the kept labels (``column`` holds the labels)."""
        mapping = {old: new for new, olds in self.merge.items() for old in olds}
        table = table.assign(**{column: table[column].replace(mapping)})
        if self.labels:
            table = table[table[column].isin(self.labels)]
        return table


class ModelEntry(_Strict):
    spec: str  # a name in models/ or a path
    settings: dict = {}  # merged into the spec (nested keys merge), then validated


class ExperimentSpec(_Strict):
    name: str = Field(pattern=r"^\S(.*\S)?$")  # the MLflow experiment: not empty, no edge spaces
    data: Data
    models: list[str | ModelEntry] = Field(min_length=1)
    channel_sets: dict[str, list[str]] = Field(min_length=1)
    split: str = "leave-one-instance-out"
    max_evals: int | None = Field(None, ge=1)  # classical models' hyperopt budget (default: the spec's)
    seed: int = Field(0, ge=0, le=2**32 - 1)  # numpy's and hyperopt's seeds are unsigned 32-bit
    positive: str = DEFAULT_POSITIVE  # the class whose fraction is the readout (must be a label when given)
    log_trials: bool = False  # hyperopt trials as nested MLflow runs too (they are always a table)
    # training cells per class, e.g. [250, 500, 1000, all]: every design again at each size
    learning_curve: list[Annotated[int, Field(ge=1)] | Literal["all"]] = []

    @field_validator("channel_sets")
    @classmethod
    def _non_empty(cls, sets: dict[str, list[str]]):
        empty = [name for name, channels in sets.items() if not channels]
        if empty:
            raise ValueError(f"channel set(s) {', '.join(empty)} name no channels")
        return sets

    @field_validator("learning_curve")
    @classmethod
    def _distinct(cls, sizes: list):
        repeated = sorted({str(size) for size in sizes if sizes.count(size) > 1})
        if repeated:
            raise ValueError(f"size(s) {', '.join(repeated)} given twice")
        return sizes

    def train_sizes(self) -> list[int | None]:
        """The learning curve's caps, smallest first, then None (every training cell): the
        full-size designs are always run, a curve only adds smaller ones."""
        return sorted(size for size in self.learning_curve if size != "all") + [None]

    def model_specs(self) -> list[AnySpec]:
        """Every model's spec with its settings applied; errors name ``models.<i>``."""
        specs = []
        for i, entry in enumerate(self.models):
            entry = ModelEntry(spec=entry) if isinstance(entry, str) else entry
            base = load_model_spec(entry.spec)
            try:
                specs.append(type(base).model_validate(_deep_merge(base.model_dump(), entry.settings)))
            except ValidationError as exc:
                raise InputError(f"models.{i} ({entry.spec}) settings: {describe(exc)}") from exc
            except ValueError as exc:  # a stack member's name that is not one
                raise InputError(f"models.{i} ({entry.spec}) settings: {exc}") from exc
        names = [s.name for s in specs]
        if len(set(names)) < len(names):
            raise InputError(f"models: names repeat ({', '.join(names)}); give each a distinct settings.name")
        return specs


def load_experiment(path: Path | str) -> ExperimentSpec:
    spec = load_spec(Path(path), ExperimentSpec, "experiment spec")
    try:
        spec.model_specs()
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
    return spec


def _deep_merge(base: dict, update: dict) -> dict:
    """``update`` merged into ``base``: nested keys merge; a list of named specs (a stack's
    members) takes a mapping of their names to settings."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _deep_merge(base[key], value)
        elif isinstance(value, dict) and _named_list(base.get(key)):
            merged[key] = _merge_by_name(key, base[key], value)
        else:
            merged[key] = value
    return merged


def _named_list(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) and "name" in v for v in value)


def _merge_by_name(key: str, items: list[dict], update: dict) -> list[dict]:
    names = [item["name"] for item in items]
    unknown = sorted(set(update) - set(names))
    if unknown:
        raise ValueError(f"{key}: no member named {', '.join(unknown)} (members: {', '.join(names)})")
    return [_deep_merge(item, update.get(item["name"], {})) for item in items]
