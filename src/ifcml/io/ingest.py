"""Sources into a CellStore: the one place paths become a store (ingest, grids, predict, the demo).

Every source is planned first (:func:`~ifcml.io.detect.open_source`: a wrong format, channel or
grid fails before anything is written), then all are streamed into one store by
:func:`~ifcml.io.store.write_store`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from ifcml.io.detect import open_source
from ifcml.io.sources import Source
from ifcml.io.store import CellStore, write_store
from ifcml.progress import Bars, no_bars


@dataclass(frozen=True)
class Reading:
    """How sources are read: ``ingest``'s options (format, channel map, instance name, montage
    grid and tile order, the label of CIF files of one gated population)."""

    fmt: str = "auto"
    channels: dict[int, str] | None = None
    instance: str | None = None
    grid: str | None = None
    column_major: bool = True
    label: str | None = None

    def open(self, path: Path) -> Source:
        settings = asdict(self)
        return open_source(path, settings.pop("fmt"), **settings)


def ingest(
    paths: Sequence[Path],
    out: Path,
    reading: Reading | Callable[[Path], Reading] = Reading(),
    *,
    samples: pd.DataFrame | None = None,
    overwrite: bool = False,
    bars: Bars = no_bars,
) -> CellStore:
    """The sources at ``paths``, read as ``reading`` says (or as it says for each path), as a new
    CellStore at ``out``; ``samples`` attaches patient and timepoint per instance."""
    sources = [(reading(path) if callable(reading) else reading).open(path) for path in paths]
    return ingest_sources(sources, out, samples=samples, overwrite=overwrite, bars=bars)


def ingest_sources(
    sources: Sequence[Source],
    out: Path,
    *,
    samples: pd.DataFrame | None = None,
    overwrite: bool = False,
    bars: Bars = no_bars,
) -> CellStore:
    """Planned ``sources`` streamed into a new CellStore at ``out``, counted on ``bars``."""
    with bars(sum(s.n_candidates for s in sources), "ingest") as update:
        return write_store(sources, out, overwrite=overwrite, samples=samples, on_cells=update)
