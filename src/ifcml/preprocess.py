"""The paper's image preprocessing, batched and compiled (used by both branches).

Doan et al. 2020: every image becomes ``size x size`` per channel. Larger images are cropped
around their centre; smaller ones are padded with Gaussian noise whose mean and standard
deviation come from the image's most uniform 10x10 corner. Each channel of each image is
then clipped to its own 0.5 and 99.5 percentiles and rescaled to uint8.

A cell's result depends on that cell alone: the padding noise is a counter-based hash of
(seed, cell id, channel, pixel), so a cell gets the same pixels whatever batch it is in.

Speed without changing a bit: the loops are compiled (numba), noise is drawn only for the pixels
a cell lacks, and the percentiles come from one sort; the results equal the plain numpy
formulas exactly (``tests/test_preprocess.py``), so crops cached or trained on earlier stay valid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np


@dataclass(frozen=True)
class CropSettings:
    """The paper's numbers as defaults; each one a setting."""

    size: int = 48
    corner: int = 10
    low_percentile: float = 0.5
    high_percentile: float = 99.5
    seed: int = 0


def crop_or_pad(
    images: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    cell_ids: np.ndarray,
    settings: CropSettings = CropSettings(),
) -> np.ndarray:
    """Centre-crop or noise-pad a batch to ``size x size``.

    Parameters
    ----------
    images
        (N, C, H, W) canvas as stored: cell i occupies ``[:heights[i], :widths[i]]``.
    heights, widths
        True size of each cell image.
    cell_ids
        Store cell ids; they key the padding noise so results do not depend on batching.

    Returns
    -------
    (N, C, size, size) float32 raw values.
    """
    heights = np.asarray(heights, np.int64)
    widths = np.asarray(widths, np.int64)
    out, outside = _centre_crop(images, heights, widths, settings.size)
    padded = np.flatnonzero(outside.any(axis=(1, 2)))
    if padded.size == 0:
        return out
    # noise is drawn only where a cell has no pixels: most of a batch is copied, not padded
    mean, std = uniform_corner_stats(images[padded], heights[padded], widths[padded], settings.corner)
    which, ys, xs = np.nonzero(outside[padded])
    ids = np.asarray(cell_ids, np.uint64)[padded][which]
    noise = _hashed_normal_at(ids, ys, xs, images.shape[1], settings.size, settings.seed)  # (P, C)
    out[padded[which], :, ys, xs] = (mean[which] + std[which] * noise).astype(np.float32)
    return out


@numba.njit(cache=True, nogil=True)
def _centre_crop(images, heights, widths, size):  # pragma: no cover - compiled
    """Each cell's centred ``size x size`` window as float32, and where it falls outside the cell."""
    n, n_channels = images.shape[0], images.shape[1]
    out = np.zeros((n, n_channels, size, size), np.float32)
    outside = np.zeros((n, size, size), np.bool_)
    for i in range(n):
        top, left = (heights[i] - size) // 2, (widths[i] - size) // 2  # > 0 crops, < 0 pads
        y0, y1 = max(0, -top), min(size, heights[i] - top)  # the window rows the cell covers
        x0, x1 = max(0, -left), min(size, widths[i] - left)
        outside[i] = True
        outside[i, y0:y1, x0:x1] = False
        for c in range(n_channels):
            for y in range(y0, y1):
                for x in range(x0, x1):
                    out[i, c, y, x] = images[i, c, top + y, left + x]
    return out, outside


def uniform_corner_stats(
    images: np.ndarray, heights: np.ndarray, widths: np.ndarray, corner: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std, per image and channel, of the corner square with the smallest std.

    The four ``corner x corner`` corners of each image's true extent are compared per channel
    (smaller images use their whole side, repeating edge pixels to fill the square).
    """
    means, stds = _corner_stats(images, np.asarray(heights, np.int64), np.asarray(widths, np.int64), corner)
    best = stds.argmin(axis=0)
    pick = np.take_along_axis
    return pick(means, best[None], 0)[0], pick(stds, best[None], 0)[0]


@numba.njit(cache=True, nogil=True)
def _corner_stats(images, heights, widths, corner):  # pragma: no cover - compiled
    """Mean and std (4, N, C) of the top-left, top-right, bottom-left and bottom-right squares,
    summed in row order as numpy's ``mean`` / ``std`` over a (corner, corner) patch sum them."""
    n, n_channels = images.shape[0], images.shape[1]
    means = np.empty((4, n, n_channels), np.float64)
    stds = np.empty((4, n, n_channels), np.float64)
    count = np.float64(corner * corner)
    patch = np.empty((corner, corner), np.float64)
    for i in range(n):
        k_y, k_x = min(corner, heights[i]), min(corner, widths[i])
        for which in range(4):
            y0 = heights[i] - k_y if which >= 2 else 0
            x0 = widths[i] - k_x if which % 2 == 1 else 0
            for c in range(n_channels):
                total = 0.0
                for y in range(corner):
                    for x in range(corner):
                        patch[y, x] = images[i, c, y0 + min(y, k_y - 1), x0 + min(x, k_x - 1)]
                        total += patch[y, x]
                mean = total / count
                squares = 0.0
                for y in range(corner):
                    for x in range(corner):
                        deviation = patch[y, x] - mean
                        squares += deviation * deviation
                means[which, i, c] = mean
                stds[which, i, c] = np.sqrt(squares / count)
    return means, stds


def stretch_to_uint8(
    images: np.ndarray, low_percentile: float = 0.5, high_percentile: float = 99.5
) -> np.ndarray:
    """Clip each channel of each image to its own percentiles and rescale to 0..255."""
    low, high = channel_percentiles(images, (low_percentile, high_percentile))
    return _rescale(np.ascontiguousarray(images), low, high)


def channel_percentiles(images: np.ndarray, percentiles: tuple[float, ...]) -> list[np.ndarray]:
    """``np.percentile(images, q, axis=(2, 3))`` for each q, to the last bit, ~3x faster.

    One vectorised sort per batch, then numpy's own linear interpolation: the neighbours of
    the virtual index ``(n - 1) * q / 100`` weighted as ``numpy.lib._function_base_impl._lerp``
    weights them (in float64, from the float32 difference).
    """
    n, c, h, w = images.shape
    ordered = np.sort(images.reshape(n, c, h * w), axis=-1)
    last = h * w - 1
    values = []
    for q in percentiles:
        virtual = last * (q / 100)
        below = min(max(math.floor(virtual), 0), last)
        gamma = np.float64(virtual - below)
        a, b = ordered[..., below], ordered[..., min(below + 1, last)]
        difference = (b - a).astype(np.float64)
        if gamma >= 0.5:
            values.append(b - difference * (1 - gamma))
        else:
            values.append(a + difference * gamma)
    return values


@numba.njit(cache=True, nogil=True)
def _rescale(images, low, high):  # pragma: no cover - compiled
    """(clip(x, low, high) - low) / (high - low) * 255, rounded half to even, as uint8."""
    n, n_channels, h, w = images.shape
    out = np.empty((n, n_channels, h, w), np.uint8)
    for i in range(n):
        for c in range(n_channels):
            lo, hi = low[i, c], high[i, c]
            span = hi - lo if hi > lo else 1.0
            for y in range(h):
                for x in range(w):
                    value = min(max(np.float64(images[i, c, y, x]), lo), hi)
                    out[i, c, y, x] = np.uint8(np.rint((value - lo) / span * 255.0))
    return out


def preprocess(
    images: np.ndarray,
    heights: np.ndarray,
    widths: np.ndarray,
    cell_ids: np.ndarray,
    settings: CropSettings = CropSettings(),
) -> np.ndarray:
    """Crop/pad then stretch: the paper's (N, C, size, size) uint8 network input."""
    cropped = crop_or_pad(images, heights, widths, cell_ids, settings)
    return stretch_to_uint8(cropped, settings.low_percentile, settings.high_percentile)


def _hashed_normal_at(
    cell_ids: np.ndarray, ys: np.ndarray, xs: np.ndarray, n_channels: int, size: int, seed: int
) -> np.ndarray:
    """Standard normal noise (P, C) at pixels (ys, xs) of cells ``cell_ids``: a pure function of
    (seed, cell, channel, y, x), so a pixel's value does not depend on which others are drawn.

    Box-Muller on two uniforms hashed from the pixel's counter; the hashing is compiled
    (integer arithmetic, exact anywhere), the logarithm and cosine are numpy's.
    """
    u1, u2 = _hashed_uniforms(
        np.asarray(cell_ids, np.uint64),
        np.asarray(ys, np.int64),
        np.asarray(xs, np.int64),
        n_channels,
        size,
        seed,
    )
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


@numba.njit(cache=True, nogil=True)
def _hashed_uniforms(cell_ids, ys, xs, n_channels, size, seed):  # pragma: no cover - compiled
    """Two uniforms in (0, 1] per (pixel, channel): splitmix64 of the counters 2k and 2k + 1,
    k = (cell * C + channel) * size^2 + y * size + x, its top 53 bits scaled (never 0)."""
    n = cell_ids.size
    u1 = np.empty((n, n_channels), np.float64)
    u2 = np.empty((n, n_channels), np.float64)
    key = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    plane = np.uint64(size * size)
    for i in range(n):
        pixel = np.uint64(ys[i] * size + xs[i])
        for c in range(n_channels):
            counter = (cell_ids[i] * np.uint64(n_channels) + np.uint64(c)) * plane + pixel
            u1[i, c] = _to_unit(_splitmix64(counter * np.uint64(2) + key))
            u2[i, c] = _to_unit(_splitmix64(counter * np.uint64(2) + np.uint64(1) + key))
    return u1, u2


@numba.njit(cache=True, inline="always")
def _splitmix64(x):  # pragma: no cover - compiled
    """The splitmix64 finaliser: a fast, well-mixed 64-bit integer hash (wrapping arithmetic)."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def _to_unit(bits):  # pragma: no cover - compiled
    """A 64-bit integer as a float in (0, 1], never 0 (safe for log): exact, its top 53 bits."""
    return (np.float64(bits >> np.uint64(11)) + 1.0) / 9007199254740992.0  # 2**53
