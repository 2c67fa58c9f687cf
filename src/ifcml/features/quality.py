"""ifcml's own per-cell quality measurements: what IDEAS users gate on and CellProfiler lacks.

- ``Cells_Quality_GradientRMS_<channel>``: focus. The root mean square, over the cell's
  pixels, of the intensity gradient (Sobel, in CellProfiler's 0-1 intensity scale per pixel).
  A blurred, out-of-focus cell has soft edges and a low value. This is the idea of IDEAS'
  Gradient RMS; IDEAS' exact kernel and normalisation are not published, so values are
  ifcml's own and thresholds are set on them (the shipped `qc` strategy does so from the data).
- ``Cells_Quality_AspectRatio``: minor / major axis of the outline's second moments (IDEAS'
  aspect ratio; CellProfiler gives both axes, not their ratio). Doublets are long: low values.

Area is CellProfiler's own ``Cells_AreaShape_Area``. Each cell is measured on its own true-size
image, with edges replicated, so a cell's values never depend on the other cells of a batch.
"""

from __future__ import annotations

import numba
import numpy as np

from ifcml.features.object_pixels import pairwise_sum

UINT16_MAX = 65535
ASPECT_RATIO = "Cells_Quality_AspectRatio"


def gradient_rms_name(channel: str) -> str:
    return f"Cells_Quality_GradientRMS_{channel}"


def quality_columns(
    images: np.ndarray, sizes: np.ndarray, channels: list[str], cells: np.ndarray
) -> dict[str, np.ndarray]:
    """Quality columns for (n, C, H, W) images, (n, 2) true sizes and (n, H, W) Cells masks;
    NaN where a cell has no outline."""
    sizes = np.ascontiguousarray(sizes, dtype=np.int64)
    columns = {  # every size in one compiled call, each cell on its own
        gradient_rms_name(ch): _gradient_rms(np.ascontiguousarray(images[:, k]), cells, sizes)
        for k, ch in enumerate(channels)
    }
    columns[ASPECT_RATIO] = _aspect_ratios(cells)
    return columns


@numba.njit(cache=True)
def _gradient_rms(images: np.ndarray, outlines: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each image's root mean square Sobel gradient over its outline, the edges of its true
    size (``sizes``: height, width at the canvas's top left) replicated.

    Per pixel, the operations are scipy's 2-D ``sobel`` in its order (a difference of the
    neighbours along one axis; twice the centre plus the two neighbours along the other; the
    kernel sums to 8x a slope) and the mean is numpy's pairwise sum: the values of filtering
    the whole image and averaging over the outline, with only the outline's pixels computed.
    """
    n, height, width = images.shape
    rms = np.full(n, np.nan)
    squares = np.empty(height * width)
    for i in range(n):
        image, outline = images[i], outlines[i]
        rows, cols = sizes[i, 0], sizes[i, 1]
        count = 0
        for r in range(rows):
            up, down = max(r - 1, 0), min(r + 1, rows - 1)
            for c in range(cols):
                if not outline[r, c]:
                    continue
                left, right = max(c - 1, 0), min(c + 1, cols - 1)
                across_up = _step(image, up, left, up, right)
                across = _step(image, r, left, r, right)
                across_down = _step(image, down, left, down, right)
                along_left = _step(image, up, left, down, left)
                along = _step(image, up, c, down, c)
                along_right = _step(image, up, right, down, right)
                gx = (2 * across + (across_down + across_up)) / 8
                gy = (2 * along + (along_right + along_left)) / 8
                squares[count] = gx**2 + gy**2
                count += 1
        if count:
            rms[i] = np.sqrt(pairwise_sum(squares[:count]) / count)
    return rms


@numba.njit(cache=True, inline="always")
def _step(image: np.ndarray, y0: int, x0: int, y1: int, x1: int) -> float:
    """The difference of two pixels in CellProfiler's 0-1 scale."""
    return image[y1, x1] / UINT16_MAX - image[y0, x0] / UINT16_MAX


@numba.njit(cache=True)
def _aspect_ratios(outlines: np.ndarray) -> np.ndarray:
    """Minor over major axis of each outline's second moments (the eigenvalues of the 2x2
    covariance of its pixel coordinates, in closed form as scikit-image takes them for
    CellProfiler's axis lengths); NaN for fewer than two pixels or a zero major axis."""
    n, rows, cols = outlines.shape
    ratios = np.full(n, np.nan)
    ys = np.empty(rows * cols)
    xs = np.empty(rows * cols)
    for i in range(n):
        count = 0
        for r in range(rows):
            for c in range(cols):
                if outlines[i, r, c]:
                    ys[count], xs[count] = r, c
                    count += 1
        if count < 2:
            continue
        y, x = ys[:count], xs[:count]
        dy, dx = y - pairwise_sum(y) / count, x - pairwise_sum(x) / count
        vyy, vxx, vxy = (
            pairwise_sum(dy * dy) / count,
            pairwise_sum(dx * dx) / count,
            pairwise_sum(dy * dx) / count,
        )
        half_spread = np.sqrt(((vyy - vxx) / 2) ** 2 + vxy**2)
        major, minor = (vyy + vxx) / 2 + half_spread, (vyy + vxx) / 2 - half_spread
        if major > 0:
            ratios[i] = np.sqrt(max(minor, 0.0) / major)
    return ratios
