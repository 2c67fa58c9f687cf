"""CIF files as an ingest source: one file is one instance, objects are cells."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ifcml.io.channels import resolve_channels
from ifcml.io.cif import CifFile
from ifcml.io.sources import CellChunk, file_fingerprint


class CifSource:
    """A CIF file, validated on construction (header, IFD chain, every object's size)."""

    format = "cif"
    has_masks = True

    def __init__(
        self,
        path: Path,
        channels: dict[int, str] | None = None,
        instance: str | None = None,
        label: str | None = None,
    ):
        self.path = Path(path)
        self.name = str(self.path)
        self.instance = instance or self.path.name.removesuffix(".cif")
        self.label = label
        with CifFile(self.path) as cif:
            self.metadata = cif.metadata
            shapes = cif.shapes()
        instrument = self.metadata.channels
        self.channels = resolve_channels(instrument, channels, self.name)
        picked = [instrument.index(k) for k in self.channels]
        # all channels in file order: keep the decoded views, no copy
        self._picked = slice(None) if picked == list(range(len(instrument))) else picked
        self.max_height = max((h for h, _ in shapes), default=1)
        self.max_width = max((w for _, w in shapes), default=1)
        self.n_candidates = len(shapes)

    def chunks(self, chunk_cells: int) -> Iterator[CellChunk]:
        with CifFile(self.path) as cif:
            batch: list = []
            for obj in cif.iter_objects():
                batch.append(obj)
                if len(batch) == chunk_cells:
                    yield self._chunk(batch)
                    batch = []
            if batch:
                yield self._chunk(batch)

    def _chunk(self, objects: list) -> CellChunk:
        n = len(objects)
        return CellChunk(
            images=[o.image[self._picked] for o in objects],
            masks=[o.mask[self._picked] for o in objects],
            object_numbers=[o.object_id for o in objects],
            labels=[self.label] * n,
            instances=[self.instance] * n,
            sources=[self.name] * n,
        )

    def provenance(self) -> dict:
        meta = self.metadata
        return {
            "format": self.format,
            **file_fingerprint(self.path),
            "instance": self.instance,
            "label": self.label,
            "instrument": meta.instrument,
            "magnification": meta.magnification,
            "instrument_channels_in_file": meta.channels,
            "brightfield_channels": meta.brightfield,
        }
