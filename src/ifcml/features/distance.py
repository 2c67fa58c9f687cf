"""Each object pixel's Euclidean distance to the nearest background pixel, compiled.

scipy's ``distance_transform_edt`` finds every pixel's nearest background pixel and then its
distance; size and shape and radial distribution need only the distance, for every object set
of every batch. Felzenszwalb and Huttenlocher's two passes (the distance along each column,
then the lower envelope of parabolas along each row) give the same squared distances, exact
integers, so the square roots are scipy's bit for bit (tested on real cells).
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def distance_to_background(inside: np.ndarray) -> np.ndarray:
    """Euclidean distance from each True pixel of a 2-D mask to the nearest False pixel (0 on
    False pixels). The mask must hold a False pixel (a montage's frames do)."""
    rows, cols = inside.shape
    far = float((rows + cols) ** 2)  # beyond any distance inside the image
    squared = np.empty((rows, cols))
    for c in range(cols):  # distance along the column, down then up
        run = far
        for r in range(rows):
            run = 0.0 if not inside[r, c] else run + 1.0
            squared[r, c] = run
        run = far
        for r in range(rows - 1, -1, -1):
            run = 0.0 if not inside[r, c] else run + 1.0
            squared[r, c] = min(squared[r, c], run) ** 2
    distance = np.empty((rows, cols))
    vertex = np.empty(cols, np.int64)  # parabolas of the lower envelope
    bound = np.empty(cols + 1)  # where each takes over
    f = np.empty(cols)
    for r in range(rows):
        f[:] = squared[r]
        k = 0
        vertex[0], bound[0], bound[1] = 0, -np.inf, np.inf
        for q in range(1, cols):
            s = _crossing(f, vertex[k], q)
            while s <= bound[k]:  # bound[0] is -inf: never past the first parabola
                k -= 1
                s = _crossing(f, vertex[k], q)
            k += 1
            vertex[k], bound[k], bound[k + 1] = q, s, np.inf
        k = 0
        for q in range(cols):
            while bound[k + 1] < q:
                k += 1
            d = q - vertex[k]
            distance[r, q] = np.sqrt(d * d + f[vertex[k]])
    return distance


@numba.njit(cache=True, inline="always")
def _crossing(f: np.ndarray, v: int, q: int) -> float:
    """Where the parabola of column q falls below that of column v < q."""
    return ((f[q] + q * q) - (f[v] + v * v)) / (2.0 * (q - v))
