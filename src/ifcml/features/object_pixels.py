"""Every object's pixels in the order CellProfiler's per-object statistics take them."""

from __future__ import annotations

import numpy as np


def objects_in_order(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every object's pixels (flat indexes), object after object and row-major within each (the
    order CellProfiler's per-object statistics take them from the object's box), and where
    each object starts: object k (label k + 1) holds ``flat[starts[k]:starts[k + 1]]``."""
    flat = np.flatnonzero(labels)
    objects = labels.ravel()[flat]
    flat = flat[np.argsort(objects, kind="stable")]
    counts = np.bincount(objects, minlength=int(labels.max()) + 1)[1:]
    return flat, np.concatenate(([0], np.cumsum(counts)))
