"""The paper's crop/pad and contrast stretch."""

from __future__ import annotations

import numpy as np

from ifcml.preprocess import (
    CropSettings,
    _hashed_normal_at,
    channel_percentiles,
    crop_or_pad,
    preprocess,
    stretch_to_uint8,
    uniform_corner_stats,
)


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


def _reference_corner_stats(images, heights, widths, corner):
    """The four corners gathered with numpy indexing, numpy's mean and std over each."""
    n = images.shape[0]
    k_y, k_x = np.minimum(corner, heights), np.minimum(corner, widths)
    steps = np.arange(corner)
    means, stds = [], []
    for at_bottom in (False, True):
        for at_right in (False, True):
            y0 = heights - k_y if at_bottom else np.zeros(n, np.int64)
            x0 = widths - k_x if at_right else np.zeros(n, np.int64)
            ys = y0[:, None] + np.minimum(steps[None, :], k_y[:, None] - 1)
            xs = x0[:, None] + np.minimum(steps[None, :], k_x[:, None] - 1)
            patch = images[np.arange(n)[:, None, None], :, ys[:, :, None], xs[:, None, :]].astype(np.float64)
            means.append(patch.mean(axis=(1, 2)))
            stds.append(patch.std(axis=(1, 2)))
    means, stds = np.stack(means), np.stack(stds)
    best = stds.argmin(axis=0)[None]
    return np.take_along_axis(means, best, 0)[0], np.take_along_axis(stds, best, 0)[0]


def _reference_crop_or_pad(images, heights, widths, cell_ids, settings):
    """The paper's crop/pad written plainly: every pixel of every cell gets noise drawn, then the
    cell's own pixels are kept where it has them."""
    n, c = images.shape[:2]
    size = settings.size
    out = np.zeros((n, c, size, size), np.float32)
    mean, std = _reference_corner_stats(images, heights, widths, settings.corner)
    ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    for i in range(n):
        noise = _hashed_normal_at(
            np.full(size * size, cell_ids[i], np.uint64), ys.ravel(), xs.ravel(), c, size, settings.seed
        )
        padding = (mean[i][None] + std[i][None] * noise).T.reshape(c, size, size)
        top, left = (heights[i] - size) // 2, (widths[i] - size) // 2
        sy, sx = ys + top, xs + left
        inside = (sy >= 0) & (sy < heights[i]) & (sx >= 0) & (sx < widths[i])
        source = images[i][:, sy.clip(0, images.shape[2] - 1), sx.clip(0, images.shape[3] - 1)]
        out[i] = np.where(inside[None], source, padding).astype(np.float32)
    return out


def _reference_stretch(images, low_percentile, high_percentile):
    low, high = np.percentile(images, [low_percentile, high_percentile], axis=(2, 3), keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    return np.rint((np.clip(images, low, high) - low) / span * 255.0).astype(np.uint8)


def _equals_the_plain_formulas(canvas, heights, widths, ids, settings=CropSettings()):
    for fast, plain in zip(
        uniform_corner_stats(canvas, heights, widths, settings.corner),
        _reference_corner_stats(canvas, heights, widths, settings.corner),
        strict=True,
    ):
        np.testing.assert_array_equal(fast, plain)
    cropped = crop_or_pad(canvas, heights, widths, ids, settings)
    expected = _reference_crop_or_pad(canvas, heights, widths, ids, settings)
    np.testing.assert_array_equal(cropped, expected)
    low, high = settings.low_percentile, settings.high_percentile
    np.testing.assert_array_equal(
        stretch_to_uint8(cropped, low, high), _reference_stretch(cropped, low, high)
    )
    for q in (0.0, low, 50.0, high, 100.0):
        (fast,) = channel_percentiles(cropped, (q,))
        np.testing.assert_array_equal(fast, np.percentile(cropped, [q], axis=(2, 3))[0])


def test_the_fast_preprocessing_equals_the_plain_formulas_on_real_cells(jurkat_store):
    """Compiled crop and stretch, noise only where it is needed, one sort for the percentiles:
    bit for bit what the paper's formulas give, on real Jurkat cells (cropped and padded)."""
    cells = jurkat_store.cells.iloc[:600]
    canvas = jurkat_store.read(0, 600)
    heights, widths = cells["height"].to_numpy(), cells["width"].to_numpy()
    assert (heights < 48).all() and (heights > 32).all()  # 48 pads every tile, 32 crops every one
    _equals_the_plain_formulas(canvas, heights, widths, cells["cell_id"].to_numpy())
    _equals_the_plain_formulas(
        canvas, heights, widths, cells["cell_id"].to_numpy(), CropSettings(size=32, seed=3, low_percentile=2)
    )


def test_the_fast_preprocessing_equals_the_plain_formulas_on_odd_sizes():
    rng = np.random.default_rng(5)
    images = [
        rng.integers(0, 60000, (2, rng.integers(1, 90), rng.integers(1, 90)), dtype=np.uint16)
        for _ in range(40)
    ]
    images.append(np.full((2, 30, 50), 9, np.uint16))  # flat: low == high
    canvas, h, w = _canvas(images)
    _equals_the_plain_formulas(canvas, h, w, np.arange(len(images)) * 7919)
