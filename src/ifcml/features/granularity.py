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
from skimage.morphology import disk


def granularity(labels: np.ndarray, pixels: np.ndarray, element_size: int, spectrum_length: int) -> dict:
    """``Granularity_1..N`` -> per-object values for objects 1..K of ``labels``."""
    inside = np.flatnonzero(labels)  # objects' pixels, in order: the same sums as over all pixels
    objects = labels.ravel()[inside] - 1
    counts = np.bincount(objects).astype(np.float64)

    def object_means(image: np.ndarray) -> np.ndarray:
        return np.bincount(objects, image.ravel()[inside], minlength=len(counts)) / counts

    current_mean = object_means(pixels)
    start_mean = np.maximum(current_mean, np.finfo(float).eps)
    signal = pixels - _disk_filter(_disk_filter(pixels, element_size, np.minimum), element_size, np.maximum)
    signal[signal < 0] = 0
    eroded = reconstructed = signal
    spectrum = {}
    for step in range(1, spectrum_length + 1):
        eroded = _cross_erosion(eroded)
        # Markers only shrink, so the previous reconstruction bounds this one and serves as its
        # mask: the same result (reconstruction is unique), with less left to propagate.
        reconstructed = reconstruct_by_dilation(eroded, reconstructed)
        new_mean = object_means(reconstructed)
        spectrum[f"Granularity_{step}"] = (current_mean - new_mean) * 100 / start_mean
        current_mean = new_mean
    return spectrum


def _cross_erosion(image: np.ndarray) -> np.ndarray:
    """Grey erosion by the 4-connected cross, borders mirrored: scikit-image's ``erosion(image,
    disk(1))`` (the mirrored pixel beyond an edge is the edge pixel itself), without its
    generic footprint loop."""
    out = image.copy()
    np.minimum(out[1:], image[:-1], out=out[1:])
    np.minimum(out[:-1], image[1:], out=out[:-1])
    np.minimum(out[:, 1:], image[:, :-1], out=out[:, 1:])
    np.minimum(out[:, :-1], image[:, 1:], out=out[:, :-1])
    return out


def _disk_filter(image: np.ndarray, radius: int, reduce: np.ufunc) -> np.ndarray:
    """Grey erosion (``np.minimum``) or dilation (``np.maximum``) by ``disk(radius)``.

    Equal to scikit-image's (borders mirrored likewise), much faster at radius 10: a disk is a
    stack of centred horizontal runs, so the result is the extremum, over row offsets, of
    running extrema along rows (:func:`_disk_extremum`).
    """
    padded = np.pad(image, radius, mode="symmetric")  # scipy's "reflect"
    half_widths = disk(radius)[:, radius:].sum(axis=1) - 1  # run half-width at each row offset
    return _disk_extremum(padded, half_widths.astype(np.int64), reduce is np.minimum)


@numba.njit(cache=True)
def _disk_extremum(padded: np.ndarray, half_widths: np.ndarray, minimum: bool) -> np.ndarray:
    """The filter on an image padded by ``radius``: the running extremum of half-width w >= 2
    of a row is the extremum of two of half-width w - 1, one pixel either side (w = 1 adds the
    centre), so every width costs a comparison or two per pixel; the 2 * radius + 1 rows an
    output row needs are kept in a ring."""
    span = len(half_widths)
    radius = span // 2
    padded_cols = padded.shape[1]
    rows, cols = padded.shape[0] - 2 * radius, padded_cols - 2 * radius
    ring = np.empty((span, half_widths.max() + 1, padded_cols))
    out = np.empty((rows, cols))
    for r in range(-span + 1, rows):
        row = r + span - 1  # the padded row that enters the ring
        runs = ring[row % span]
        runs[0] = padded[row]
        for w in range(1, runs.shape[0]):
            for c in range(w, padded_cols - w):
                v = _extreme(runs[w - 1, c - 1], runs[w - 1, c + 1], minimum)
                runs[w, c] = _extreme(v, runs[0, c], minimum) if w == 1 else v
        if r >= 0:
            for c in range(cols):
                v = ring[r % span, half_widths[0], c + radius]
                for dy in range(1, span):
                    v = _extreme(v, ring[(r + dy) % span, half_widths[dy], c + radius], minimum)
                out[r, c] = v
    return out


@numba.njit(cache=True, inline="always")
def _extreme(a: float, b: float, minimum: bool) -> float:
    return (a if a < b else b) if minimum else (a if a > b else b)


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
