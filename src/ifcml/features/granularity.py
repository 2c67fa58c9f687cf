"""CellProfiler's granularity spectrum, unsubsampled, with a compiled reconstruction.

The algorithm is CellProfiler's MeasureGranularity as cp-measure implements it (Ravkin's
granular spectrum: remove the background with an opening by a disk, then erode by one pixel at
a time and measure how much of each object's mean survives a reconstruction), at subsampling
factor 1 so that nothing is resampled across cells. The one difference is speed: scikit-image's
generic reconstruction sorts every pixel of the montage at each of the 16 steps (about 11 ms
per cell and channel); morphological reconstruction is uniquely defined, so Vincent's queue
algorithm below gives identical values at a small fraction of the cost (tested against
cp-measure cell by cell).
"""

from __future__ import annotations

import numba
import numpy as np
from scipy import ndimage
from skimage.morphology import dilation, disk, erosion

_CROSS = disk(1)  # the 4-connected step CellProfiler erodes by


def granularity(labels: np.ndarray, pixels: np.ndarray, element_size: int, spectrum_length: int) -> dict:
    """``Granularity_1..N`` -> per-object values for objects 1..K of ``labels``."""
    n_objects = int(labels.max())
    index = np.arange(1, n_objects + 1)
    start_mean = np.asarray(ndimage.mean(pixels, labels, index), dtype=np.float64)
    current_mean = start_mean
    start_mean = np.maximum(start_mean, np.finfo(float).eps)
    footprint = disk(element_size)
    signal = pixels - dilation(erosion(pixels, footprint), footprint)
    signal[signal < 0] = 0
    eroded = signal
    spectrum = {}
    for step in range(1, spectrum_length + 1):
        eroded = erosion(eroded, _CROSS)
        reconstructed = reconstruct_by_dilation(eroded, signal)
        new_mean = np.asarray(ndimage.mean(reconstructed, labels, index), dtype=np.float64)
        spectrum[f"Granularity_{step}"] = (current_mean - new_mean) * 100 / start_mean
        current_mean = new_mean
    return spectrum


@numba.njit(cache=True)
def reconstruct_by_dilation(marker: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Greyscale reconstruction of ``marker`` under ``mask``, 4-connected (Vincent 1993, hybrid)."""
    rows, cols = mask.shape
    out = np.minimum(marker, mask)
    for r in range(rows):  # forward raster scan: up and left neighbours
        for c in range(cols):
            v = out[r, c]
            if r > 0 and out[r - 1, c] > v:
                v = out[r - 1, c]
            if c > 0 and out[r, c - 1] > v:
                v = out[r, c - 1]
            out[r, c] = min(v, mask[r, c])
    queue = np.empty(rows * cols * 4 + 1, np.int64)
    head = 0
    tail = 0
    for r in range(rows - 1, -1, -1):  # backward scan: down and right neighbours
        for c in range(cols - 1, -1, -1):
            v = out[r, c]
            if r < rows - 1 and out[r + 1, c] > v:
                v = out[r + 1, c]
            if c < cols - 1 and out[r, c + 1] > v:
                v = out[r, c + 1]
            v = min(v, mask[r, c])
            out[r, c] = v
            if (r < rows - 1 and out[r + 1, c] < v and out[r + 1, c] < mask[r + 1, c]) or (
                c < cols - 1 and out[r, c + 1] < v and out[r, c + 1] < mask[r, c + 1]
            ):
                queue[tail] = r * cols + c
                tail += 1
    while head < tail:  # propagate what the two scans could not reach
        p = queue[head]
        head += 1
        r = p // cols
        c = p % cols
        v = out[r, c]
        for k in range(4):
            rr = r + (k == 0) - (k == 1)
            cc = c + (k == 2) - (k == 3)
            if 0 <= rr < rows and 0 <= cc < cols and out[rr, cc] < v and out[rr, cc] != mask[rr, cc]:
                out[rr, cc] = min(v, mask[rr, cc])
                if tail == queue.shape[0]:  # compact the consumed front of the queue
                    queue[: tail - head] = queue[head:tail]
                    tail -= head
                    head = 0
                queue[tail] = rr * cols + cc
                tail += 1
    return out
