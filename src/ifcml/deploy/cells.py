"""What an exported model is given: cells' raw images, from arrays or from a CellStore."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ifcml.errors import InputError
from ifcml.io.store import CellStore

ARRAY_KEYS = ("images", "channels", "heights", "widths", "masks", "cell_ids")


@dataclass
class CellImages:
    """Raw cells with their channels in the model's order."""

    images: np.ndarray  # (N, C, H, W) raw instrument values, each cell at the top-left
    sizes: np.ndarray  # (N, 2) each cell's true height and width
    masks: np.ndarray | None  # (N, C, H, W) instrument masks, when the source has them
    cell_ids: np.ndarray  # seeds each cell's crop padding: a cell's crop is the same in any batch

    def __len__(self) -> int:
        return len(self.images)

    def pick(self, positions: Sequence[int]) -> CellImages:
        """The same cells with only the channels at ``positions`` (a part of a composite model)."""
        masks = None if self.masks is None else self.masks[:, positions]
        return CellImages(self.images[:, positions], self.sizes, masks, self.cell_ids)

    def rows(self, start: int, stop: int) -> CellImages:
        return CellImages(
            self.images[start:stop],
            self.sizes[start:stop],
            None if self.masks is None else self.masks[start:stop],
            self.cell_ids[start:stop],
        )


def from_arrays(given: Mapping, channels: Sequence[str]) -> CellImages:
    """Cells from a dict: ``images`` (N, C, H, W); optional ``channels`` (the names of its C
    channels, from which the model's are picked in its order; without it C must be the model's
    channels in order), ``heights`` and ``widths`` (default: the whole canvas), ``masks``, ``cell_ids``."""
    unknown = sorted(set(given) - set(ARRAY_KEYS))
    if unknown or "images" not in given:
        raise InputError(
            f"model input: expected keys {', '.join(ARRAY_KEYS)} ('images' required); "
            f"got {', '.join(map(str, given)) or 'none'}"
        )
    images = np.asarray(given["images"])
    if images.ndim != 4:
        raise InputError(
            f"model input 'images': expected (cells, channels, height, width), got {images.shape}"
        )
    picked = _channel_positions(given.get("channels"), images.shape[1], channels)
    n, _, height, width = images.shape
    heights = _per_cell(given, "heights", n, height)
    widths = _per_cell(given, "widths", n, width)
    masks = given.get("masks")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != images.shape:
            raise InputError(
                f"model input 'masks': shape {masks.shape}, expected that of images {images.shape}"
            )
        masks = masks[:, picked]
    cell_ids = np.asarray(given.get("cell_ids", np.arange(n)), np.int64)
    if cell_ids.shape != (n,):
        raise InputError(f"model input 'cell_ids': expected {n} values, got shape {cell_ids.shape}")
    return CellImages(images[:, picked], np.stack([heights, widths], axis=1), masks, cell_ids)


def from_store(store: CellStore, channels: Sequence[str], start: int, stop: int) -> CellImages:
    """Cells ``start:stop`` of a store."""
    picked = store.channel_indices(channels)
    rows = store.cells.iloc[start:stop]
    return CellImages(
        store.read(start, stop, picked),
        rows[["height", "width"]].to_numpy(),
        store.read_masks(start, stop, picked),
        rows["cell_id"].to_numpy(),
    )


def _channel_positions(names, available: int, wanted: Sequence[str]) -> list[int]:
    if names is None:
        if available != len(wanted):
            raise InputError(
                f"model input 'images': {available} channel(s), the model reads {len(wanted)} "
                f"({', '.join(wanted)}); give 'channels' naming the images' channels"
            )
        return list(range(available))
    names = [str(n) for n in names]
    if len(names) != available:
        raise InputError(f"model input 'channels': {len(names)} names for {available} image channels")
    missing = [c for c in wanted if c not in names]
    if missing:
        raise InputError(
            f"model input: the model reads channel(s) {', '.join(missing)}, not among {', '.join(names)}"
        )
    return [names.index(c) for c in wanted]


def _per_cell(given: Mapping, key: str, n: int, canvas: int) -> np.ndarray:
    values = np.asarray(given.get(key, np.full(n, canvas)), np.int64)
    if values.shape != (n,) or (values < 1).any() or (values > canvas).any():
        raise InputError(f"model input '{key}': expected {n} sizes between 1 and {canvas}")
    return values
