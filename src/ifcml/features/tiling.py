"""Laying a batch of cells side by side so one measurement call covers many cells.

Each cell keeps its own tile (the store's canvas plus a frame of zero pixels), so every
CellProfiler measurement that works object by object sees exactly what it would see if the
cell were alone on its tile. Both engines use this layout: cp-measure measures the montage in
memory, and the CellProfiler engine writes the same montage and label images to disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np


@dataclass(frozen=True)
class Layout:
    """Where cell ``i`` of a batch sits: tile (row, col) of a ``rows x cols`` grid."""

    n: int
    height: int  # the cells' canvas
    width: int
    padding: int

    @property
    def cols(self) -> int:
        return max(1, math.ceil(math.sqrt(self.n)))

    @property
    def rows(self) -> int:
        return max(1, math.ceil(self.n / self.cols))

    @property
    def tile_shape(self) -> tuple[int, int]:
        return self.height + 2 * self.padding, self.width + 2 * self.padding

    @property
    def shape(self) -> tuple[int, int]:
        th, tw = self.tile_shape
        return self.rows * th, self.cols * tw


def tile(cells: np.ndarray, layout: Layout) -> np.ndarray:
    """(n, H, W) images -> one montage, cells row by row, zero between them."""
    p, h, w = layout.padding, layout.height, layout.width
    full = np.zeros((layout.rows * layout.cols, h, w), cells.dtype)
    full[: layout.n] = cells
    montage = np.zeros(layout.shape, cells.dtype)
    grid = montage.reshape(layout.rows, layout.tile_shape[0], layout.cols, layout.tile_shape[1])
    grid[:, p : p + h, :, p : p + w] = full.reshape(layout.rows, layout.cols, h, w).transpose(0, 2, 1, 3)
    return montage


def tile_labels(masks: np.ndarray, layout: Layout) -> np.ndarray:
    """(n, H, W) boolean masks -> a label montage; non-empty masks get labels 1..K in order."""
    present = masks.reshape(len(masks), -1).any(axis=1)
    labels = np.zeros(len(masks), np.int32)
    labels[present] = np.arange(1, int(present.sum()) + 1)
    return tile(masks.astype(np.int32) * labels[:, None, None], layout)


@numba.njit(cache=True, inline="always")
def mirror_index(i: int, n: int) -> int:
    """Which of n pixels a frame of their mirror image shows at index i (edge pixels repeated,
    numpy's "symmetric" and scipy's "reflect"; period 2n: the pixels, then reversed)."""
    i %= 2 * n
    return i if i < n else 2 * n - 1 - i
