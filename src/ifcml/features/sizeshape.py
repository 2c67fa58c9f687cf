"""CellProfiler's size and shape measurements (MeasureObjectSizeShape, 2-D), as cp-measure's
``get_sizeshape`` computes them, in whole-montage passes.

cp-measure asks scikit-image's regionprops for each object's convex hull, perimeters, Euler
number, filled area and a distance transform, one object at a time (about 0.9 ms per cell).
Each of these is a count or a sum over the pixels near the object, so on a montage of framed
tiles (one object per tile, zero frames between) one pass over the montage and a histogram per
tile give the same numbers: the pixel neighbourhoods, pixel codes and summation orders are the
ones regionprops sees in the object's bounding box. The moment-derived features are cp-measure's
own functions, called as it calls them. Values equal cp-measure's, bit for bit (tested on real
cells).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from cp_measure.core.measureobjectsizeshape import (
    axes_eccentricity_orientation,
    inertia_2d,
    moment_feature_dict,
    spatial_moments_2d,
)
from scipy import ndimage

from ifcml.features.object_pixels import objects_in_order, pairwise_sum

_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
# scikit-image's perimeter: each border pixel's code (itself 1, edge neighbours 2, corner
# neighbours 10) weighs the length of boundary it carries
_PERIMETER_CODES = np.array([[10, 2, 10], [2, 1, 2], [10, 2, 10]])
_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1
_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2)
_PERIMETER_WEIGHTS[[13, 23]] = (1 + math.sqrt(2)) / 2
# a 2 x 2 window's configuration (bit per pixel), for the Euler number (8-connected) and
# Crofton's perimeter (4 directions), each a weighted count of configurations
_QUAD_CODES = np.array([[0, 0, 0], [0, 1, 4], [0, 2, 8]])
_EULER_8 = [0, 0, 0, 0, 0, 0, -1, 0, 1, 0, 0, 0, 0, 0, -1, 0]
_DIAGONAL = np.pi / (4 * np.sqrt(2))
_CROFTON_4 = [
    0,
    np.pi / 4 * (1 + 1 / (np.sqrt(2))),
    _DIAGONAL,
    np.pi / (2 * np.sqrt(2)),
    0,
    np.pi / 4 * (1 + 1 / (np.sqrt(2))),
    0,
    _DIAGONAL,
    np.pi / 4,
    np.pi / 2,
    _DIAGONAL,
    _DIAGONAL,
    np.pi / 4,
    np.pi / 2,
    0,
    0,
]


def size_shape(labels: np.ndarray, tile_shape: tuple[int, int], to_edge: np.ndarray) -> dict[str, np.ndarray]:
    """cp-measure's ``get_sizeshape(labels, None)`` (same keys in the same order) for objects
    1..K of a montage of framed tiles, given each pixel's distance to the nearest background
    pixel (``to_edge``, scipy's Euclidean distance transform of ``labels > 0``)."""
    n = int(labels.max())
    mask = labels > 0
    owner = _tile_owners(labels, tile_shape)
    flat, starts = objects_in_order(labels)
    objects = labels.ravel()[flat]
    area = np.diff(starts) * 1.0
    boxes = ndimage.find_objects(labels)
    top, left = np.array([[b[0].start, b[1].start] for b in boxes]).T
    bottom, right = np.array([[b[0].stop, b[1].stop] for b in boxes]).T
    box_area = ((bottom - top) * (right - left)) * 1.0
    rows, cols = np.divmod(flat, labels.shape[1])
    centre_y = np.bincount(objects, rows, minlength=n + 1)[1:] / area
    centre_x = np.bincount(objects, cols, minlength=n + 1)[1:] / area

    eroded = mask.copy()  # erosion by the cross, nothing beyond the montage's edge
    eroded[1:] &= mask[:-1]
    eroded[:-1] &= mask[1:]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    eroded[[0, -1]] = False
    eroded[:, [0, -1]] = False
    border = (mask & ~eroded).astype(np.uint8)
    perimeter_codes = ndimage.convolve(border, _PERIMETER_CODES, mode="constant", cval=0)
    perimeter = np.array([h @ _PERIMETER_WEIGHTS for h in _histograms(owner, perimeter_codes, n, 50)])
    quads = _histograms(
        owner, ndimage.convolve(mask.astype(np.uint8), _QUAD_CODES, mode="constant", cval=0), n, 16
    )
    filled_area = np.bincount(owner[mask | _holes(mask)], minlength=n + 1)[1:] * 1.0
    convex_area = _convex_areas(labels, tile_shape[0], n) * 1.0
    max_radius, mean_radius, median_radius = _radii(to_edge.ravel()[flat], starts)

    raw, central, normalized, hu = spatial_moments_2d(labels)
    inertia = inertia_2d(central)
    major, minor, eccentricity, orientation = axes_eccentricity_orientation(inertia)
    return {
        "Area": area,
        "BoundingBoxArea": box_area,
        "ConvexArea": convex_area,
        "EquivalentDiameter": np.array([(2 * 2 * a / math.pi) ** (1 / 2) for a in area]),
        "Perimeter": perimeter,
        "MajorAxisLength": major,
        "MinorAxisLength": minor,
        "Eccentricity": eccentricity,
        "Orientation": orientation * (180 / np.pi),
        "Center_X": centre_x,
        "Center_Y": centre_y,
        "BoundingBoxMinimum_X": left,
        "BoundingBoxMaximum_X": right,
        "BoundingBoxMinimum_Y": top,
        "BoundingBoxMaximum_Y": bottom,
        "FormFactor": 4.0 * np.pi * area / perimeter**2,
        "Extent": area / box_area,
        "Solidity": area / convex_area,
        "Compactness": perimeter**2 / np.array([max(x, 1) for x in 4.0 * np.pi * area]),
        "EulerNumber": np.array([_EULER_8 @ h for h in quads]),
        "MaximumRadius": max_radius,
        "MeanRadius": mean_radius,
        "MedianRadius": median_radius,
        "FilledArea": filled_area,
        **moment_feature_dict(raw, central, normalized, hu, inertia),
        "PerimeterCrofton": np.array([_CROFTON_4 @ h for h in quads]),
    }


def _tile_owners(labels: np.ndarray, tile_shape: tuple[int, int]) -> np.ndarray:
    """Each pixel's tile's object (0 for an empty tile): the object its neighbourhood counts for."""
    th, tw = tile_shape
    grid = labels.reshape(labels.shape[0] // th, th, labels.shape[1] // tw, tw)
    per_tile = grid.max(axis=(1, 3))
    return np.repeat(np.repeat(per_tile, th, axis=0), tw, axis=1)


def _histograms(owner: np.ndarray, codes: np.ndarray, n: int, bins: int) -> np.ndarray:
    """Per object, how many pixels of its tile have each code (rows 0..n-1 for objects 1..n)."""
    counts = np.bincount((owner.astype(np.int64) * bins + codes).ravel(), minlength=(n + 1) * bins)
    return counts.reshape(n + 1, bins)[1:]


def _holes(mask: np.ndarray) -> np.ndarray:
    """Background not 8-connected to the montage's edge (``binary_fill_holes`` with a 3 x 3
    structure adds exactly these pixels)."""
    background, _ = ndimage.label(~mask, np.ones((3, 3)))
    edge = np.concatenate((background[[0, -1]].ravel(), background[:, [0, -1]].ravel()))
    return ~np.isin(background, edge)


@numba.njit(cache=True)
def _radii(distances: np.ndarray, starts: np.ndarray):
    """Maximum, mean and median distance to the edge over each object's pixels (object after
    object, row-major within each, as numpy takes them from the object's bounding box): numpy's
    max, its pairwise mean, and its median (the middle value, or the mean of the middle two)."""
    n = len(starts) - 1
    largest, mean, median = np.empty(n), np.empty(n), np.empty(n)
    for o in range(n):
        part = distances[starts[o] : starts[o + 1]]
        ordered = np.sort(part)
        half = len(part) // 2
        largest[o] = ordered[-1]
        mean[o] = pairwise_sum(part) / len(part)
        median[o] = ordered[half] if len(part) % 2 else (ordered[half - 1] + ordered[half]) / 2
    return largest, mean, median


@numba.njit(cache=True)
def _convex_areas(labels: np.ndarray, tile_rows: int, n: int) -> np.ndarray:
    """scikit-image's convex hull area (``convex_hull_image(...).sum()``): pixel centres inside
    or on the hull of the pixels' edge midpoints. In doubled coordinates every vertex and pixel
    centre is an integer, so the hull (Andrew's monotone chain over each row's end pixels) and
    the count of centres per row are exact."""
    height, width = labels.shape
    first = np.full((n + 1, tile_rows), width, np.int64)
    last = np.full((n + 1, tile_rows), -1, np.int64)
    top = np.full(n + 1, height, np.int64)
    for r in range(height):
        for c in range(width):
            k = labels[r, c]
            if k > 0:
                local = r % tile_rows
                first[k, local] = min(first[k, local], c)
                last[k, local] = max(last[k, local], c)
                top[k] = min(top[k], r - local)
    areas = np.zeros(n, np.int64)
    points = np.empty((8 * tile_rows, 2), np.int64)
    hull = np.empty((8 * tile_rows + 1, 2), np.int64)
    for k in range(1, n + 1):
        m = 0
        for local in range(tile_rows):
            if last[k, local] < 0:
                continue
            y = 2 * (top[k] + local)
            for c in (first[k, local], last[k, local]):
                for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
                    points[m, 0] = 2 * c + dx
                    points[m, 1] = y + dy
                    m += 1
        h = _monotone_chain(points[:m], hull)
        areas[k - 1] = _centres_inside(hull[:h])
    return areas


@numba.njit(cache=True)
def _monotone_chain(points: np.ndarray, hull: np.ndarray) -> int:
    """Counter-clockwise convex hull of integer points (Andrew's monotone chain) into ``hull``;
    returns its vertex count (collinear and repeated points left out)."""
    ordered = points[np.argsort(points[:, 0] * (1 << 32) + points[:, 1])]
    h = 0
    for p in ordered:  # lower hull
        while h >= 2 and _cross(hull[h - 2], hull[h - 1], p) <= 0:
            h -= 1
        hull[h] = p
        h += 1
    lower = h + 1
    for i in range(len(ordered) - 2, -1, -1):  # upper hull
        p = ordered[i]
        while h >= lower and _cross(hull[h - 2], hull[h - 1], p) <= 0:
            h -= 1
        hull[h] = p
        h += 1
    return h - 1  # the last point is the first


@numba.njit(cache=True, inline="always")
def _cross(o, a, b) -> int:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


@numba.njit(cache=True)
def _centres_inside(hull: np.ndarray) -> int:
    """Pixel centres (even x, even y) inside or on a counter-clockwise convex polygon: per row,
    each edge bounds x from one side, in exact integer arithmetic."""
    count = 0
    low, high = hull[:, 1].min(), hull[:, 1].max()
    for y in range(low + (low & 1), high + 1, 2):
        x_min, x_max = -(1 << 40), 1 << 40
        for i in range(len(hull)):
            x1, y1 = hull[i]
            x2, y2 = hull[(i + 1) % len(hull)]
            # inside or on: (x2 - x1)(y - y1) - (y2 - y1)(x - x1) >= 0, i.e. dy * x <= bound
            dy = y2 - y1
            bound = (x2 - x1) * (y - y1) + dy * x1
            if dy > 0:
                x_max = min(x_max, bound // dy)
            elif dy < 0:
                x_min = max(x_min, -(bound // -dy))
            elif bound < 0:  # a horizontal edge with this row outside it
                x_max = x_min - 1
        count += max(0, x_max // 2 - -(-x_min // 2) + 1)
    return count
