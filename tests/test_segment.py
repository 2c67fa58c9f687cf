"""Bright-field segmentation of single cells (the classical branch's objects)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import disk

from ifcml.features.segment import (
    dilated_by_disk,
    expand,
    expand_all,
    otsu_thresholds,
    segment_bright_field,
    segment_bright_fields,
)
from ifcml.io.detect import open_source
from ifcml.io.store import write_store
from ifcml.simulate import SimulatedSource, SimulationSettings


def test_simulated_cells_are_found_where_they_are():
    """The object covers the true cell; it may include the refractive rim and halo outside it."""
    settings = SimulationSettings(patients=2, timepoints=("day0",), cells_per_sample=60, channels={1: "BF"})
    coverage, growth, overlap = [], [], []
    for chunk in SimulatedSource(settings).chunks(64):
        for image, truth in zip(chunk.images, chunk.masks, strict=True):
            found, true = segment_bright_field(image[0]), truth[0].astype(bool)
            coverage.append((found & true).sum() / true.sum())
            growth.append(found.sum() / true.sum())
            overlap.append((found & true).sum() / (found | true).sum())
    assert np.median(coverage) > 0.95
    assert 0.9 < np.median(growth) < 2.0
    assert np.mean(np.array(overlap) > 0.5) > 0.9


@pytest.fixture(scope="module")
def jurkat_bright_field(tmp_path_factory):
    from conftest import JURKAT

    if not JURKAT.is_dir():
        pytest.skip(f"real Jurkat montages not found at {JURKAT}")
    store = write_store(
        [open_source(JURKAT, "montage", channels={3: "BF"}, grid="30x30")], tmp_path_factory.mktemp("j") / "s"
    )
    return store.cells, store.images[:][:, 0]


def test_real_cells_segment_and_grow_through_the_cell_cycle(jurkat_bright_field):
    cells, images = jurkat_bright_field
    areas = np.array([segment_bright_field(image).sum() for image in images])
    assert (areas > 0).mean() > 0.99
    median = {
        label: np.median(areas[(cells["label"] == label).to_numpy()]) for label in ("G1", "S_phase", "G2")
    }
    assert median["G1"] < median["S_phase"] < median["G2"]  # cells grow from G1 to G2
    assert 200 < median["G1"] < 40 * 40 / 2


def test_flat_or_tiny_images_fail_cleanly():
    assert not segment_bright_field(np.full((30, 30), 500, np.uint16)).any()
    assert not segment_bright_field(np.ones((2, 9), np.uint16)).any()


def test_the_object_at_the_centre_is_kept():
    image = np.full((41, 41), 600.0)
    yy, xx = np.mgrid[:41, :41]
    for cy, cx, r in ((20, 20, 8), (5, 5, 3)):  # a cell at the centre and debris in a corner
        ring = np.abs(np.hypot(yy - cy, xx - cx) - r) < 1.2
        image[ring] = 300
    mask = segment_bright_field(image.astype(np.uint16))
    assert mask[20, 20] and not mask[5, 5]
    assert expand(mask, 2).sum() > mask.sum()


def test_a_stack_segments_each_image_as_if_alone(jurkat_bright_field):
    """One call per stack of same-size cells (the engine's way) must give each cell the mask it
    gets alone: no filter, structure or threshold may reach across the stack."""
    _, images = jurkat_bright_field
    stack = images[np.r_[0:20, 1000:1020, 2500:2520]]
    masks = segment_bright_fields(stack)
    grown = expand_all(masks, 2)
    for image, mask, wide in zip(stack, masks, grown, strict=True):
        np.testing.assert_array_equal(mask, segment_bright_field(image))
        np.testing.assert_array_equal(wide, expand(mask, 2))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stacked_otsu_is_scikit_image_bit_for_bit(jurkat_bright_field, dtype):
    """One histogram for a whole stack must give each image scikit-image's own threshold, to the
    bit: a threshold one bin off moves the rim of every cell near it."""
    _, images = jurkat_bright_field
    stack = images[np.r_[0:300, 1000:1300, 2500:2800]].astype(dtype)
    stack[0, :3] = 0  # a wide range with one crowded bin
    want = np.array([threshold_otsu(image) for image in stack])
    got = otsu_thresholds(stack)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_cells_of_many_sizes_segment_in_one_call_as_if_alone(jurkat_bright_field):
    """An instrument's file holds cells of many sizes: one call for all of them (each on a
    common canvas, in a frame of its own mirror image) must give every cell the mask it gets
    alone at its true size, down to the smallest images."""
    _, images = jurkat_bright_field
    stack = images[np.r_[0:30, 1000:1030, 2500:2530]]
    rng = np.random.default_rng(11)
    sizes = np.stack(
        [rng.integers(2, stack.shape[1] + 1, len(stack)), rng.integers(2, stack.shape[2] + 1, len(stack))], 1
    )
    sizes[:5] = stack.shape[1:]  # some at the canvas size
    masks = segment_bright_fields(stack, sizes=sizes)
    found = 0
    for image, mask, (height, width) in zip(stack, masks, sizes, strict=True):
        assert not mask[height:].any() and not mask[:, width:].any()
        np.testing.assert_array_equal(mask[:height, :width], segment_bright_field(image[:height, :width]))
        found += mask.any()
    assert found > len(stack) / 3  # most crops still hold a cell


@pytest.mark.parametrize("radius", [0, 1, 2, 3, 6])
def test_disk_dilation_and_erosion_are_scipys(jurkat_bright_field, radius):
    """The closing and the dark-field expansion use shifted unions in place of scipy's binary
    morphology: the same masks, at the edges too (beyond counts as background for dilation and
    for erosion), on random masks of any size and on real cells' masks."""
    _, images = jurkat_bright_field
    rng = np.random.default_rng(radius)
    stacks = [rng.random(shape) > 0.5 for shape in ((20, 17, 23), (4, 1, 5), (3, 2, 2))]
    stacks.append(segment_bright_fields(images[:64]))
    structure = disk(radius)[None]
    for masks in stacks:
        np.testing.assert_array_equal(
            dilated_by_disk(masks, radius), ndimage.binary_dilation(masks, structure)
        )
        np.testing.assert_array_equal(
            ~dilated_by_disk(~masks, radius, beyond=True),
            ndimage.binary_erosion(masks, structure, border_value=0),
        )
