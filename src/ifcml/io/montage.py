"""CellProfiler stitching montages: ``Ch<k>_<montage id>.tif``, one cell per grid tile.

Tiles are filled column by column (top to bottom, then the next column) as CellProfiler's
stitching script writes them, or row by row on request. The tile size is the montage size
divided by the grid. Partly filled montages pad their unused tiles with constant or
striped filler; a tile is empty when, in every channel, all its rows are identical or all
its columns are (no real cell image is constant along a whole axis).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ifcml.errors import InputError
from ifcml.io.channels import resolve_channels
from ifcml.io.sources import (
    CellChunk,
    file_fingerprint,
    label_folders_without,
    require_dir,
)
from ifcml.io.tiffio import read_uint16_tiff, tiff_shape

MONTAGE_NAME = re.compile(r"^Ch(\d+)_(.+)\.tiff?$", re.IGNORECASE)
_GRID = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_grid(spec: str) -> tuple[int, int]:
    """Parse ``"30x30"`` into (rows, cols)."""
    match = _GRID.match(spec or "")
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise InputError(f"--grid: cannot read {spec!r}; expected ROWSxCOLS such as 30x30")
    return int(match.group(1)), int(match.group(2))


def empty_tiles(tiles: np.ndarray) -> np.ndarray:
    """Which tiles of ``tiles`` (N, C, h, w) hold no cell: constant along rows or columns in every channel."""
    rows_repeat = (tiles[:, :, 1:, :] == tiles[:, :, :1, :]).all(axis=(2, 3))
    cols_repeat = (tiles[:, :, :, 1:] == tiles[:, :, :, :1]).all(axis=(2, 3))
    return (rows_repeat | cols_repeat).all(axis=1)


def split_tiles(montage: np.ndarray, grid: tuple[int, int], column_major: bool) -> np.ndarray:
    """Cut a (C, H, W) montage into (rows*cols, C, h, w) tiles in fill order."""
    n_channels, height, width = montage.shape
    rows, cols = grid
    th, tw = height // rows, width // cols
    tiles = montage.reshape(n_channels, rows, th, cols, tw)
    order = (3, 1, 0, 2, 4) if column_major else (1, 3, 0, 2, 4)
    return tiles.transpose(order).reshape(rows * cols, n_channels, th, tw)


@dataclass
class _Montage:
    folder: Path
    montage_id: str
    files: dict[int, Path]  # instrument channel -> file
    label: str | None


class MontageSource:
    """A folder tree of stitched montages, validated on construction."""

    format = "montage"
    has_masks = False

    def __init__(
        self,
        root: Path,
        grid: tuple[int, int],
        channels: dict[int, str] | None = None,
        instance: str | None = None,
        column_major: bool = True,
    ):
        self.root = require_dir(Path(root), "a folder of Ch<k>_<id>.tif montages")
        self.name = str(self.root)
        self.grid = grid
        self.column_major = column_major
        self.instance = instance or self.root.resolve().name
        self.montages = self._find_montages()
        available = sorted({k for m in self.montages for k in m.files})
        self.channels = resolve_channels(available, channels, self.name)
        self._check_channels_present()
        self.max_height, self.max_width = self._check_sizes()
        self.n_candidates = len(self.montages) * grid[0] * grid[1]

    def _find_montages(self) -> list[_Montage]:
        groups: dict[tuple[Path, str], dict[int, Path]] = defaultdict(dict)
        for path in sorted(self.root.rglob("*")):
            match = MONTAGE_NAME.match(path.name)
            hidden = any(part.startswith(".") for part in path.relative_to(self.root).parts)
            if match and path.is_file() and not hidden:
                groups[(path.parent, match.group(2))][int(match.group(1))] = path
        if not groups:
            raise InputError(
                f"{self.root}: no montages found; expected files named Ch<k>_<montage id>.tif "
                "(e.g. Ch3_CP0001.tif) in this folder or its sub-folders"
            )
        empty = label_folders_without(self.root, {folder for folder, _ in groups})
        if empty:
            raise InputError(f"{empty[0]}: label folder holds no montage (expected Ch<k>_<id>.tif files)")
        return [
            _Montage(folder, mid, files, None if folder == self.root else folder.name)
            for (folder, mid), files in sorted(groups.items())
        ]

    def _check_channels_present(self) -> None:
        for montage in self.montages:
            missing = [k for k in self.channels if k not in montage.files]
            if missing:
                names = ", ".join(f"Ch{k}_{montage.montage_id}.tif" for k in missing)
                raise InputError(
                    f"{montage.folder}: montage {montage.montage_id} lacks {names} "
                    f"(every montage needs channels {', '.join(f'Ch{k}' for k in self.channels)})"
                )

    def _check_sizes(self) -> tuple[int, int]:
        rows, cols = self.grid
        tile_shape = None
        for montage in self.montages:
            for k in self.channels:
                path = montage.files[k]
                shape = tiff_shape(path)
                if len(shape) != 2:
                    raise InputError(f"{path}: expected a 2-D greyscale montage, got shape {shape}")
                if shape[0] % rows or shape[1] % cols:
                    raise InputError(
                        f"{path}: montage of {shape[0]}x{shape[1]} pixels cannot be cut into a "
                        f"{rows}x{cols} grid (size must be divisible by the grid)"
                    )
                tile = (shape[0] // rows, shape[1] // cols)
                if tile_shape is not None and tile != tile_shape:
                    raise InputError(
                        f"{path}: tiles of {tile[0]}x{tile[1]} differ from the "
                        f"{tile_shape[0]}x{tile_shape[1]} tiles of the other montages"
                    )
                tile_shape = tile
        assert tile_shape is not None
        return tile_shape

    def chunks(self, chunk_cells: int) -> Iterator[CellChunk]:
        for montage in self.montages:
            stack = np.stack([read_uint16_tiff(montage.files[k]) for k in self.channels])
            tiles = split_tiles(stack, self.grid, self.column_major)
            keep = np.flatnonzero(~empty_tiles(tiles))
            source = str(montage.files[next(iter(self.channels))])
            for start in range(0, len(keep), chunk_cells):
                part = keep[start : start + chunk_cells]
                yield CellChunk(
                    images=list(tiles[part]),
                    object_numbers=(part + 1).tolist(),
                    labels=[montage.label] * len(part),
                    instances=[self.instance] * len(part),
                    sources=[source] * len(part),
                )

    def provenance(self) -> dict:
        return {
            "format": self.format,
            "root": self.name,
            "grid": list(self.grid),
            "fill": "column-major" if self.column_major else "row-major",
            "instance": self.instance,
            "files": [file_fingerprint(p) for m in self.montages for p in m.files.values()],
        }
