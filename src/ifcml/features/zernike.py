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

import numba
import numpy as np
from centrosome import cpmorphology, zernike


def shape_features(labels: np.ndarray, tile_shape: tuple[int, int], degree: int) -> dict[str, np.ndarray]:
    """``Zernike_n_m``: |moment| / enclosing-circle area (MeasureObjectSizeShape)."""
    indexes, (moments,), radii, _ = _moment_sums(labels, tile_shape, degree, [None])
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.abs(moments) / (np.pi * radii * radii)[:, None]
    return {f"Zernike_{n}_{m}": score[:, i] for i, (n, m) in enumerate(indexes)}


def radial_features(
    labels: np.ndarray, tile_shape: tuple[int, int], pixels: np.ndarray, degree: int
) -> dict[str, np.ndarray]:
    """``RadialDistribution_Zernike{Magnitude,Phase}_n_m`` (MeasureObjectIntensityDistribution)."""
    indexes, (moments,), _, counts = _moment_sums(labels, tile_shape, degree, [pixels])
    with np.errstate(invalid="ignore", divide="ignore"):
        magnitude = np.abs(moments) / counts[:, None]
    phase = np.arctan2(moments.real, moments.imag)  # CellProfiler's (real, imag) argument order
    features = {}
    for i, (n, m) in enumerate(indexes):
        features[f"RadialDistribution_ZernikeMagnitude_{n}_{m}"] = magnitude[:, i]
        features[f"RadialDistribution_ZernikePhase_{n}_{m}"] = phase[:, i]
    return features


def _moment_sums(labels, tile_shape, degree, weights):
    """Per-object sums of every Zernike polynomial (x weight image, or 1 for None), in tile coordinates."""
    indexes = zernike.get_zernike_indexes(degree + 1)
    n = int(labels.max())
    objects = np.arange(1, n + 1)
    edge_rows, edge_cols = np.nonzero(cpmorphology.outline(labels))
    edges = np.column_stack(
        (edge_rows % tile_shape[0], edge_cols % tile_shape[1], labels[edge_rows, edge_cols])
    ).astype(np.int32)
    hull = cpmorphology.convex_hull_ijv(edges, objects)
    centers, radii = cpmorphology.minimum_enclosing_circle(None, objects, hull_and_point_count=hull)
    rows, cols = np.nonzero(labels)
    seg = labels[rows, cols] - 1
    counts = np.bincount(seg, minlength=n).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # one-pixel objects: radius 0 -> NaN, dropped below
        y = (rows % tile_shape[0] - centers[seg, 0]) / radii[seg]
        x = (cols % tile_shape[1] - centers[seg, 1]) / radii[seg]
    pixel_weights = [None if w is None else w[rows, cols].astype(np.float64) for w in weights]
    coefficients = zernike.construct_zernike_lookuptable(indexes)
    sums = [_polynomial_sums(seg, x, y, w, indexes, coefficients, n) for w in pixel_weights]
    return indexes, sums, np.asarray(radii, dtype=np.float64), counts


@numba.njit(cache=True)
def _polynomial_sums(seg, x, y, weights, indexes, coefficients, n):
    """Per-object sums of every Zernike polynomial at unit-disk coordinates (x, y), times the
    pixel's weight (or 1), in one pass over the pixels: the radial part by Horner's scheme in
    r^2, z^m by repeated products (centrosome's polynomials, equal to round-off)."""
    sums = np.zeros((n, len(indexes)), np.complex128)
    top = indexes[:, 1].max()
    powers = np.empty(top + 1, np.complex128)
    for p in range(len(seg)):
        r_square = x[p] * x[p] + y[p] * y[p]
        z = y[p] + 1j * x[p]
        power = z
        for m in range(1, top + 1):
            powers[m] = power
            power = power * z
        for k in range(len(indexes)):
            order, m = indexes[k, 0], indexes[k, 1]
            radial = 0.0
            for c in coefficients[k, : (order - m) // 2 + 1]:
                radial = radial * r_square + c
            if not r_square <= 1:  # CellProfiler's unit-disk cut-off (NaN radii included)
                radial = 0.0
            value = radial if weights is None else radial * weights[p]
            sums[seg[p], k] += value if m == 0 else value * powers[m]
    return sums
