"""One batch's objects on a montage, with what several measurement families derive from them.

Size and shape, radial distribution and the Zernike moments of every channel measured on the
same objects start from the same geometry (distance to the edge, enclosing circles); it is
found once per batch, when first asked for.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from ifcml.features import zernike
from ifcml.features.distance import distance_to_background


class ObjectSet:
    """A label montage of framed tiles (one object per tile) and its shared geometry."""

    def __init__(self, name: str, labels: np.ndarray, tile_shape: tuple[int, int]):
        self.name, self.labels, self.tile_shape = name, labels, tile_shape

    @cached_property
    def to_edge(self) -> np.ndarray:
        """Each pixel's Euclidean distance to the nearest background pixel."""
        return distance_to_background(self.labels > 0)

    @cached_property
    def disks(self) -> zernike.UnitDisks:
        """Each object's pixels in its enclosing circle's unit disk."""
        return zernike.unit_disks(self.labels, self.tile_shape)
