"""The paper's crop/pad and contrast stretch."""

from __future__ import annotations

import numpy as np

from ifcml.preprocess import CropSettings, crop_or_pad, preprocess, stretch_to_uint8, uniform_corner_stats


def _canvas(images):
    n, c = len(images), images[0].shape[0]
    h = max(i.shape[1] for i in images)
    w = max(i.shape[2] for i in images)
    canvas = np.zeros((n, c, h, w), np.uint16)
    for k, image in enumerate(images):
        canvas[k, :, : image.shape[1], : image.shape[2]] = image
    heights = np.array([i.shape[1] for i in images])
    widths = np.array([i.shape[2] for i in images])
    return canvas, heights, widths


def test_large_images_are_cropped_around_the_centre():
    image = np.arange(2 * 60 * 70, dtype=np.uint16).reshape(2, 60, 70)
    canvas, h, w = _canvas([image])
    out = crop_or_pad(canvas, h, w, np.array([0]))
    np.testing.assert_array_equal(out[0], image[:, 6:54, 11:59])


def test_small_images_are_padded_with_noise_from_the_most_uniform_corner():
    rng = np.random.default_rng(0)
    image = rng.normal(1000, 200, (1, 30, 30))
    image[:, 20:, :10] = rng.normal(300, 5, (1, 10, 10))  # bottom-left corner: most uniform
    image = image.clip(0).astype(np.uint16)
    canvas, h, w = _canvas([image])
    out = crop_or_pad(canvas, h, w, np.array([3]))
    np.testing.assert_array_equal(out[0, :, 9:39, 9:39], image)
    corner = image[0, 20:, :10].astype(float)
    mean, std = uniform_corner_stats(canvas, h, w, 10)
    assert mean[0, 0] == corner.mean() and np.isclose(std[0, 0], corner.std())
    border = np.concatenate([out[0, 0, :9].ravel(), out[0, 0, 39:].ravel()])
    assert abs(border.mean() - corner.mean()) < 0.6 and abs(border.std() - corner.std()) < 0.5


def test_a_cell_gets_the_same_result_alone_or_in_any_batch():
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 4000, (3, rng.integers(20, 70), rng.integers(20, 70)), dtype=np.uint16)
        for _ in range(9)
    ]
    canvas, h, w = _canvas(images)
    ids = np.arange(100, 109)
    batch = preprocess(canvas, h, w, ids)
    for k in (0, 4, 8):
        alone, ah, aw = _canvas([images[k]])
        np.testing.assert_array_equal(preprocess(alone, ah, aw, ids[k : k + 1])[0], batch[k])
    assert batch.shape == (9, 3, 48, 48) and batch.dtype == np.uint8
    other_seed = preprocess(canvas, h, w, ids, CropSettings(seed=1))
    assert not np.array_equal(other_seed, batch)


def test_stretch_clips_each_channel_to_its_own_percentiles():
    rng = np.random.default_rng(2)
    images = np.stack([rng.normal(100, 10, (48, 48)), rng.normal(5000, 900, (48, 48))])[None]
    images[0, 0, 0, 0] = 1e6  # an outlier above the 99.5th percentile is clipped, not stretched to
    out = stretch_to_uint8(images)
    for c in range(2):
        assert out[0, c].min() == 0 and out[0, c].max() == 255
        assert 100 < out[0, c].mean() < 155
    flat = stretch_to_uint8(np.full((1, 1, 4, 4), 7.0))
    assert (flat == 0).all()
