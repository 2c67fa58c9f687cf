"""ifcml's quality measurements on real Jurkat cells: each cell's own, CellProfiler's axes'
ratio exactly, and lower focus values for blurred cells."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ifcml.features.measure import measure_cells
from ifcml.features.objects import cell_objects
from ifcml.features.quality import ASPECT_RATIO, gradient_rms_name, quality_columns
from ifcml.features.recipe import Recipe

CHANNELS = ["BF", "DF"]
INDEX = np.r_[0:24, 1000:1024]  # G1 and S-phase cells: two montages


def _real_cells(store):
    images = store.images[:][INDEX]
    sizes = store.cells[["height", "width"]].to_numpy()[INDEX]
    cells, _ = cell_objects(images, None, sizes, CHANNELS, Recipe())
    return images, sizes, cells


def test_a_cell_alone_equals_the_same_cell_on_a_larger_canvas_among_others(jurkat_store):
    """A batch pads every cell to a common canvas; the padding and the neighbours never count."""
    images, sizes, cells = _real_cells(jurkat_store)
    n, c, h, w = images.shape
    canvas = np.zeros((n, c, h + 9, w + 5), images.dtype)
    canvas[:, :, :h, :w] = images
    padded_cells = np.zeros((n, h + 9, w + 5), bool)
    padded_cells[:, :h, :w] = cells
    batch = quality_columns(canvas, sizes, CHANNELS, padded_cells)
    assert all(np.isfinite(values).sum() >= n - 1 for values in batch.values())
    for i in (0, 7, 23, 24, 47):
        alone = quality_columns(images[i : i + 1], sizes[i : i + 1], CHANNELS, cells[i : i + 1])
        for name, values in alone.items():
            np.testing.assert_allclose(values[0], batch[name][i], rtol=1e-12, err_msg=f"cell {i}: {name}")


def test_aspect_ratio_is_cellprofilers_minor_over_major_axis(jurkat_store):
    images, sizes, cells = _real_cells(jurkat_store)
    recipe = Recipe()
    shape = measure_cells(images, CHANNELS, cells, cells, recipe)
    ratio = shape["Cells_AreaShape_MinorAxisLength"] / shape["Cells_AreaShape_MajorAxisLength"]
    ours = quality_columns(images, sizes, CHANNELS, cells)[ASPECT_RATIO]
    np.testing.assert_allclose(ours, ratio, rtol=1e-9)


def test_gradient_rms_is_scipys_sobel_over_the_outline(jurkat_store):
    images, sizes, cells = _real_cells(jurkat_store)
    ours = quality_columns(images, sizes, CHANNELS, cells)
    for k, channel in enumerate(CHANNELS):
        for i, ((height, width), outline) in enumerate(zip(sizes, cells, strict=True)):
            pixels = images[i, k, :height, :width] / 65535
            sobel = [ndimage.sobel(pixels, axis, mode="nearest") / 8 for axis in (0, 1)]
            want = np.sqrt(np.mean((sobel[0] ** 2 + sobel[1] ** 2)[outline[:height, :width]]))
            np.testing.assert_allclose(ours[gradient_rms_name(channel)][i], want, rtol=1e-12)


def test_a_blurred_cell_has_a_lower_gradient_rms(jurkat_store):
    images, sizes, cells = _real_cells(jurkat_store)
    blurred = ndimage.gaussian_filter(images.astype(np.float64), sigma=(0, 0, 1.5, 1.5)).astype(images.dtype)
    sharp = quality_columns(images, sizes, CHANNELS, cells)[gradient_rms_name("BF")]
    soft = quality_columns(blurred, sizes, CHANNELS, cells)[gradient_rms_name("BF")]
    assert (soft < sharp).mean() > 0.95
