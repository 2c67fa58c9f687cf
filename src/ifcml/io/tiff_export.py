"""IDEAS per-cell TIFF export: one file per object and channel.

Files are named ``<anything>_<object number>_Ch<k>.ome.tif`` (or ``.tif``), as IDEAS writes
them; any subset of channels may be present. The label of a cell is the name of the folder
holding its files (none when they sit directly in the folder given).

Files are read one after another: on a small cell image the per-file Python work, not
libtiff's decoding, is the cost, and reading threads made ingest slower on 2 cores (10^5 cells:
1,447 cells/s on one core, 1,067 on two with four reading threads; read sequentially, 1,923 and
2,835). The store's writer thread overlaps with reading.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ifcml.errors import InputError
from ifcml.io.channels import resolve_channels
from ifcml.io.sources import CellChunk, label_folders_without, require_dir
from ifcml.io.tiffio import read_uint16_tiff

EXPORT_NAME = re.compile(r"^(.*)_(\d+)_Ch(\d+)(?:\.ome)?\.tiff?$", re.IGNORECASE)


@dataclass(frozen=True)
class _Cell:
    folder: Path
    prefix: str
    object_number: int
    files: tuple[str, ...]  # in store channel order (str: thousands of Path objects are slow)


class TiffExportSource:
    """A folder tree of per-cell TIFF files, validated on construction."""

    format = "tiff"
    has_masks = False

    def __init__(
        self,
        root: Path,
        channels: dict[int, str] | None = None,
        instance: str | None = None,
    ):
        self.root = require_dir(Path(root), "a folder of per-cell <name>_<object>_Ch<k>.ome.tif files")
        self.name = str(self.root)
        self.instance = instance or self.root.resolve().name
        groups = self._find_files()
        available = sorted({k for files in groups.values() for k in files})
        self.channels = resolve_channels(available, channels, self.name)
        self.cells = self._complete_cells(groups)
        self.max_height, self.max_width = self._check_sizes()
        self.n_candidates = len(self.cells)

    def _find_files(self) -> dict[tuple[Path, str, int], dict[int, Path]]:
        groups: dict[tuple[Path, str, int], dict[int, Path]] = defaultdict(dict)
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            folder = Path(dirpath)
            for filename in filenames:
                match = EXPORT_NAME.match(filename)
                if match:
                    key = (folder, match.group(1), int(match.group(2)))
                    groups[key][int(match.group(3))] = os.path.join(dirpath, filename)
        if not groups:
            raise InputError(
                f"{self.root}: no per-cell TIFF files found; expected names such as "
                "sample_12_Ch1.ome.tif in this folder or its sub-folders"
            )
        empty = label_folders_without(self.root, {folder for folder, _, _ in groups})
        if empty:
            raise InputError(
                f"{empty[0]}: label folder holds no cell images (expected <name>_<object>_Ch<k>.ome.tif)"
            )
        return groups

    def _complete_cells(self, groups: dict) -> list[_Cell]:
        cells = []
        for (folder, prefix, number), files in sorted(groups.items()):
            missing = [k for k in self.channels if k not in files]
            if missing:
                raise InputError(
                    f"{folder}: object {number} of {prefix!r} lacks channel(s) "
                    f"{', '.join(f'Ch{k}' for k in missing)} (expected "
                    f"{', '.join(f'{prefix}_{number}_Ch{k}.ome.tif' for k in missing)})"
                )
            cells.append(_Cell(folder, prefix, number, tuple(files[k] for k in self.channels)))
        return cells

    def _check_sizes(self) -> tuple[int, int]:
        # decoding a small cell image is faster than parsing its header with tifffile
        shapes = [[read_uint16_tiff(path).shape for path in cell.files] for cell in self.cells]
        for cell, cell_shapes in zip(self.cells, shapes, strict=True):
            for path, shape in zip(cell.files, cell_shapes, strict=True):
                if len(shape) != 2:
                    raise InputError(f"{path}: expected a 2-D greyscale cell image, got shape {shape}")
                if shape != cell_shapes[0]:
                    first = os.path.basename(cell.files[0])
                    raise InputError(
                        f"{path}: {shape[0]}x{shape[1]} pixels, but {first} of the same "
                        f"cell is {cell_shapes[0][0]}x{cell_shapes[0][1]}"
                    )
        return max(s[0][0] for s in shapes), max(s[0][1] for s in shapes)

    def chunks(self, chunk_cells: int) -> Iterator[CellChunk]:
        for start in range(0, len(self.cells), chunk_cells):
            part = self.cells[start : start + chunk_cells]
            yield CellChunk(
                images=[np.stack([read_uint16_tiff(path) for path in cell.files]) for cell in part],
                object_numbers=[c.object_number for c in part],
                labels=[None if c.folder == self.root else c.folder.name for c in part],
                instances=[self.instance] * len(part),
                sources=[c.files[0] for c in part],
            )

    def provenance(self) -> dict:
        n_bytes = sum(os.path.getsize(p) for c in self.cells for p in c.files)
        return {
            "format": self.format,
            "root": self.name,
            "instance": self.instance,
            "n_files": len(self.cells) * len(self.channels),
            "bytes": n_bytes,
        }
