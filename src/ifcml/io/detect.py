"""Pick and plan the reader for a source path (``--format auto`` and explicit formats)."""

from __future__ import annotations

import os
from pathlib import Path

from ifcml.errors import InputError
from ifcml.io.cif_source import CifSource
from ifcml.io.montage import MONTAGE_NAME, MontageSource, parse_grid
from ifcml.io.sources import Source
from ifcml.io.tiff_export import EXPORT_NAME, TiffExportSource

FORMATS = ("auto", "cif", "montage", "tiff")


def detect_format(path: Path) -> str:
    """Guess the format of ``path`` from its file names, reading no pixels."""
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix.lower() == ".cif":
        return "cif"
    if path.is_dir():
        for _, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in sorted(filenames):
                if EXPORT_NAME.match(filename):
                    return "tiff"
                if MONTAGE_NAME.match(filename):
                    return "montage"
    raise InputError(
        f"{path}: cannot tell its format; expected a .cif file, a folder of per-cell TIFF files "
        "(<name>_<object>_Ch<k>.ome.tif) or of montages (Ch<k>_<id>.tif)"
    )


def open_source(
    path: Path | str,
    fmt: str = "auto",
    *,
    channels: dict[int, str] | None = None,
    instance: str | None = None,
    grid: str | None = None,
    column_major: bool = True,
    label: str | None = None,
) -> Source:
    """Plan a reader for ``path``; input errors surface here, before anything is written."""
    path = Path(path)
    if fmt not in FORMATS:
        raise InputError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "cif":
        return CifSource(path, channels, instance, label)
    if label is not None:
        raise InputError(f"{path}: --label applies to CIF files; {fmt} sources take labels from folder names")
    if fmt == "montage":
        if grid is None:
            raise InputError(f"{path}: montages need --grid ROWSxCOLS (e.g. --grid 30x30)")
        return MontageSource(path, parse_grid(grid), channels, instance, column_major)
    return TiffExportSource(path, channels, instance)
