"""The two CIF strip codecs, vectorised over many strips at once.

- 30817 (greyscale, 16-bit): a variable-length nibble code of 2-D differences. Nibbles are read
  low-then-high from each byte; each has a continuation bit (8) and 3 payload bits, groups are
  little-endian two's complement; the decoded values are the 2-D differences whose prefix sum
  (down the columns, then along the rows) is the image, taken modulo 2**16 as Bio-Formats does.
- 30818 (mask, 8-bit): (value, run length - 1) byte pairs filling the strip row-major.

Both codecs run across the full strip width (all channels side by side): predictions and
runs cross row and channel borders, so strips are decoded whole and split afterwards.

Decoders take a batch of strips and return one array per strip, or raise
:class:`StripError` naming the first bad strip (by position in the batch) and the problem.
No per-pixel Python work: each codec is one compiled (numba) sequential pass per strip (the
greyscale code is inherently serial), fed straight from a buffer such as the mapped file.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

#: Longest value accepted, in nibbles: 7 hold 21-bit two's complement, enough for any 2-D
#: difference of 16-bit pixels (|d| <= 131070); longer ones cannot come from a 16-bit image.
MAX_NIBBLES_PER_VALUE = 7


class StripError(ValueError):
    """A strip does not decode; ``index`` is its position in the batch."""

    def __init__(self, index: int, problem: str):
        super().__init__(problem)
        self.index = index
        self.problem = problem


def decode_greyscale(strips: Sequence[bytes], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Decode 30817 strips (each strip's bytes) into (height, width) uint16 images."""
    return decode_greyscale_spans(*concatenate_strips(strips), shapes)


def decode_greyscale_spans(
    data: np.ndarray, starts: np.ndarray, ends: np.ndarray, shapes: Sequence[tuple[int, int]]
) -> list[np.ndarray]:
    """Decode 30817 strips lying at ``data[starts[i]:ends[i]]`` (e.g. a memory-mapped file).

    ``shapes`` are (height, width) of each strip's full image, width spanning all channels.
    Spans must lie inside ``data`` (the compiled decoder does not check).
    """
    counts, widths = _counts_and_widths(shapes)
    lengths = ends - starts
    short = np.flatnonzero(2 * lengths < counts)
    if short.size:
        i = int(short[0])
        raise StripError(i, f"greyscale strip of {lengths[i]} bytes cannot hold {counts[i]} pixels")
    out_starts = np.concatenate([[0], np.cumsum(counts)])
    pixels = np.empty(int(out_starts[-1]), dtype=np.uint16)
    status, detail = _decode_greyscale_kernel(data, starts, ends, widths, out_starts, pixels)
    bad = np.flatnonzero(status)
    if bad.size:
        i = int(bad[0])
        problem = {
            _ENDS_EARLY: f"greyscale strip ends after {detail[i]} of {counts[i]} pixels",
            _TOO_LONG: f"greyscale pixel {detail[i]} is coded in more than {MAX_NIBBLES_PER_VALUE} nibbles",
            _TRAILING: f"greyscale strip has {detail[i]} nibbles of data after its last pixel",
        }[int(status[i])]
        raise StripError(i, problem)
    return _split(pixels, out_starts, shapes)


def concatenate_strips(strips: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Strips joined into one buffer, with each strip's start and end in it (for ``*_spans``)."""
    lengths = np.array([len(s) for s in strips], dtype=np.int64)
    ends = np.cumsum(lengths)
    return np.frombuffer(b"".join(strips), dtype=np.uint8), ends - lengths, ends


def _counts_and_widths(shapes: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    array = np.array(shapes, dtype=np.int64).reshape(-1, 2)
    return array[:, 0] * array[:, 1], array[:, 1]


def _split(pixels: np.ndarray, out_starts: np.ndarray, shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    return [pixels[out_starts[i] : out_starts[i + 1]].reshape(shape) for i, shape in enumerate(shapes)]


_ENDS_EARLY, _TOO_LONG, _TRAILING = 1, 2, 3
# A byte whose two nibbles both lack the continuation bit holds two whole one-nibble values
# (the common case); these tables give them sign-extended, low nibble first.
_LOW_VALUE = np.array([(b & 15) - ((b & 4) << 1) for b in range(256)], dtype=np.int32)
_HIGH_VALUE = np.array([(b >> 4) - (((b >> 4) & 4) << 1) for b in range(256)], dtype=np.int32)


@numba.njit(cache=True, nogil=True)
def _decode_greyscale_kernel(data, starts, ends, widths, out_starts, pixels):  # pragma: no cover - compiled
    """Decode each strip's nibble stream into differences, then integrate them.

    Returns per-strip status (0 ok, or a problem code) and a detail number for the message.
    """
    n = starts.size
    status = np.zeros(n, np.int64)
    detail = np.zeros(n, np.int64)
    longest = 0
    for s in range(n):
        longest = max(longest, out_starts[s + 1] - out_starts[s])
    diffs = np.empty(longest, np.int32)  # one strip at a time: stays in cache
    for s in range(n):
        base = out_starts[s]
        count = out_starts[s + 1] - base
        position = starts[s]  # byte
        end = ends[s]
        high = False  # whether the next nibble is the high half of data[position]
        k = 0
        while k < count:
            if not high:
                if position >= end:
                    status[s] = _ENDS_EARLY
                    break
                byte = data[position]
                if (byte & 0x88) == 0 and k + 1 < count:  # fast path: two one-nibble values
                    diffs[k] = _LOW_VALUE[byte]
                    diffs[k + 1] = _HIGH_VALUE[byte]
                    k += 2
                    position += 1
                    continue
            # general path: one value of one or more nibbles
            value = np.int64(0)
            used = 0
            while True:
                if high:
                    code = np.int64(data[position]) >> 4
                    position += 1
                elif position < end:
                    code = np.int64(data[position]) & 15
                else:
                    status[s] = _ENDS_EARLY
                    break
                high = not high
                value |= (code & 7) << (3 * used)
                used += 1
                if code < 8:
                    if code & 4:
                        value -= np.int64(1) << (3 * used)
                    break
                if used == MAX_NIBBLES_PER_VALUE:
                    status[s] = _TOO_LONG
                    break
            if status[s]:
                break
            diffs[k] = value
            k += 1
        if status[s]:
            detail[s] = k
            continue
        left = 2 * (end - position) - (1 if high else 0)
        if left > 1:
            status[s] = _TRAILING
            detail[s] = left
            continue
        # pixel = running sum of its row's differences + the pixel above, modulo 2**16
        width = widths[s]
        for row in range(0, count, width):
            row_sum = np.int64(0)
            for i in range(row, row + width):
                row_sum += diffs[i]
                above = np.int64(pixels[base + i - width]) if row else np.int64(0)
                pixels[base + i] = (above + row_sum) & 0xFFFF
    return status, detail


def encode_greyscale(image: np.ndarray) -> bytes:
    """Encode a (height, width) uint16 image as a 30817 strip, as IDEAS writes it."""
    p = image.astype(np.int64)
    d = p.copy()
    d[1:, :] -= p[:-1, :]
    d[:, 1:] -= p[:, :-1]
    d[1:, 1:] += p[:-1, :-1]
    values = d.ravel()
    # fewest nibbles n with -2**(3n-1) <= v < 2**(3n-1)
    n = np.ones(values.size, dtype=np.int64)
    for k in range(2, MAX_NIBBLES_PER_VALUE + 1):
        n += (values < -(1 << (3 * k - 4))) | (values >= (1 << (3 * k - 4)))
    total = int(n.sum())
    starts = np.cumsum(n) - n
    owner = np.repeat(np.arange(values.size), n)
    position = np.arange(total) - starts[owner]
    payload = ((values[owner] & ((1 << (3 * n[owner])) - 1)) >> (3 * position)) & 7
    nibbles = payload | np.where(position < n[owner] - 1, 8, 0)
    if total % 2:
        nibbles = np.append(nibbles, 0)
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()


def decode_mask(strips: Sequence[bytes], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Decode 30818 strips (each strip's bytes) into (height, width) uint8 masks."""
    return decode_mask_spans(*concatenate_strips(strips), shapes)


def decode_mask_spans(
    data: np.ndarray, starts: np.ndarray, ends: np.ndarray, shapes: Sequence[tuple[int, int]]
) -> list[np.ndarray]:
    """Decode 30818 strips lying at ``data[starts[i]:ends[i]]`` into (height, width) uint8 masks."""
    counts, _ = _counts_and_widths(shapes)
    lengths = ends - starts
    odd = np.flatnonzero(lengths % 2)
    if odd.size:
        i = int(odd[0])
        raise StripError(i, f"mask strip of {lengths[i]} bytes is not a whole number of (value, run) pairs")
    too_big = np.flatnonzero(counts > 128 * lengths)
    if too_big.size:
        i = int(too_big[0])
        raise StripError(i, f"mask strip of {lengths[i]} bytes cannot hold {counts[i]} pixels")
    out_starts = np.concatenate([[0], np.cumsum(counts)])
    pixels = np.empty(int(out_starts[-1]), dtype=np.uint8)
    covered = _decode_mask_kernel(data, starts, ends, out_starts, pixels)
    bad = np.flatnonzero(covered != counts)
    if bad.size:
        i = int(bad[0])
        raise StripError(i, f"mask runs cover {covered[i]} pixels, expected {counts[i]}")
    return _split(pixels, out_starts, shapes)


@numba.njit(cache=True, nogil=True)
def _decode_mask_kernel(data, starts, ends, out_starts, pixels):  # pragma: no cover - compiled
    """Expand (value, run - 1) pairs; return the pixels each strip's runs cover.

    Writing stops at a strip's end, so runs that overrun it are counted but never written.
    """
    n = starts.size
    covered = np.zeros(n, np.int64)
    for s in range(n):
        base = out_starts[s]
        room = out_starts[s + 1] - base
        k = 0
        for position in range(starts[s], ends[s], 2):
            run = np.int64(data[position + 1]) + 1
            if k + run <= room:
                pixels[base + k : base + k + run] = data[position]
            k += run
        covered[s] = k
    return covered


def encode_mask(mask: np.ndarray) -> bytes:
    """Encode a (height, width) uint8 mask as a 30818 strip (maximal runs split into 256s)."""
    flat = mask.ravel()
    if flat.size == 0:
        return b""
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    pieces = (lengths + 255) // 256
    values = np.repeat(flat[starts], pieces)
    first_piece = np.cumsum(pieces) - pieces
    piece_index = np.arange(pieces.sum()) - np.repeat(first_piece, pieces)
    remaining = np.repeat(lengths, pieces) - 256 * piece_index
    runs = np.minimum(remaining, 256) - 1
    return np.stack([values, runs], axis=1).astype(np.uint8).tobytes()
