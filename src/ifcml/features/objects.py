"""Each cell's measured objects: ``Cells`` (its own outline) and ``CellsExpanded`` (for scatter).

The outline is the instrument's mask when the store has one and the recipe allows it, else the
bright-field segmentation of the cell's own image, inside its true height and width (the zero
canvas around a smaller cell is not part of its image). A cell whose outline cannot be found
gets an empty mask; the feature table keeps it, flagged, with missing values.
"""

from __future__ import annotations

import numpy as np

from ifcml.errors import InputError
from ifcml.features.recipe import Recipe, outline_source
from ifcml.features.segment import SegmentationSettings, expand_all, segment_bright_fields


def check_objects(recipe: Recipe, channels: list[str], has_masks: bool) -> None:
    """Fail before any work when the recipe's objects cannot be made from these channels."""
    seg = recipe.segmentation
    if seg.channel not in channels:
        raise InputError(
            f"segmentation channel {seg.channel!r} is not among the channels {', '.join(channels)} "
            "(name it at ingest, e.g. --channels 1:BF,6:DF, or set segmentation.channel in the recipe)"
        )
    if seg.source == "instrument" and not has_masks:
        raise InputError("the recipe asks for the instrument's masks but the store has none")


def cell_objects(
    images: np.ndarray,
    instrument_masks: np.ndarray | None,
    sizes: np.ndarray,
    channels: list[str],
    recipe: Recipe,
) -> tuple[np.ndarray, np.ndarray]:
    """(Cells, CellsExpanded) boolean masks, each (n, H, W), for (n, C, H, W) ``images``.

    ``sizes`` holds each cell's true (height, width); ``channels`` names the C channels.
    """
    seg = recipe.segmentation
    check_objects(recipe, channels, has_masks=instrument_masks is not None)
    use_instrument = outline_source(recipe, instrument_masks is not None) == "instrument"
    k = channels.index(seg.channel)
    settings = SegmentationSettings(seg.smoothing, seg.closing_radius, seg.min_area)
    height, width = images.shape[2:]
    inside = (np.arange(height) < sizes[:, :1])[:, :, None] & (np.arange(width) < sizes[:, 1:])[:, None]
    if use_instrument:
        cells = (instrument_masks[:, k] > 0) & inside
    else:  # all sizes in one call, each cell inside its own true size
        cells = segment_bright_fields(images[:, k], settings, sizes)
    expanded = expand_all(cells, recipe.objects.expand_pixels) & inside
    return cells, expanded
