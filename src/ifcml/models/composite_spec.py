"""Specs of designs made of other models: a hybrid (a classical model on a network's pooled
features) and a stack (a classical model on other models' class probabilities).

Their parts are whole model specs, written in YAML as names in ``models/`` (or paths) and
resolved by :func:`ifcml.models.registry.load_model_spec`, so an experiment's ``settings`` reach
into them like into any spec: ``{network: {training: {max_epochs: 30}}}``.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ifcml.models.classical import ModelSpec
from ifcml.models.composite import COMBINER
from ifcml.models.network_spec import NetworkSpec


class HybridSpec(BaseModel):
    """A classical model on the pooled features (the layer named ``embedding``) of a network
    trained, like every part of a design, on each fold's training cells only."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    embedding_of: NetworkSpec
    classifier: ModelSpec
    with_features: bool = True  # the CellProfiler features next to the embedding (else it alone)


class StackedSpec(BaseModel):
    """A classical ``combiner`` on the class probabilities of ``stack``'s models. The combiner
    learns from probabilities the members gave cells they were not trained on (``inner_folds``
    over the training cells), then the members are refitted on every training cell."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    stack: list[ModelSpec | NetworkSpec] = Field(min_length=2)
    combiner: ModelSpec
    inner_folds: int = Field(3, ge=2)

    @model_validator(mode="after")
    def _members_have_probabilities(self):
        names = [member.name for member in self.stack]
        if len(set(names)) < len(names):
            raise ValueError(f"stack: names repeat ({', '.join(names)}); give each a distinct name")
        odd = [
            n for n in names if n == COMBINER or not re.fullmatch(r"[A-Za-z0-9_.-]+", n) or n.startswith(".")
        ]
        if odd:  # each member is saved in a folder of its name, beside the combiner's
            raise ValueError(
                f"stack: member name(s) {', '.join(odd)}: use letters, digits, _ . - (not {COMBINER!r})"
            )
        blind = [m.name for m in self.stack if isinstance(m, ModelSpec) and not m.family.probabilities]
        if blind:
            raise ValueError(f"stack: {', '.join(blind)} give(s) no class probabilities to combine")
        return self


CompositeSpec = HybridSpec | StackedSpec
