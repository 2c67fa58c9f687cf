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
from scipy import ndimage

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
    for i, (height, width) in enumerate(sizes):
        outline = cells[i, :height, :width]
        if not outline.any():
            continue
        for k, ch in enumerate(channels):
            columns[gradient_rms_name(ch)][i] = _gradient_rms(images[i, k, :height, :width], outline)
        columns[ASPECT_RATIO][i] = _aspect_ratio(outline)
    return columns


def _gradient_rms(image: np.ndarray, outline: np.ndarray) -> float:
    pixels = image.astype(np.float64) / UINT16_MAX
    across = ndimage.sobel(pixels, axis=1, mode="nearest") / 8  # the Sobel kernel sums to 8x a slope
    down = ndimage.sobel(pixels, axis=0, mode="nearest") / 8
    return float(np.sqrt(np.mean(across[outline] ** 2 + down[outline] ** 2)))


def _aspect_ratio(outline: np.ndarray) -> float:
    rows, cols = np.nonzero(outline)
    if len(rows) < 2:
        return np.nan
    eigenvalues = np.linalg.eigvalsh(np.cov(np.stack([rows, cols]).astype(np.float64), bias=True))
    return float(np.sqrt(max(eigenvalues[0], 0.0) / eigenvalues[1])) if eigenvalues[1] > 0 else np.nan
