"""Zernike moments of each object (shape) and of its intensity (radial distribution).

CellProfiler's definition (centrosome's enclosing circle and polynomials, cp-measure's
normalisation and its ``r^2 > 1`` cut-off), computed in each cell's own tile coordinates
instead of the montage's. The pixels that define an object's enclosing circle lie exactly on
it, so whether the cut-off keeps them depends on the floating-point round-off of their
coordinates: measured in montage coordinates (as CellProfiler and cp-measure do), a cell's
moments change with where it lies in the montage. In tile coordinates they do not, so a cell
gets the same values alone or in any batch, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from centrosome import cpmorphology, zernike

from ifcml.features.object_pixels import objects_in_order


@dataclass(frozen=True)
class UnitDisks:
    """Every object's pixels in its enclosing circle's unit-disk coordinates, object after
    object (row-major within each: the order in which CellProfiler sums them)."""

    starts: np.ndarray  # object o holds pixels starts[o]:starts[o + 1]
    flat: np.ndarray  # their flat indexes in the montage
    x: np.ndarray
    y: np.ndarray
    radii: np.ndarray
    counts: np.ndarray


def unit_disks(labels: np.ndarray, tile_shape: tuple[int, int]) -> UnitDisks:
    """The objects' enclosing circles (centrosome's) and their pixels in tile coordinates:
    computed once per label image, shared by the shape and every channel's moments."""
    n = int(labels.max())
    objects = np.arange(1, n + 1)
    hull = cpmorphology.convex_hull_ijv(_outline_in_tiles(labels, *tile_shape), objects)
    centers, radii = cpmorphology.minimum_enclosing_circle(None, objects, hull_and_point_count=hull)
    flat, starts = objects_in_order(labels)
    seg = labels.ravel()[flat] - 1
    counts = np.diff(starts)
    rows, cols = np.divmod(flat, labels.shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):  # one-pixel objects: radius 0 -> NaN, dropped below
        y = (rows % tile_shape[0] - centers[seg, 0]) / radii[seg]
        x = (cols % tile_shape[1] - centers[seg, 1]) / radii[seg]
    return UnitDisks(
        np.concatenate(([0], np.cumsum(counts))),
        flat,
        x,
        y,
        np.asarray(radii, np.float64),
        counts.astype(np.float64),
    )


@numba.njit(cache=True)
def _outline_in_tiles(labels: np.ndarray, tile_rows: int, tile_cols: int) -> np.ndarray:
    """(row in its tile, column in its tile, label) of every outline pixel, row-major: centrosome's
    ``outline`` (an object pixel with an 8-neighbour of another value, or on the image's
    border), as int32 rows for its convex hull."""
    rows, cols = labels.shape
    found = np.empty((labels.size, 3), np.int32)
    count = 0
    for r in range(rows):
        for c in range(cols):
            label = labels[r, c]
            if label == 0:
                continue
            edge = r == 0 or c == 0 or r == rows - 1 or c == cols - 1
            for dr in range(-1, 2):
                for dc in range(-1, 2):
                    if not edge and labels[r + dr, c + dc] != label:
                        edge = True
            if edge:
                found[count, 0], found[count, 1], found[count, 2] = r % tile_rows, c % tile_cols, label
                count += 1
    return found[:count].copy()


def shape_features(disks: UnitDisks, degree: int) -> dict[str, np.ndarray]:
    """``Zernike_n_m``: |moment| / enclosing-circle area (MeasureObjectSizeShape)."""
    indexes, moments = _moments(disks, degree, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.abs(moments) / (np.pi * disks.radii * disks.radii)[:, None]
    return {f"Zernike_{n}_{m}": score[:, i] for i, (n, m) in enumerate(indexes)}


def radial_features(disks: UnitDisks, pixels: np.ndarray, degree: int) -> dict[str, np.ndarray]:
    """``RadialDistribution_Zernike{Magnitude,Phase}_n_m`` (MeasureObjectIntensityDistribution)."""
    indexes, moments = _moments(disks, degree, pixels.ravel()[disks.flat].astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        magnitude = np.abs(moments) / disks.counts[:, None]
    phase = np.arctan2(moments.real, moments.imag)  # CellProfiler's (real, imag) argument order
    features = {}
    for i, (n, m) in enumerate(indexes):
        features[f"RadialDistribution_ZernikeMagnitude_{n}_{m}"] = magnitude[:, i]
        features[f"RadialDistribution_ZernikePhase_{n}_{m}"] = phase[:, i]
    return features


def _moments(disks: UnitDisks, degree: int, weights: np.ndarray | None):
    """Per-object sums of every Zernike polynomial (x the pixel's weight, or 1)."""
    indexes = zernike.get_zernike_indexes(degree + 1)
    coefficients = zernike.construct_zernike_lookuptable(indexes)
    # Horner's coefficients, highest power first, padded with leading zeros to one length:
    # 0 * r^2 + 0 is exactly 0, so every polynomial takes the same steps and the same values
    steps = (indexes[:, 0] - indexes[:, 1]) // 2 + 1
    table = np.zeros((steps.max(), len(indexes)))
    for k, count in enumerate(steps):
        table[steps.max() - count :, k] = coefficients[k, :count]
    sums = np.empty((len(disks.counts), len(indexes)), np.complex128)
    sums.real, sums.imag = _polynomial_sums(
        disks.starts, disks.x, disks.y, weights, indexes[:, 1].astype(np.int64), table
    )
    return indexes, sums


@numba.njit(cache=True)
def _polynomial_sums(starts, x, y, weights, orders_m, table):
    """Per-object sums, real and imaginary parts, of every Zernike polynomial at unit-disk
    coordinates (x, y) times the pixel's weight (or 1). The radial parts by Horner's scheme in
    r^2, all polynomials at once; z^m by repeated products (centrosome's polynomials, equal to
    round-off). Each object's sums run over its pixels in order, kept in registers."""
    steps, count = table.shape
    top = orders_m.max()
    real_sums, imag_sums = np.zeros((len(starts) - 1, count)), np.zeros((len(starts) - 1, count))
    real_powers, imag_powers = np.empty(top + 1), np.empty(top + 1)
    radial, real_sum, imag_sum = np.empty(count), np.empty(count), np.empty(count)
    for o in range(len(starts) - 1):
        real_sum[:] = 0.0
        imag_sum[:] = 0.0
        for p in range(starts[o], starts[o + 1]):
            r_square = x[p] * x[p] + y[p] * y[p]
            real_powers[0], imag_powers[0] = 1.0, 0.0
            real_powers[1], imag_powers[1] = y[p], x[p]  # z = y + i x
            for m in range(2, top + 1):
                a, b = real_powers[m - 1], imag_powers[m - 1]
                real_powers[m], imag_powers[m] = a * y[p] - b * x[p], a * x[p] + b * y[p]
            radial[:] = 0.0
            for step in range(steps):
                for k in range(count):
                    radial[k] = radial[k] * r_square + table[step, k]
            weight = 1.0 if weights is None else weights[p]
            for k in range(count):
                # CellProfiler's unit-disk cut-off (NaN radii included)
                value = radial[k] * weight if r_square <= 1 else 0.0
                real_sum[k] += value * real_powers[orders_m[k]]
                imag_sum[k] += value * imag_powers[orders_m[k]]
        real_sums[o] = real_sum
        imag_sums[o] = imag_sum
    return real_sums, imag_sums
