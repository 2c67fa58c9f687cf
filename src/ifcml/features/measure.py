"""The cp-measure engine: CellProfiler's per-object measurements, many cells per call.

Cells are laid out on a montage of zero-framed tiles (:mod:`ifcml.features.tiling`) and each
measurement family runs once per montage. Every family used here works object by object,
granularity runs unsubsampled (:mod:`ifcml.features.granularity`) and Zernike moments are
taken in tile coordinates (:mod:`ifcml.features.zernike`), so a cell's values are the ones it
gets alone on its tile (tested). Granularity, radial distribution, texture and the Zernike sums
are ifcml's compiled kernels of CellProfiler's algorithms (each tested against cp-measure on
real cells); size and shape, Feret diameters, intensity and correlation are cp-measure's.
CellProfiler's whole-image steps (subsampled granularity background, image-wide thresholds) are
exactly what is left out: they leak an acquisition's signature into every cell.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from itertools import combinations

import numpy as np
from cp_measure.core import (
    measurecolocalization,
    measureobjectintensity,
    measureobjectsizeshape,
)

from ifcml.features import naming, zernike
from ifcml.features.granularity import granularity
from ifcml.features.radial import radial_distribution
from ifcml.features.recipe import Measurements, Recipe
from ifcml.features.texture import texture
from ifcml.features.tiling import Layout, tile, tile_labels
from ifcml.features.wanted import Wanted

UINT16_MAX = 65535  # CellProfiler reads 16-bit images as value / 65535

_CORRELATIONS: dict[str, Callable] = {
    "pearson": measurecolocalization.get_correlation_pearson,
    "manders_fold": measurecolocalization.get_correlation_manders_fold,
    "rwc": measurecolocalization.get_correlation_rwc,
    "costes": partial(measurecolocalization.get_correlation_costes, scale_max=UINT16_MAX),
}


def measure_cells(
    images: np.ndarray,
    channels: list[str],
    cells: np.ndarray,
    expanded: np.ndarray,
    recipe: Recipe,
    wanted: Wanted | None = None,
) -> dict[str, np.ndarray]:
    """Feature columns (CellProfiler names -> one value per cell) for (n, C, H, W) uint16 images.

    Cells with an empty mask get NaN. Position features are left out (see ``naming.POSITION``).
    With ``wanted``, families none of whose columns are wanted are skipped (:mod:`.wanted`).
    """
    n, _, height, width = images.shape
    layout = Layout(n, height, width, recipe.tile_padding)
    found = cells.reshape(n, -1).any(axis=1)
    if not found.any():
        return {}
    labels = {"Cells": tile_labels(cells, layout), "CellsExpanded": tile_labels(expanded, layout)}
    pixels = {ch: tile(images[:, k].astype(np.float64) / UINT16_MAX, layout) for k, ch in enumerate(channels)}
    columns: dict[str, np.ndarray] = {}
    found_disks: dict[str, zernike.UnitDisks] = {}

    def disks(obj: str) -> zernike.UnitDisks:
        """An object set's enclosing circles, found once per batch for shape and channels."""
        if obj not in found_disks:
            found_disks[obj] = zernike.unit_disks(labels[obj], layout.tile_shape)
        return found_disks[obj]

    def put(name: str, values) -> None:
        if not naming.POSITION.search(name):
            column = np.full(n, np.nan)
            column[found] = np.asarray(values, dtype=np.float64)
            columns[name] = column

    m = recipe.measurements
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # undefined values are NaN, on purpose
        shape = wanted.shape(m) if wanted else m
        if shape.sizeshape.enabled:
            _shape(labels["Cells"], disks, shape, put)
        for ch in channels:
            obj = "CellsExpanded" if ch in recipe.objects.expanded_channels else "Cells"
            per_channel = wanted.channel(m, obj, ch) if wanted else m
            _per_channel(obj, labels[obj], layout, disks, pixels[ch], ch, per_channel, put)
        for first, second in combinations(channels, 2):
            pair = wanted.pair(m, first, second) if wanted else m
            if pair.correlation.enabled:
                _correlation(labels["Cells"], pixels[first], pixels[second], first, second, pair, put)
    return columns


def _shape(label_image: np.ndarray, disks: Callable[[str], zernike.UnitDisks], m, put) -> None:
    for key, values in measureobjectsizeshape.get_sizeshape(label_image, None).items():
        put(naming.shape_name("Cells", key), values)
    if m.sizeshape.zernike_degree:
        moments = zernike.shape_features(disks("Cells"), m.sizeshape.zernike_degree)
        for key, values in moments.items():
            put(naming.shape_name("Cells", key), values)
    if m.sizeshape.feret:
        for key, values in measureobjectsizeshape.get_feret(label_image, None).items():
            put(naming.shape_name("Cells", key), values)


def _per_channel(
    obj: str,
    label_image: np.ndarray,
    layout: Layout,
    disks: Callable[[str], zernike.UnitDisks],
    pixels: np.ndarray,
    ch: str,
    m: Measurements,
    put,
) -> None:
    if m.intensity.enabled:
        for key, values in measureobjectintensity.get_intensity(label_image, pixels).items():
            if not key.endswith("_Z"):  # 2-D images: no Z
                put(naming.intensity_name(obj, key, ch), values)
    if m.texture.enabled:
        for scale in m.texture.scales:
            found = texture(label_image, pixels, scale, m.texture.gray_levels)
            for key, values in found.items():
                put(naming.texture_name(obj, key, ch), values)
    if m.granularity.enabled:
        g = m.granularity
        for key, values in granularity(
            label_image, pixels, layout.tile_shape, g.element_size, g.spectrum_length
        ).items():
            put(naming.granularity_name(obj, key, ch), values)
    if m.radial_distribution.enabled:
        r = m.radial_distribution
        found = {}
        if r.bins:
            found = radial_distribution(label_image, pixels, r.bins)
        if r.zernike_degree:
            found |= zernike.radial_features(disks(obj), pixels, r.zernike_degree)
        for key, values in found.items():
            put(naming.radial_name(obj, key, ch), values)


def _correlation(label_image, first_pixels, second_pixels, first: str, second: str, m, put) -> None:
    for method in m.correlation.methods:
        function = _CORRELATIONS[method]
        kwargs = {} if method in ("pearson", "costes") else {"thr": m.correlation.threshold_percent}
        for key, values in function(first_pixels, second_pixels, label_image, **kwargs).items():
            put(naming.correlation_name("Cells", key, first, second), values)
