"""CellProfiler's Haralick texture features, compiled, for every object of a montage in one call.

The algorithm is MeasureTexture's as cp-measure implements it (through mahotas): intensities
quantised to 8 bits (then to ``gray_levels``), and for each of 4 directions at distance
``scale``, the symmetric grey-level co-occurrence matrix of the object's pixel pairs, pairs
holding a zero left out, summarised by Haralick's 13 features (mahotas' definitions: the
difference variance is the variance of the P(|x-y|) vector, the matrix runs up to the object's
brightest level). An object without pairs in some direction gets NaN in every direction. The
difference is speed: mahotas builds and sums dense 256 x 256 matrices per object and direction;
here only the grey levels an object holds are indexed. Values equal cp-measure's to round-off
(tested on real cells).
"""

from __future__ import annotations

import numba
import numpy as np
import skimage.exposure
import skimage.util

FEATURES = (
    "AngularSecondMoment Contrast Correlation Variance InverseDifferenceMoment SumAverage SumVariance "
    "SumEntropy Entropy DifferenceVariance DifferenceEntropy InfoMeas1 InfoMeas2"
).split()
DIRECTIONS = np.array([(0, 1), (1, 1), (1, 0), (1, -1)])  # mahotas' 2-D order


def texture(labels: np.ndarray, pixels: np.ndarray, scale: int, gray_levels: int) -> dict[str, np.ndarray]:
    """``<Feature>_<scale>_<direction:02d>_<gray_levels>`` for objects 1..K of ``labels``
    (``pixels`` in CellProfiler's 0-1 scale)."""
    levels = skimage.util.img_as_ubyte(pixels, force_copy=True)
    levels[labels == 0] = 0
    if gray_levels != 256:
        levels = skimage.exposure.rescale_intensity(
            levels, in_range=(0, 255), out_range=(0, gray_levels - 1)
        ).astype(np.uint8)
    values = _haralick(labels.astype(np.int64), levels, DIRECTIONS * scale, int(labels.max()))
    return {
        f"{name}_{scale}_{d:02d}_{gray_levels}": values[:, d, f]
        for d in range(len(DIRECTIONS))
        for f, name in enumerate(FEATURES)
    }


@numba.njit(cache=True)
def _haralick(labels: np.ndarray, levels: np.ndarray, steps: np.ndarray, n: int) -> np.ndarray:
    """(objects, directions, 13) features: pixel pairs bucketed by object, then one small
    co-occurrence matrix per object and direction over the levels it holds."""
    rows, cols = labels.shape
    brightest = np.zeros(n, np.int64)
    pixels_of = np.zeros(n + 1, np.int64)  # pixels per object, then bucket offsets
    for r in range(rows):
        for c in range(cols):
            k = labels[r, c]
            if k > 0:
                pixels_of[k] += 1
                brightest[k - 1] = max(brightest[k - 1], levels[r, c])
    offsets = np.cumsum(pixels_of)
    where = np.empty(offsets[-1], np.int64)
    filled = offsets[:-1].copy()
    for r in range(rows):
        for c in range(cols):
            k = labels[r, c]
            if k > 0:
                where[filled[k - 1]] = r * cols + c
                filled[k - 1] += 1
    out = np.full((n, len(steps), 13), np.nan)
    index = np.full(256, -1, np.int64)
    for k in range(n):
        own = where[offsets[k] : offsets[k + 1]]
        present = np.zeros(256, np.bool_)
        for p in own:
            present[levels[p // cols, p % cols]] = True
        present[0] = False
        held = np.flatnonzero(present)
        index[held] = np.arange(len(held))
        counts = np.zeros((len(steps), len(held), len(held)))
        empty = False
        for d in range(len(steps)):
            dr, dc = steps[d, 0], steps[d, 1]
            for p in own:
                r, c = p // cols, p % cols
                a = levels[r, c]
                rr, cc = r + dr, c + dc
                if a == 0 or rr < 0 or rr >= rows or cc < 0 or cc >= cols or labels[rr, cc] != k + 1:
                    continue
                b = levels[rr, cc]
                if b > 0:
                    counts[d, index[a], index[b]] += 1
                    counts[d, index[b], index[a]] += 1
            empty = empty or counts[d].sum() == 0
        if not empty:
            for d in range(len(steps)):
                out[k, d] = _features(counts[d], held.astype(np.float64), brightest[k] + 1)
        index[held] = -1
    return out


@numba.njit(cache=True)
def _entropy(p: np.ndarray) -> float:
    total = 0.0
    for x in p.ravel():
        if x != 0:
            total -= np.log2(x) * x
    return total


@numba.njit(cache=True)
def _features(counts: np.ndarray, k: np.ndarray, size: int) -> np.ndarray:
    """Haralick's 13 from a symmetric co-occurrence matrix over grey levels ``k`` (the levels an
    object holds) of a matrix ``size`` levels wide (mahotas' size: the brightest level + 1)."""
    feats = np.zeros(13)
    p = counts / counts.sum()
    px = p.sum(axis=0)
    py = p.sum(axis=1)
    ux, uy = np.dot(px, k), np.dot(py, k)
    vx = np.dot(px, k * k) - ux**2
    vy = np.dot(py, k * k) - uy**2
    sx, sy = np.sqrt(vx), np.sqrt(vy)
    plus = np.zeros(2 * size)
    minus = np.zeros(size)
    products = 0.0
    inverse_difference = 0.0
    for a in range(len(k)):
        for b in range(len(k)):
            v = p[a, b]
            plus[int(k[a] + k[b])] += v
            minus[int(abs(k[a] - k[b]))] += v
            products += k[a] * k[b] * v
            inverse_difference += v / (1.0 + (k[a] - k[b]) ** 2)
    steps = np.arange(size).astype(np.float64)
    sums = np.arange(2 * size).astype(np.float64)
    feats[0] = np.sum(p * p)
    feats[1] = np.dot(steps * steps, minus)
    feats[2] = 1.0 if sx == 0.0 or sy == 0.0 else (1.0 / sx / sy) * (products - ux * uy)
    feats[3] = vx
    feats[4] = inverse_difference
    feats[5] = np.dot(sums, plus)
    feats[7] = _entropy(plus)
    feats[6] = np.dot(sums * sums, plus) - feats[5] ** 2
    feats[8] = _entropy(p)
    feats[9] = minus.var()
    feats[10] = _entropy(minus)
    hx, hy = _entropy(px), _entropy(py)
    cross = np.outer(px, py)
    hxy1 = 0.0
    for a in range(len(k)):
        for b in range(len(k)):
            if cross[a, b] != 0:
                hxy1 -= p[a, b] * np.log2(cross[a, b])
    hxy2 = _entropy(cross)
    feats[11] = (feats[8] - hxy1) if max(hx, hy) == 0.0 else (feats[8] - hxy1) / max(hx, hy)
    feats[12] = np.sqrt(max(0.0, 1.0 - np.exp(-2.0 * (hxy2 - feats[8]))))
    return feats
