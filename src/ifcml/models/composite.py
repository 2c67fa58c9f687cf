"""A model made of models: each part a whole saved model (with its own metadata), saved side by
side in one folder (:mod:`ifcml.models.saved`), so each part is read in its own safe format.

A hybrid's parts are ``network`` (whose pooled features it reads) and ``classifier``; a stack's
are its members, by name, and ``combiner``. What turns cells into a part's input is the
design's business at training time and the predictor's at deployment; this is the saved shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

EMBEDDING_PREFIX = "Embedding_"  # a hybrid's columns of the network's pooled features
COMBINER = "combiner"


@dataclass
class Part:
    flavor: str  # how the part is saved (see ifcml.models.saved)
    model: Any
    metadata: dict  # what a saved model's metadata holds: classes, features, inputs
    example: Any = None  # an input of the part, for its saved signature


@dataclass
class Composite:
    kind: str  # "hybrid" or "stacked"
    parts: dict[str, Part]


def embedding_columns(width: int) -> list[str]:
    return [f"{EMBEDDING_PREFIX}{k}" for k in range(width)]


def pooled_features(model, crops: np.ndarray, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """The network's pooled features (its ``embedding`` layer) of the cached crops at ``rows``."""
    import keras

    from ifcml.models.inputs import ordered_dataset
    from ifcml.models.networks import EMBEDDING

    pooled = keras.Model(model.input, model.get_layer(EMBEDDING).output)
    return np.asarray(pooled.predict(ordered_dataset(crops, rows, batch_size), verbose=0), np.float64)


def stacked_inputs(probabilities: list[np.ndarray], members: list[str], classes: list[str]) -> dict:
    """A combiner's input columns: each member's probability of each class, named."""
    return {
        f"{member}_probability_{name}": p[:, k]
        for member, p in zip(members, probabilities, strict=True)
        for k, name in enumerate(classes)
    }
