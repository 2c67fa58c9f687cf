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

import numpy as np

UINT16_MAX = 65535
ASPECT_RATIO = "Cells_Quality_AspectRatio"


def gradient_rms_name(channel: str) -> str:
    return f"Cells_Quality_GradientRMS_{channel}"


def quality_columns(
    images: np.ndarray, sizes: np.ndarray, channels: list[str], cells: np.ndarray
) -> dict[str, np.ndarray]:
    """Quality columns for (n, C, H, W) images, (n, 2) true sizes and (n, H, W) Cells masks;
    NaN where a cell has no outline."""
    n = len(images)
    columns = {gradient_rms_name(ch): np.full(n, np.nan) for ch in channels}
    columns[ASPECT_RATIO] = np.full(n, np.nan)
    for height, width in np.unique(sizes, axis=0):  # cells of one size: gradients as one stack
        same = np.flatnonzero((sizes[:, 0] == height) & (sizes[:, 1] == width))
        outlines = cells[same, :height, :width]
        found = outlines.any(axis=(1, 2))
        for k, ch in enumerate(channels):
            squares = _squared_gradients(images[same, k, :height, :width])
            columns[gradient_rms_name(ch)][same[found]] = [
                np.sqrt(np.mean(g[outline]))
                for g, outline in zip(squares[found], outlines[found], strict=True)
            ]
        columns[ASPECT_RATIO][same[found]] = [_aspect_ratio(outline) for outline in outlines[found]]
    return columns


def _squared_gradients(images: np.ndarray) -> np.ndarray:
    """Each image's squared Sobel gradient (x and y summed), edges replicated, on its own:
    scipy's 2-D ``sobel`` of each image, with the operations in scipy's order (a difference of
    neighbours along one axis; twice the centre plus the two neighbours along the other)."""
    pixels = np.pad(images.astype(np.float64) / UINT16_MAX, ((0, 0), (1, 1), (1, 1)), mode="edge")

    def sobel(derivative_axis: int) -> np.ndarray:
        d = [slice(None)] * 3
        d[derivative_axis] = slice(2, None)
        ahead = pixels[tuple(d)]
        d[derivative_axis] = slice(None, -2)
        slope = ahead - pixels[tuple(d)]  # (h or w) - 2 along the derivative axis, full along the other
        other = 3 - derivative_axis
        s = [slice(None)] * 3
        s[other] = slice(1, -1)
        centre = slope[tuple(s)]
        s[other] = slice(2, None)
        after = slope[tuple(s)]
        s[other] = slice(None, -2)
        return (2 * centre + (after + slope[tuple(s)])) / 8  # the Sobel kernel sums to 8x a slope

    return sobel(2) ** 2 + sobel(1) ** 2


def _aspect_ratio(outline: np.ndarray) -> float:
    rows, cols = np.nonzero(outline)
    if len(rows) < 2:
        return np.nan
    eigenvalues = np.linalg.eigvalsh(np.cov(np.stack([rows, cols]).astype(np.float64), bias=True))
    return float(np.sqrt(max(eigenvalues[0], 0.0) / eigenvalues[1])) if eigenvalues[1] > 0 else np.nan
