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
No per-pixel Python work: greyscale strips are decoded by one compiled sequential pass (the
code is inherently serial), masks by a few numpy passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

#: Longest number accepted, in nibbles (33 bits; real files need at most 7 for 16-bit differences).
MAX_NIBBLES_PER_VALUE = 11


class StripError(ValueError):
    """A strip does not decode; ``index`` is its position in the batch."""

    def __init__(self, index: int, problem: str):
        super().__init__(problem)
        self.index = index
        self.problem = problem


def decode_greyscale(strips: Sequence[bytes], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """Decode 30817 strips into (height, width) uint16 images.

    Parameters
    ----------
    strips
        Each strip's bytes (several strips of one image already concatenated).
    shapes
        (height, width) of each strip's full image, width spanning all channels.
    """
    counts = np.array([h * w for h, w in shapes], dtype=np.int64)
    lengths = np.array([len(s) for s in strips], dtype=np.int64)
    short = np.flatnonzero(2 * lengths < counts)
    if short.size:
        i = int(short[0])
        raise StripError(i, f"greyscale strip of {lengths[i]} bytes cannot hold {counts[i]} pixels")
    data = np.frombuffer(b"".join(strips), dtype=np.uint8)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    out_starts = np.concatenate([[0], np.cumsum(counts)])
    widths = np.array([w for _, w in shapes], dtype=np.int64)
    pixels = np.empty(int(out_starts[-1]), dtype=np.uint16)
    status, detail = _decode_greyscale_kernel(data, starts, widths, out_starts, pixels)
    bad = np.flatnonzero(status)
    if bad.size:
        i = int(bad[0])
        problem = {
            _ENDS_EARLY: f"greyscale strip ends after {detail[i]} of {counts[i]} pixels",
            _TOO_LONG: f"greyscale pixel {detail[i]} is coded in more than {MAX_NIBBLES_PER_VALUE} nibbles",
            _TRAILING: f"greyscale strip has {detail[i]} nibbles of data after its last pixel",
        }[int(status[i])]
        raise StripError(i, problem)
    return [pixels[out_starts[i] : out_starts[i + 1]].reshape(shape) for i, shape in enumerate(shapes)]


_ENDS_EARLY, _TOO_LONG, _TRAILING = 1, 2, 3


@numba.njit(cache=True, nogil=True)
def _decode_greyscale_kernel(data, starts, widths, out_starts, pixels):  # pragma: no cover - compiled
    """Decode each strip's nibble stream, then integrate it (rows, then columns).

    Returns per-strip status (0 ok, or a problem code) and a detail number for the message.
    """
    n = starts.size - 1
    status = np.zeros(n, np.int64)
    detail = np.zeros(n, np.int64)
    for s in range(n):
        count = out_starts[s + 1] - out_starts[s]
        width = widths[s]
        base = out_starts[s]
        nibble = 2 * starts[s]
        nibble_end = 2 * starts[s + 1]
        row_sum = np.int64(0)
        x = 0
        for k in range(count):
            if nibble >= nibble_end:
                status[s] = _ENDS_EARLY
                detail[s] = k
                break
            code = (np.int64(data[nibble >> 1]) >> (4 * (nibble & 1))) & 15
            nibble += 1
            if code < 8:  # the common one-nibble value
                value = code - 8 if code & 4 else code
            else:
                value = code & 7
                used = 1
                while code >= 8:
                    if used == MAX_NIBBLES_PER_VALUE:
                        status[s] = _TOO_LONG
                        break
                    if nibble >= nibble_end:
                        status[s] = _ENDS_EARLY
                        break
                    code = (np.int64(data[nibble >> 1]) >> (4 * (nibble & 1))) & 15
                    nibble += 1
                    value |= (code & 7) << (3 * used)
                    used += 1
                if status[s]:
                    detail[s] = k
                    break
                if code & 4:
                    value -= np.int64(1) << (3 * used)
            # first the running sum of differences along the row ...
            row_sum += value
            pixels[base + k] = row_sum & 0xFFFF
            x += 1
            if x == width:
                x = 0
                row_sum = 0
        if status[s] == 0 and nibble_end - nibble > 1:
            status[s] = _TRAILING
            detail[s] = nibble_end - nibble
        if status[s] == 0:  # ... then down the columns (uint16 arithmetic wraps modulo 2**16)
            for k in range(base + width, base + count):
                pixels[k] += pixels[k - width]
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
    """Decode 30818 strips into (height, width) uint8 masks."""
    counts = np.array([h * w for h, w in shapes], dtype=np.int64)
    lengths = np.array([len(s) for s in strips], dtype=np.int64)
    odd = np.flatnonzero(lengths % 2)
    if odd.size:
        i = int(odd[0])
        raise StripError(i, f"mask strip of {lengths[i]} bytes is not a whole number of (value, run) pairs")
    too_big = np.flatnonzero(counts > 128 * lengths)
    if too_big.size:
        i = int(too_big[0])
        raise StripError(i, f"mask strip of {lengths[i]} bytes cannot hold {counts[i]} pixels")
    pairs = np.frombuffer(b"".join(strips), dtype=np.uint8).reshape(-1, 2)
    runs = pairs[:, 1].astype(np.int64) + 1
    pair_offsets = np.concatenate([[0], np.cumsum(lengths // 2)])
    covered = np.concatenate([[0], np.cumsum(runs)])
    totals = covered[pair_offsets[1:]] - covered[pair_offsets[:-1]]
    bad = np.flatnonzero(totals != counts)
    if bad.size:
        i = int(bad[0])
        raise StripError(i, f"mask runs cover {totals[i]} pixels, expected {counts[i]}")
    pixels = np.repeat(pairs[:, 0], runs)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return [pixels[offsets[i] : offsets[i + 1]].reshape(h, w) for i, (h, w) in enumerate(shapes)]


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
