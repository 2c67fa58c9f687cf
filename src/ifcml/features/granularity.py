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
from skimage.morphology import disk, erosion

_CROSS = disk(1)  # the 4-connected step CellProfiler erodes by


def granularity(labels: np.ndarray, pixels: np.ndarray, element_size: int, spectrum_length: int) -> dict:
    """``Granularity_1..N`` -> per-object values for objects 1..K of ``labels``."""
    flat = labels.ravel()
    counts = np.bincount(flat)[1:].astype(np.float64)

    def object_means(image: np.ndarray) -> np.ndarray:
        return np.bincount(flat, image.ravel(), minlength=len(counts) + 1)[1:] / counts

    current_mean = object_means(pixels)
    start_mean = np.maximum(current_mean, np.finfo(float).eps)
    signal = pixels - _disk_filter(_disk_filter(pixels, element_size, np.minimum), element_size, np.maximum)
    signal[signal < 0] = 0
    eroded = signal
    spectrum = {}
    for step in range(1, spectrum_length + 1):
        eroded = erosion(eroded, _CROSS)
        new_mean = object_means(reconstruct_by_dilation(eroded, signal))
        spectrum[f"Granularity_{step}"] = (current_mean - new_mean) * 100 / start_mean
        current_mean = new_mean
    return spectrum


def _disk_filter(image: np.ndarray, radius: int, reduce: np.ufunc) -> np.ndarray:
    """Grey erosion (``np.minimum``) or dilation (``np.maximum``) by ``disk(radius)``.

    Equal to scikit-image's (borders mirrored likewise), about 10x faster at radius 10: a disk is
    a stack of centred horizontal runs, so the result is the reduction, over row offsets, of
    shifted running extrema along rows (``scipy.ndimage`` computes each in O(1) per pixel).
    """
    line = ndimage.minimum_filter1d if reduce is np.minimum else ndimage.maximum_filter1d
    padded = np.pad(image, radius, mode="symmetric")  # scipy's "reflect"
    rows, cols = image.shape
    half_widths = disk(radius)[:, radius:].sum(axis=1) - 1  # run half-width at each row offset
    runs = {w: line(padded, 2 * w + 1, axis=1) for w in set(half_widths.tolist())}
    result = None
    for dy, w in enumerate(half_widths):
        shifted = runs[w][dy : dy + rows, radius : radius + cols]
        result = shifted.copy() if result is None else reduce(result, shifted, out=result)
    return result


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
