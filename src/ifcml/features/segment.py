"""Segmenting each cell from its own bright-field image, as IFC CellProfiler pipelines do.

Bright-field cells show a dark refractive rim on a flat background: smooth, enhance edges
(Sobel), threshold the edge image with Otsu's method, close small gaps, fill holes, and keep
the object under (or nearest to) the image centre. Every statistic is taken from the cell's
own image, never from a montage or a batch: whole-image statistics carry an acquisition's
signature into the features (see the project's notes on the Jurkat data).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from skimage.morphology import disk


@dataclass(frozen=True)
class SegmentationSettings:
    """Every number a setting; the defaults suit 40x ImageStream bright-field."""

    smoothing: float = 1.0  # Gaussian sigma (pixels) before edge enhancement
    closing_radius: int = 2  # closes gaps in the rim before holes are filled
    min_area: int = 20  # pixels; smaller objects count as a failed segmentation


def segment_bright_field(
    image: np.ndarray, settings: SegmentationSettings = SegmentationSettings()
) -> np.ndarray:
    """Boolean mask of the cell in a 2-D bright-field image (all False when segmentation fails)."""
    return segment_bright_fields(image[None], settings)[0]


def segment_bright_fields(
    images: np.ndarray, settings: SegmentationSettings = SegmentationSettings()
) -> np.ndarray:
    """:func:`segment_bright_field` of each image of an (n, H, W) stack, each on its own: every
    filter and structure acts within an image (nothing along the stack's axis), so one call
    per stack gives each image's own mask at a fraction of the per-image calls' overhead."""
    n, height, width = images.shape
    empty = np.zeros(images.shape, bool)
    if min(height, width) < 3 or n == 0:
        return empty
    smooth = ndimage.gaussian_filter(images.astype(np.float32), (0, settings.smoothing, settings.smoothing))
    edges = _sobel_magnitudes(smooth)
    usable = np.ptp(edges, axis=(1, 2)) > 0
    thresholds = np.full(n, np.inf, edges.dtype)
    thresholds[usable] = otsu_thresholds(edges[usable])
    foreground = edges > thresholds[:, None, None]
    foreground = ndimage.binary_closing(foreground, _disk(settings.closing_radius)[None], border_value=0)
    foreground = ndimage.binary_fill_holes(foreground, _IN_PLANE_CROSS)
    labels, count = ndimage.label(foreground, _IN_PLANE_CROSS)
    cells = empty
    for i in np.flatnonzero(usable & labels.any(axis=(1, 2))):
        cell = labels[i] == _central_label(labels[i], count)
        if cell.sum() >= settings.min_area:
            cells[i] = cell
    return cells


def expand(mask: np.ndarray, pixels: int) -> np.ndarray:
    """The mask grown by ``pixels`` (the slightly larger object used for dark-field)."""
    return expand_all(mask[None], pixels)[0]


def expand_all(masks: np.ndarray, pixels: int) -> np.ndarray:
    """:func:`expand` of each mask of an (n, H, W) stack, each on its own."""
    if pixels <= 0 or not masks.any():
        return masks
    return ndimage.binary_dilation(masks, _disk(pixels)[None])


# 4-connected within an image, nothing across images
_IN_PLANE_CROSS = np.zeros((3, 3, 3), bool)
_IN_PLANE_CROSS[1] = ndimage.generate_binary_structure(2, 1)
_SOBEL_SMOOTHING = np.array([1, 2, 1]) / 4


def otsu_thresholds(images: np.ndarray, bins: int = 256) -> np.ndarray:
    """scikit-image's ``threshold_otsu`` of each float image of an (n, H, W) stack (none of them
    constant), with one vectorised histogram for the stack instead of a call per image. Each
    step is numpy's and scikit-image's own, element for element in the images' float type
    (numpy's bin edges and its one-ULP index corrections, the float32 counts and cumulative
    sums), so every threshold is equal to theirs bit for bit (tested)."""
    n = len(images)
    if n == 0:
        return np.empty(0, images.dtype)
    values = images.reshape(n, -1)
    first, last = values.min(axis=1), values.max(axis=1)
    edges = np.linspace(first, last, bins + 1, axis=1, dtype=values.dtype)
    width = (last - first)[:, None]
    index = (((values - first[:, None]) / width) * bins).astype(np.intp)
    index[index == bins] -= 1
    rows = np.arange(n)[:, None]
    index[values < edges[rows, index]] -= 1
    index[(values >= edges[rows, index + 1]) & (index != bins - 1)] += 1
    counts = np.bincount((index + rows * bins).ravel(), minlength=n * bins).reshape(n, bins)
    counts = counts.astype(np.float32)
    centres = (edges[:, :-1] + edges[:, 1:]) / 2.0
    weight1 = np.cumsum(counts, axis=1)
    weight2 = np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]
    mean1 = np.cumsum(counts * centres, axis=1) / weight1
    mean2 = (np.cumsum((counts * centres)[:, ::-1], axis=1) / weight2[:, ::-1])[:, ::-1]
    variance12 = weight1[:, :-1] * weight2[:, 1:] * (mean1[:, :-1] - mean2[:, 1:]) ** 2
    return centres[np.arange(n), np.argmax(variance12, axis=1)]


def _sobel_magnitudes(images: np.ndarray) -> np.ndarray:
    """scikit-image's ``sobel`` (both axes, the root mean square of the two, float32) of each
    image of a stack: the same kernels, taps and operations, each image on its own."""
    magnitude = np.zeros(images.shape, images.dtype)
    for kernel in (np.outer([1, 0, -1], _SOBEL_SMOOTHING), np.outer(_SOBEL_SMOOTHING, [1, 0, -1])):
        along = ndimage.convolve(images, kernel[None], mode="reflect")
        along *= along
        magnitude += along
    return np.sqrt(magnitude) / np.sqrt(2, dtype=magnitude.dtype)


@lru_cache(maxsize=8)
def _disk(radius: int) -> np.ndarray:
    """scikit-image's disk, built once per radius (building it cost a tenth of a segmentation)."""
    return disk(radius)


def _central_label(labels: np.ndarray, n: int) -> int:
    """The object under the image centre, else the one whose nearest pixel is closest to it."""
    cy, cx = (labels.shape[0] - 1) / 2, (labels.shape[1] - 1) / 2
    under = labels[int(round(cy)), int(round(cx))]
    if under:
        return int(under)
    yy, xx = np.nonzero(labels)
    distance = (yy - cy) ** 2 + (xx - cx) ** 2
    nearest = np.full(n + 1, np.inf)
    np.minimum.at(nearest, labels[yy, xx], distance)
    return int(np.argmin(nearest))
