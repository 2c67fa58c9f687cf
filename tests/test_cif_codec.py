"""The two strip codecs on their own: exact round trips and precise errors."""

from __future__ import annotations

import numpy as np
import pytest

from ifcml.io.cif_codec import StripError, decode_greyscale, decode_mask, encode_greyscale, encode_mask


def test_greyscale_examples_from_the_format_description():
    # nibbles 0x3 -> +3, 0x7 -> -1: one row [3, 3 + (-1)] = [3, 2]; one byte, no padding
    assert decode_greyscale([bytes([0x73])], [(1, 2)])[0].tolist() == [[3, 2]]
    # 0xC, 0x1 -> 12; then 0x9, 0x7 -> -7: pixels 12, 5, then a padding nibble
    assert decode_greyscale([bytes([0x1C, 0x79])], [(1, 2)])[0].tolist() == [[12, 5]]


def test_prediction_runs_across_rows_and_wraps_modulo_2_16():
    image = np.array([[0, 65535, 1], [65535, 0, 2]], np.uint16)
    strip = encode_greyscale(image)
    np.testing.assert_array_equal(decode_greyscale([strip], [image.shape])[0], image)


def test_many_strips_in_one_batch_each_exact():
    rng = np.random.default_rng(5)
    images = [
        rng.integers(0, 65536, (rng.integers(1, 30), rng.integers(1, 90)), dtype=np.uint16) for _ in range(50)
    ]
    masks = [rng.integers(0, 4, image.shape, dtype=np.uint8) for image in images]
    shapes = [image.shape for image in images]
    for got, want in zip(
        decode_greyscale([encode_greyscale(i) for i in images], shapes), images, strict=True
    ):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(decode_mask([encode_mask(m) for m in masks], shapes), masks, strict=True):
        np.testing.assert_array_equal(got, want)


def test_mask_runs_longer_than_256_are_split():
    mask = np.zeros((3, 200), np.uint8)
    strip = encode_mask(mask)
    assert strip == bytes([0, 255, 0, 255, 0, 87])  # 600 = 256 + 256 + 88
    np.testing.assert_array_equal(decode_mask([strip], [(3, 200)])[0], mask)


@pytest.mark.parametrize(
    "strips, shape, message",
    [
        ([bytes([0x11])], (1, 3), "cannot hold 3 pixels"),
        ([bytes([0x11, 0x99])], (1, 3), "ends after 2 of 3"),
        ([bytes([0x11, 0x11])], (1, 3), None),  # one trailing nibble is padding, not an error
        ([bytes([0x11, 0x11, 0x11])], (1, 3), "3 nibbles of data after"),
        ([bytes([0x88, 0x88, 0x88, 0x88])], (1, 1), "more than 7 nibbles"),
    ],
)
def test_greyscale_errors_name_the_strip(strips, shape, message):
    good = encode_greyscale(np.ones((2, 2), np.uint16))
    if message is None:
        assert decode_greyscale([good, *strips], [(2, 2), shape])[1].tolist() == [[1, 2, 3]]
        return
    with pytest.raises(StripError, match=message) as caught:
        decode_greyscale([good, *strips], [(2, 2), shape])
    assert caught.value.index == 1


@pytest.mark.parametrize(
    "strip, shape, message",
    [
        (bytes([1, 3, 0]), (1, 4), "whole number"),
        (bytes([1, 2]), (1, 4), "cover 3 pixels, expected 4"),
        (bytes([1, 5]), (1, 4), "cover 6 pixels, expected 4"),
        (bytes([1, 255]), (10, 100), "cannot hold 1000"),
    ],
)
def test_mask_errors(strip, shape, message):
    with pytest.raises(StripError, match=message):
        decode_mask([strip], [shape])
