"""What every reader produces: a plan checked before any work, then cells in chunks.

A reader is planned first (file names, channels and image sizes are read and validated
without decoding pixels), so that bad input fails before anything is written. Ingest then
pulls :class:`CellChunk` objects from it; memory is bounded by the chunk size, not by the
number of cells.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ifcml.errors import InputError


@dataclass
class CellChunk:
    """A run of consecutive cells from one source.

    ``images[i]`` is the (C, h, w) uint16 image of cell i at its own size; ``masks[i]`` its
    (C, h, w) uint8 instrument mask, or ``masks`` is ``None`` when the source has none.
    The other fields are per-cell columns of ``cells.parquet``.
    """

    images: list[np.ndarray]
    object_numbers: list[int]
    labels: list[str | None]
    instances: list[str]
    sources: list[str]
    masks: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.images)


class Source(Protocol):
    """A planned, validated input that yields cells.

    Attributes
    ----------
    name
        How the source is named in messages and provenance.
    format
        ``montage``, ``tiff`` or ``cif``.
    channels
        Instrument channel number -> channel name, in store order.
    max_height, max_width
        The largest cell image, so the store's canvas can be sized before writing.
    has_masks
        Whether the source carries instrument masks.
    n_candidates
        Upper bound of the cells it yields (tiles, files or objects), for progress bars.
    """

    name: str
    format: str
    channels: dict[int, str]
    max_height: int
    max_width: int
    has_masks: bool
    n_candidates: int

    def chunks(self, chunk_cells: int) -> Iterator[CellChunk]: ...

    def provenance(self) -> dict: ...


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` resolved, or fail with a message naming it when it is no folder."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder (expected {what})")
    if not path.is_dir():
        raise InputError(f"{path}: is a file, expected {what}")
    return path


def label_folders_without(root: Path, image_folders: set[Path]) -> list[Path]:
    """Sub-folders of ``root`` (label folders) holding no image anywhere below them."""
    empty = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not any(folder == child or child in folder.parents for folder in image_folders):
            empty.append(child)
    return empty


def file_fingerprint(path: Path) -> dict:
    """Identify an input file in provenance without reading it."""
    stat = path.stat()
    return {"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}
