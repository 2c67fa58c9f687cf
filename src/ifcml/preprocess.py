"""The paper's image preprocessing, vectorised over batches (used by both branches).

Doan et al. 2020: every image becomes ``size x size`` per channel. Larger images are cropped
around their centre; smaller ones are padded with Gaussian noise whose mean and standard
deviation come from the image's most uniform 10x10 corner. Each channel of each image is
then clipped to its own 0.5 and 99.5 percentiles and rescaled to uint8.

A cell's result depends on that cell alone: the padding noise is a counter-based hash of
(seed, cell id, channel, pixel), so a cell gets the same pixels whatever batch it is in.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    n, n_channels = images.shape[:2]
    size = settings.size
    heights = np.asarray(heights, np.int64)
    widths = np.asarray(widths, np.int64)
    offset_y = (heights - size) // 2  # > 0 crops, < 0 pads
    offset_x = (widths - size) // 2
    src_y = np.arange(size)[None, :] + offset_y[:, None]  # (N, size)
    src_x = np.arange(size)[None, :] + offset_x[:, None]
    valid = ((src_y >= 0) & (src_y < heights[:, None]))[:, :, None] & (
        (src_x >= 0) & (src_x < widths[:, None])
    )[:, None, :]
    gathered = images[
        np.arange(n)[:, None, None],
        :,
        np.clip(src_y, 0, images.shape[2] - 1)[:, :, None],
        np.clip(src_x, 0, images.shape[3] - 1)[:, None, :],
    ]  # (N, size, size, C)
    gathered = np.moveaxis(gathered, -1, 1).astype(np.float32)
    if valid.all():
        return gathered
    mean, std = uniform_corner_stats(images, heights, widths, settings.corner)
    noise = _hashed_normal(np.asarray(cell_ids, np.uint64), n_channels, size, settings.seed)
    padding = mean[:, :, None, None] + std[:, :, None, None] * noise
    return np.where(valid[:, None], gathered, padding).astype(np.float32)


def uniform_corner_stats(
    images: np.ndarray, heights: np.ndarray, widths: np.ndarray, corner: int
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std, per image and channel, of the corner square with the smallest std.

    The four ``corner x corner`` corners of each image's true extent are compared per channel
    (smaller images use their whole side).
    """
    n = images.shape[0]
    k_y = np.minimum(corner, heights)
    k_x = np.minimum(corner, widths)
    steps = np.arange(corner)
    stats_mean, stats_std = [], []
    for at_bottom in (False, True):
        for at_right in (False, True):
            y0 = heights - k_y if at_bottom else np.zeros(n, np.int64)
            x0 = widths - k_x if at_right else np.zeros(n, np.int64)
            ys = y0[:, None] + np.minimum(steps[None, :], k_y[:, None] - 1)
            xs = x0[:, None] + np.minimum(steps[None, :], k_x[:, None] - 1)
            patch = images[np.arange(n)[:, None, None], :, ys[:, :, None], xs[:, None, :]]
            patch = patch.astype(np.float64)  # (N, corner, corner, C); repeats where clipped
            stats_mean.append(patch.mean(axis=(1, 2)))
            stats_std.append(patch.std(axis=(1, 2)))
    means, stds = np.stack(stats_mean), np.stack(stats_std)  # (4, N, C)
    best = stds.argmin(axis=0)
    pick = np.take_along_axis
    return pick(means, best[None], 0)[0], pick(stds, best[None], 0)[0]


def stretch_to_uint8(
    images: np.ndarray, low_percentile: float = 0.5, high_percentile: float = 99.5
) -> np.ndarray:
    """Clip each channel of each image to its own percentiles and rescale to 0..255."""
    low, high = np.percentile(images, [low_percentile, high_percentile], axis=(2, 3), keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    scaled = (np.clip(images, low, high) - low) / span * 255.0
    return np.rint(scaled).astype(np.uint8)


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


def _hashed_normal(cell_ids: np.ndarray, n_channels: int, size: int, seed: int) -> np.ndarray:
    """Standard normal noise (N, C, size, size) that is a pure function of (seed, cell, c, y, x)."""
    per_cell = n_channels * size * size
    counter = cell_ids[:, None] * np.uint64(per_cell) + np.arange(per_cell, dtype=np.uint64)[None]
    key = np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    u1 = _to_unit(_splitmix64(counter * np.uint64(2) + key))
    u2 = _to_unit(_splitmix64(counter * np.uint64(2) + np.uint64(1) + key))
    normal = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return normal.reshape(len(cell_ids), n_channels, size, size)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a fast, well-mixed 64-bit integer hash (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _to_unit(bits: np.ndarray) -> np.ndarray:
    """Map 64-bit integers to floats in (0, 1], never 0 (safe for log)."""
    return ((bits >> np.uint64(11)).astype(np.float64) + 1.0) / float(2**53)
