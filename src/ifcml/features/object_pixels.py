"""Every object's pixels in the order CellProfiler's per-object statistics take them, and
numpy's order of summing them: together they make compiled statistics equal numpy's bit for bit."""

from __future__ import annotations

import numba
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


@numba.njit(cache=True)
def pairwise_sum(values: np.ndarray) -> float:
    """numpy's float64 sum, in its order: blocks of up to 128 summed in 8 running partial sums,
    longer runs halved (at a multiple of 8) and the halves added."""
    n = len(values)
    if n < 8:
        total = 0.0
        for v in values:
            total += v
        return total
    if n <= 128:
        partial = values[:8].copy()
        i = 8
        while i < n - n % 8:
            for j in range(8):
                partial[j] += values[i + j]
            i += 8
        total = ((partial[0] + partial[1]) + (partial[2] + partial[3])) + (
            (partial[4] + partial[5]) + (partial[6] + partial[7])
        )
        for k in range(i, n):
            total += values[k]
        return total
    half = n // 2
    half -= half % 8
    return pairwise_sum(values[:half]) + pairwise_sum(values[half:])
