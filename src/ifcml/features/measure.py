"""The cp-measure engine: CellProfiler's per-object measurements, many cells per call.

Cells are laid out on a montage of zero-framed tiles (:mod:`ifcml.features.tiling`) and each
measurement family runs once per montage. Every family used here works object by object,
granularity runs unsubsampled (:mod:`ifcml.features.granularity`) and Zernike moments are
taken in tile coordinates (:mod:`ifcml.features.zernike`), so a cell's values are the ones it
gets alone on its tile (tested). Size and shape, intensity, texture, granularity, radial
distribution, correlation and the Zernike sums are ifcml's kernels of CellProfiler's algorithms,
each tested against cp-measure on real cells; the moments, the Feret diameters and Costes'
thresholds are cp-measure's own functions. Geometry that several families share is found once
per batch (:mod:`ifcml.features.objectset`). CellProfiler's whole-image steps (subsampled
granularity background, image-wide thresholds) are exactly what is left out: they leak an
acquisition's signature into every cell.
"""

from __future__ import annotations

import warnings
from itertools import combinations

import numpy as np
from cp_measure.core import (
    measurecolocalization,
    measureobjectsizeshape,
)

from ifcml.features import correlation, naming, zernike
from ifcml.features.granularity import granularity
from ifcml.features.intensity import intensity
from ifcml.features.objectset import ObjectSet
from ifcml.features.radial import radial_distribution
from ifcml.features.recipe import Measurements, Recipe
from ifcml.features.sizeshape import size_shape
from ifcml.features.texture import texture
from ifcml.features.tiling import Layout, tile, tile_labels
from ifcml.features.wanted import Wanted

UINT16_MAX = 65535  # CellProfiler reads 16-bit images as value / 65535


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
    objects = {
        name: ObjectSet(name, tile_labels(masks, layout), layout.tile_shape)
        for name, masks in (("Cells", cells), ("CellsExpanded", expanded))
    }
    pixels = {ch: tile(images[:, k].astype(np.float64) / UINT16_MAX, layout) for k, ch in enumerate(channels)}
    columns: dict[str, np.ndarray] = {}

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
            _shape(objects["Cells"], shape, put)
        for ch in channels:
            obj = "CellsExpanded" if ch in recipe.objects.expanded_channels else "Cells"
            per_channel = wanted.channel(m, obj, ch) if wanted else m
            _per_channel(objects[obj], pixels[ch], ch, per_channel, put)
        for first, second in combinations(channels, 2):
            pair = wanted.pair(m, first, second) if wanted else m
            if pair.correlation.enabled:
                _correlation(objects["Cells"].labels, pixels[first], pixels[second], first, second, pair, put)
    return columns


def _shape(cells: ObjectSet, m, put) -> None:
    for key, values in size_shape(cells.labels, cells.tile_shape, cells.to_edge).items():
        put(naming.shape_name(cells.name, key), values)
    if m.sizeshape.zernike_degree:
        for key, values in zernike.shape_features(cells.disks, m.sizeshape.zernike_degree).items():
            put(naming.shape_name(cells.name, key), values)
    if m.sizeshape.feret:
        for key, values in measureobjectsizeshape.get_feret(cells.labels, None).items():
            put(naming.shape_name(cells.name, key), values)


def _per_channel(objects: ObjectSet, pixels: np.ndarray, ch: str, m: Measurements, put) -> None:
    obj, label_image = objects.name, objects.labels
    if m.intensity.enabled:
        for key, values in intensity(label_image, pixels).items():
            if not key.endswith("_Z"):  # 2-D images: no Z
                put(naming.intensity_name(obj, key, ch), values)
    if m.texture.enabled:
        for scale in m.texture.scales:
            found = texture(label_image, pixels, scale, m.texture.gray_levels)
            for key, values in found.items():
                put(naming.texture_name(obj, key, ch), values)
    if m.granularity.enabled:
        g = m.granularity
        spectrum = granularity(label_image, pixels, objects.tile_shape, g.element_size, g.spectrum_length)
        for key, values in spectrum.items():
            put(naming.granularity_name(obj, key, ch), values)
    if m.radial_distribution.enabled:
        r = m.radial_distribution
        found = {}
        if r.bins:
            found = radial_distribution(label_image, pixels, r.bins, objects.to_edge)
        if r.zernike_degree:
            found |= zernike.radial_features(objects.disks, pixels, r.zernike_degree)
        for key, values in found.items():
            put(naming.radial_name(obj, key, ch), values)


def _correlation(label_image, first_pixels, second_pixels, first: str, second: str, m, put) -> None:
    methods = m.correlation.methods
    found = {}
    if set(methods) & set(correlation.METHODS):
        found = correlation.correlations(
            label_image, first_pixels, second_pixels, m.correlation.threshold_percent
        )
    if "costes" in methods:
        found["costes"] = measurecolocalization.get_correlation_costes(
            first_pixels, second_pixels, label_image, scale_max=UINT16_MAX
        )
    for method in methods:
        for key, values in found[method].items():
            put(naming.correlation_name("Cells", key, first, second), values)
