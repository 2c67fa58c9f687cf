"""Every object's pixels in the order CellProfiler's per-object statistics take them, and
numpy's order of summing them: together they make compiled statistics equal numpy's bit for bit."""

from __future__ import annotations

import numba
import numpy as np


def objects_in_order(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every object's pixels (flat indexes), object after object and row-major within each (the
    order CellProfiler's per-object statistics take them from the object's box), and where
    each object starts: object k (label k + 1) holds ``flat[starts[k]:starts[k + 1]]``."""
    return _counting_sort(np.ascontiguousarray(labels).ravel())


@numba.njit(cache=True)
def _counting_sort(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The object pixels' flat indexes grouped by label, stable: one pass to count, one to place."""
    n = labels.max() if len(labels) else 0
    starts = np.zeros(n + 1, np.int64)
    for label in labels:
        if label > 0:
            starts[label] += 1
    starts = np.cumsum(starts)
    slot = starts[:-1].copy()
    flat = np.empty(starts[-1], np.int64)
    for i, label in enumerate(labels):
        if label > 0:
            flat[slot[label - 1]] = i
            slot[label - 1] += 1
    return flat, starts


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
