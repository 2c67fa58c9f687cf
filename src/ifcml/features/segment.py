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

import numba
import numpy as np
from scipy import ndimage
from skimage.morphology import disk

from ifcml.features.tiling import mirror_index

_SIZE_STEP = 8  # pixels: cells whose sizes round up to the same multiple share one canvas


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
    images: np.ndarray,
    settings: SegmentationSettings = SegmentationSettings(),
    sizes: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`segment_bright_field` of each image of an (n, H, W) stack, each on its own, in a few
    calls: a cell's mask never depends on the others (tested), at a fraction of the per-image
    calls' overhead.

    ``sizes``: each image's true (height, width) at the top left of the stack's canvas (default:
    the whole canvas). Cells of an instrument's file come in many sizes; cells whose sizes round
    up to the same multiple of ``_SIZE_STEP`` share a canvas just large enough for them, so the
    filters do not spend most of their work on padding.
    """
    n, height, width = images.shape
    cells = np.zeros(images.shape, bool)
    sizes = np.tile([height, width], (n, 1)) if sizes is None else np.asarray(sizes)
    picked = np.flatnonzero(sizes.min(axis=1) >= 3)
    _, bucket = np.unique(-(-sizes[picked] // _SIZE_STEP), axis=0, return_inverse=True)
    for k in range(bucket.max(initial=-1) + 1):
        group = picked[bucket.reshape(-1) == k]
        h, w = sizes[group].max(axis=0)
        cells[group, :h, :w] = _segment_on_canvas(images[group, :h, :w], sizes[group], settings)
    return cells


def _segment_on_canvas(images: np.ndarray, sizes: np.ndarray, settings: SegmentationSettings) -> np.ndarray:
    """The masks of an (n, H, W) stack of cells of at least 3 x 3 pixels, each ``sizes[i]`` at
    the top left of its canvas. When sizes differ, each cell is copied onto a common canvas inside
    a frame of its own mirror image as wide as the filters reach, so the Gaussian and Sobel
    filters see at its edges what they see of it alone (scipy's "reflect"), the threshold is
    taken over its own pixels, and the binary steps are kept inside it."""
    n, height, width = images.shape
    cells = np.zeros(images.shape, bool)
    if (sizes == (height, width)).all():  # one size: the stack is the canvas, scipy mirrors its edges
        margin, canvas = 0, images.astype(np.float32)
    else:
        margin = int(4.0 * settings.smoothing + 0.5) + 1  # scipy's Gaussian reach (truncate 4), then Sobel's
        canvas = _mirrored_canvas(images, sizes, margin)
    rows, cols = np.arange(canvas.shape[1]), np.arange(canvas.shape[2])
    h, w = sizes[:, :1], sizes[:, 1:]
    inside = ((rows >= margin) & (rows < margin + h))[:, :, None] & ((cols >= margin) & (cols < margin + w))[
        :, None
    ]
    smooth = ndimage.gaussian_filter(canvas, (0, settings.smoothing, settings.smoothing))
    edges = _sobel_magnitudes(smooth)
    own = edges[inside]  # image after image
    starts = np.concatenate(([0], np.cumsum(inside.sum(axis=(1, 2)))))
    usable = np.maximum.reduceat(own, starts[:-1]) > np.minimum.reduceat(own, starts[:-1])
    thresholds = np.full(n, np.inf, edges.dtype)
    if usable.any():
        thresholds[usable] = _otsu_grouped(own, starts, usable)
    radius = settings.closing_radius
    foreground = (edges > thresholds[:, None, None]) & inside
    foreground = dilated_by_disk(foreground, radius) & inside  # closing, each image's border as its edge
    foreground = ~dilated_by_disk(~foreground, radius, beyond=True)  # erosion, nothing beyond the canvas
    labels, count = ndimage.label(_filled(foreground), _IN_PLANE_CROSS)
    for i in np.flatnonzero(usable & labels.any(axis=(1, 2))):
        cell_height, cell_width = sizes[i]
        centre = (margin + (cell_height - 1) / 2, margin + (cell_width - 1) / 2)
        cell = labels[i] == _central_label(labels[i], count, centre)
        if cell.sum() >= settings.min_area:
            cells[i, :cell_height, :cell_width] = cell[
                margin : margin + cell_height, margin : margin + cell_width
            ]
    return cells


def _filled(foreground: np.ndarray) -> np.ndarray:
    """``binary_fill_holes`` with the in-plane cross, by one labelling instead of its repeated
    dilations: background that no 4-connected path links to its image's border is a hole."""
    background, count = ndimage.label(~foreground, _IN_PLANE_CROSS)
    open_to_border = np.zeros(count + 1, bool)
    open_to_border[0] = True  # label 0: the foreground itself
    open_to_border[background[:, [0, -1]]] = True
    open_to_border[background[:, :, [0, -1]]] = True
    return foreground | ~open_to_border[background]


@numba.njit(cache=True)
def _mirrored_canvas(images: np.ndarray, sizes: np.ndarray, margin: int) -> np.ndarray:
    """Each image's true-size part, as float32, framed by ``margin`` pixels of its mirror image
    (edge pixels repeated: scipy's "reflect"), at the top left of a common canvas."""
    n, height, width = images.shape
    canvas = np.zeros((n, height + 2 * margin, width + 2 * margin), np.float32)
    for i in range(n):
        rows, cols = sizes[i, 0], sizes[i, 1]
        for r in range(rows + 2 * margin):
            source_row = mirror_index(r - margin, rows)
            for c in range(cols + 2 * margin):
                canvas[i, r, c] = images[i, source_row, mirror_index(c - margin, cols)]
    return canvas


def expand(mask: np.ndarray, pixels: int) -> np.ndarray:
    """The mask grown by ``pixels`` (the slightly larger object used for dark-field)."""
    return expand_all(mask[None], pixels)[0]


def expand_all(masks: np.ndarray, pixels: int) -> np.ndarray:
    """:func:`expand` of each mask of an (n, H, W) stack, each on its own."""
    if pixels <= 0 or not masks.any():
        return masks
    return dilated_by_disk(masks, pixels)


def dilated_by_disk(masks: np.ndarray, radius: int, beyond: bool = False) -> np.ndarray:
    """scipy's ``binary_dilation`` of each mask of an (n, H, W) stack by scikit-image's disk, the
    pixels beyond its edges counting as ``beyond``: the union of the mask shifted to each of the
    disk's offsets, a few times faster than scipy's generic structuring-element walk (tested equal)."""
    _, height, width = masks.shape
    padded = np.pad(masks, ((0, 0), (radius, radius), (radius, radius)), constant_values=beyond)
    out = np.zeros(masks.shape, bool)
    for dy, dx in np.argwhere(_disk(radius)):
        out |= padded[:, dy : dy + height, dx : dx + width]
    return out


# 4-connected within an image, nothing across images
_IN_PLANE_CROSS = np.zeros((3, 3, 3), bool)
_IN_PLANE_CROSS[1] = ndimage.generate_binary_structure(2, 1)
_SOBEL_SMOOTHING = np.array([1, 2, 1]) / 4


def otsu_thresholds(images: np.ndarray, bins: int = 256) -> np.ndarray:
    """scikit-image's ``threshold_otsu`` of each float image of an (n, H, W) stack (none of them
    constant), with one vectorised histogram for the stack instead of a call per image."""
    n = len(images)
    starts = np.arange(n + 1) * (images[0].size if n else 0)
    return _otsu_grouped(images.reshape(-1), starts, np.ones(n, bool), bins)


def _otsu_grouped(values: np.ndarray, starts: np.ndarray, picked: np.ndarray, bins: int = 256) -> np.ndarray:
    """``threshold_otsu`` of the picked groups of ``values`` (group k: ``values[starts[k]:starts[k + 1]]``,
    none constant). Each step is numpy's and scikit-image's own, element for element in the
    values' float type (numpy's bin edges and its one-ULP index corrections, the float32 counts
    and cumulative sums), so every threshold is theirs bit for bit (tested)."""
    groups = np.flatnonzero(picked)
    lengths = (starts[1:] - starts[:-1])[groups]
    if len(groups) == 0:
        return np.empty(0, values.dtype)
    values = (
        np.concatenate([values[starts[k] : starts[k + 1]] for k in groups]) if not picked.all() else values
    )
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    n = len(groups)
    group = np.repeat(np.arange(n), lengths)
    first, last = np.minimum.reduceat(values, offsets), np.maximum.reduceat(values, offsets)
    edges = np.linspace(first, last, bins + 1, axis=1, dtype=values.dtype)
    index = (((values - first[group]) / (last - first)[group]) * bins).astype(np.intp)
    index[index == bins] -= 1
    index[values < edges[group, index]] -= 1
    index[(values >= edges[group, index + 1]) & (index != bins - 1)] += 1
    counts = np.bincount(index + group * bins, minlength=n * bins).reshape(n, bins).astype(np.float32)
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


def _central_label(labels: np.ndarray, n: int, centre: tuple[float, float]) -> int:
    """The object under the image centre, else the one whose nearest pixel is closest to it."""
    cy, cx = centre
    under = labels[int(round(cy)), int(round(cx))]
    if under:
        return int(under)
    yy, xx = np.nonzero(labels)
    distance = (yy - cy) ** 2 + (xx - cx) ** 2
    nearest = np.full(n + 1, np.inf)
    np.minimum.at(nearest, labels[yy, xx], distance)
    return int(np.argmin(nearest))
