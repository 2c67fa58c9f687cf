"""Synthetic bone-marrow IFC samples with known truth, for the demo, tests and benchmarks.

Three classes as in Doan et al. 2020: ``leukemic`` (B-ALL blasts), ``normal`` (mature B
lymphocytes) and ``other`` (granulocytes, monocytes, dead cells). Every cell has a
bright-field image (dark refractive rim, textured cytoplasm, visible nucleus), a dark-field
image (side-scatter speckle that grows with granularity) and fluorescence images with the
classes' immunophenotypes. Samples are patients x timepoints with known leukemic fractions
(0-90 %, on both sides of the 10 % and 25 % cutoffs) and each sample has its own acquisition
effects (gain, background, focus), so leaving a sample out is a real test.

The simulator is a :class:`~ifcml.io.sources.Source`: the same cells can be written as an
IDEAS-style per-cell TIFF export (exercising the real reader) or ingested straight into a
store. Everything is deterministic given the seed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from scipy import ndimage

from ifcml.errors import InputError
from ifcml.io.sources import CellChunk
from ifcml.outputs import replace_atomically

#: Instrument channels of the paper's panel that the simulator renders (Doan et al. 2020).
PAPER_CHANNELS: dict[int, str] = {
    1: "BF",
    3: "CD10",
    4: "CD34",
    6: "DF",
    7: "DAPI",
    11: "CD19",
    12: "CD45",
}
LABEL_FREE = ("BF", "DF")
#: Light of one stain reaching a neighbouring camera channel (receiving channel: {emitting
#: channel: fraction}), as on the instrument; a compensation matrix with these coefficients
#: undoes it (gates/simulated_panel.xml carries it).
SPILLOVER: dict[str, dict[str, float]] = {
    "CD10": {"CD34": 0.05},
    "CD34": {"CD10": 0.15},
    "CD19": {"CD45": 0.05},
    "CD45": {"CD19": 0.10},
}
CLASSES = ("leukemic", "normal", "other")
_OTHER_KINDS = ("granulocyte", "monocyte", "dead")
RENDER_BLOCK = 64


@dataclass(frozen=True)
class _CellType:
    """Morphology and phenotype of one kind of cell (radii in pixels at 0.5 um/pixel)."""

    radius: tuple[float, float]  # mean, sd
    nucleus_ratio: float  # nucleus radius / cell radius
    lobes: int  # 1 round, 2 kidney-shaped, 3 segmented
    elongation: float  # max extra axis ratio of the outline
    chromatin: float  # texture amplitude of the nucleus
    granularity: float  # dark-field speckle density
    brightness: float  # bright-field interior contrast (dead cells are dark)
    markers: dict[str, tuple[float, float]]  # channel -> (mean level, fraction positive)


_TYPES: dict[str, _CellType] = {
    "leukemic": _CellType(
        (11.0, 1.3),
        0.80,
        1,
        0.10,
        0.25,
        0.08,
        1.00,
        {"CD19": (1.0, 1.0), "CD10": (1.5, 0.95), "CD34": (1.0, 0.7), "CD45": (0.2, 1.0)},
    ),
    "normal": _CellType(
        (8.5, 0.9),
        0.85,
        1,
        0.08,
        0.60,
        0.12,
        1.00,
        {"CD19": (1.0, 1.0), "CD10": (0.05, 1.0), "CD34": (0.05, 1.0), "CD45": (1.3, 1.0)},
    ),
    "granulocyte": _CellType(
        (11.5, 1.0),
        0.45,
        3,
        0.10,
        0.50,
        0.90,
        1.00,
        {"CD19": (0.05, 1.0), "CD10": (0.5, 0.8), "CD34": (0.05, 1.0), "CD45": (0.7, 1.0)},
    ),
    "monocyte": _CellType(
        (13.0, 1.2),
        0.55,
        2,
        0.15,
        0.35,
        0.40,
        1.00,
        {"CD19": (0.05, 1.0), "CD10": (0.05, 1.0), "CD34": (0.05, 1.0), "CD45": (1.0, 1.0)},
    ),
    "dead": _CellType(
        (7.0, 1.3),
        0.60,
        3,
        0.45,
        1.20,
        0.70,
        0.55,
        {"CD19": (0.1, 1.0), "CD10": (0.1, 1.0), "CD34": (0.1, 1.0), "CD45": (0.2, 1.0)},
    ),
}


@dataclass(frozen=True)
class SimulationSettings:
    """What to simulate; every number is a setting (defaults make a small demo set)."""

    patients: int = 4
    timepoints: tuple[str, ...] = ("day0", "day15", "day33")
    cells_per_sample: int = 300
    image_size: tuple[int, int] = (36, 64)  # smallest and largest side, pixels
    channels: dict[int, str] = field(default_factory=lambda: dict(PAPER_CHANNELS))
    labelled: bool = True
    seed: int = 0


def plan_samples(settings: SimulationSettings) -> pd.DataFrame:
    """The samples (instances) and their exact cell counts per class.

    Patients alternate between rapid and slow early responders, so the 25 % and 10 %
    calls have both outcomes: at diagnosis 60-90 % leukemic, then falling to below 10 %
    (rapid) or staying above 25 % (slow) on day 15, and to 0-5 % or 10-25 % later.
    """
    rng = np.random.default_rng([settings.seed, 0])
    rows = []
    for p in range(settings.patients):
        slow = p % 2 == 1
        fraction = rng.uniform(0.60, 0.90)
        for t, timepoint in enumerate(settings.timepoints):
            if t == 1:
                fraction = rng.uniform(0.30, 0.50) if slow else rng.uniform(0.0, 0.08)
            elif t >= 2:
                fraction = rng.uniform(0.12, 0.22) if slow else rng.uniform(0.0, 0.04)
            n = settings.cells_per_sample
            normal_share = rng.uniform(0.25, 0.5)
            probs = [fraction, (1 - fraction) * normal_share, (1 - fraction) * (1 - normal_share)]
            counts = rng.multinomial(n, probs)
            rows.append(
                {
                    "instance": f"P{p + 1:02d}_{timepoint}",
                    "patient": f"P{p + 1:02d}",
                    "timepoint": timepoint,
                    "responder": "slow" if slow else "rapid",
                    "n_cells": n,
                    **{f"n_{c}": int(k) for c, k in zip(CLASSES, counts, strict=False)},
                    **{f"fraction_{c}": float(k) / n for c, k in zip(CLASSES, counts, strict=False)},
                }
            )
    return pd.DataFrame(rows)


class SimulatedSource:
    """Simulated cells of every planned sample, rendered chunk by chunk."""

    format = "simulated"
    has_masks = True

    def __init__(self, settings: SimulationSettings = SimulationSettings()):
        self.settings = settings
        self.samples = plan_samples(settings)
        self.name = f"simulated(seed={settings.seed})"
        self.channels = dict(settings.channels)
        unknown = set(self.channels.values()) - set(PAPER_CHANNELS.values())
        if unknown:
            raise ValueError(
                f"cannot simulate channel(s) {sorted(unknown)}; known: {list(PAPER_CHANNELS.values())}"
            )
        self.max_height = self.max_width = settings.image_size[1]
        self.n_candidates = int(self.samples["n_cells"].sum())

    def chunks(self, chunk_cells: int) -> Iterator[CellChunk]:
        """Cells in blocks of at most ``RENDER_BLOCK``, each block seeded on its own.

        Seeding per block (not per chunk) makes every cell independent of ``chunk_cells``.
        """
        block = min(chunk_cells, RENDER_BLOCK)
        for index, sample in self.samples.iterrows():
            rng = np.random.default_rng([self.settings.seed, 1, int(index)])
            kinds = self._cell_kinds(sample, rng)
            acquisition = _Acquisition.draw(rng)
            for start in range(0, len(kinds), RENDER_BLOCK):
                block_rng = np.random.default_rng([self.settings.seed, 2, int(index), start])
                images, masks = _render(
                    kinds[start : start + RENDER_BLOCK],
                    acquisition,
                    self.channels,
                    self.settings.image_size,
                    block_rng,
                )
                for first in range(0, len(images), block):
                    yield self._chunk(
                        sample,
                        kinds,
                        start + first,
                        images[first : first + block],
                        masks[first : first + block],
                    )

    def _chunk(self, sample: pd.Series, kinds: list[str], start: int, images, masks) -> CellChunk:
        part = kinds[start : start + len(images)]
        return CellChunk(
            images=images,
            masks=masks,
            object_numbers=list(range(start + 1, start + len(part) + 1)),
            labels=[_class_of(kind) if self.settings.labelled else None for kind in part],
            instances=[sample["instance"]] * len(part),
            sources=[self.name] * len(part),
        )

    @staticmethod
    def _cell_kinds(sample: pd.Series, rng: np.random.Generator) -> list[str]:
        kinds = ["leukemic"] * sample["n_leukemic"] + ["normal"] * sample["n_normal"]
        kinds += list(rng.choice(_OTHER_KINDS, size=sample["n_other"], p=[0.5, 0.3, 0.2]))
        return [str(k) for k in rng.permutation(kinds)]

    def provenance(self) -> dict:
        return {"format": self.format, "settings": repr(self.settings)}


def _class_of(kind: str) -> str:
    return kind if kind in CLASSES else "other"


@dataclass(frozen=True)
class _Acquisition:
    """Per-sample instrument state: what makes one acquisition look unlike another."""

    gain: float
    background: float  # bright-field background level
    offset: float  # fluorescence/dark-field background shift
    focus: float  # gaussian blur sigma, pixels

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Acquisition:
        return cls(
            gain=rng.uniform(0.85, 1.15),
            background=rng.uniform(560.0, 720.0),
            offset=rng.uniform(-10.0, 25.0),
            focus=rng.uniform(0.0, 1.1),
        )


@dataclass
class _Cells:
    """Geometry and texture of a batch of cells on a ``side x side`` canvas (arrays are (N, side, side))."""

    types: list[_CellType]
    edge: np.ndarray  # signed distance to the outline, pixels (negative inside)
    inside: np.ndarray  # soft cell indicator
    nucleus: np.ndarray  # soft nucleus indicator
    texture: np.ndarray  # smooth unit-variance noise
    mask: np.ndarray  # hard cell mask, uint8

    def per_cell(self, values) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)[:, None, None]

    @property
    def chromatin(self) -> np.ndarray:
        return self.per_cell([t.chromatin for t in self.types])


def _render(
    kinds: list[str],
    acq: _Acquisition,
    channels: dict[int, str],
    size_range: tuple[int, int],
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Render cells of the given kinds, vectorised over the batch.

    Each paper channel draws from its own child generator, so a channel's pixels do not depend
    on which other channels are rendered (a channel's spillover sources are always drawn).
    """
    channel_rngs = dict(zip(PAPER_CHANNELS.values(), rng.spawn(len(PAPER_CHANNELS)), strict=True))
    n = len(kinds)
    heights = rng.integers(size_range[0], size_range[1] + 1, n)
    widths = rng.integers(size_range[0], size_range[1] + 1, n)
    cells = _draw_cells([_TYPES[k] for k in kinds], heights, widths, size_range[1], rng)
    drawn = [
        c for c in PAPER_CHANNELS.values() if c in channels.values() or _spills_into(c, channels.values())
    ]
    emitted = {name: _PLANES.get(name, _marker)(cells, acq, name, channel_rngs[name]) for name in drawn}
    planes = []
    for name in channels.values():
        plane, noise_sd = emitted[name]
        plane = plane + sum(share * emitted[source][0] for source, share in SPILLOVER.get(name, {}).items())
        plane_rng = channel_rngs[name]
        if acq.focus > 0.05:
            plane = ndimage.gaussian_filter(plane, (0, acq.focus, acq.focus))
        plane = acq.gain * plane + plane_rng.normal(0, noise_sd, plane.shape)
        planes.append(np.clip(np.rint(plane), 0, 65535).astype(np.uint16))
    stack = np.stack(planes, axis=1)
    images = [stack[i, :, : heights[i], : widths[i]] for i in range(n)]
    masks = [
        np.repeat(cells.mask[i : i + 1, : heights[i], : widths[i]], len(channels), axis=0) for i in range(n)
    ]
    return images, masks


def _spills_into(source: str, receivers) -> bool:
    return any(source in SPILLOVER.get(receiver, {}) for receiver in receivers)


def _draw_cells(
    types: list[_CellType], heights: np.ndarray, widths: np.ndarray, side: int, rng: np.random.Generator
) -> _Cells:
    """Outline (a rotated ellipse), nucleus (one to three lobes) and texture of each cell."""
    n = len(types)
    radius = np.array([rng.normal(*t.radius) for t in types]).clip(4.0, side / 2.5)
    stretch = 1 + np.array([t.elongation for t in types]) * rng.uniform(0, 1, n)
    angle = rng.uniform(0, np.pi, n)
    cy = heights / 2 + rng.normal(0, 1.0, n)
    cx = widths / 2 + rng.normal(0, 1.0, n)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)

    def elliptic(centre_y, centre_x, a, b):
        dy = yy[None] - centre_y[:, None, None]
        dx = xx[None] - centre_x[:, None, None]
        cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
        u = (dx * cos + dy * sin) / a[:, None, None]
        v = (-dx * sin + dy * cos) / b[:, None, None]
        return np.sqrt(u * u + v * v)

    cell_r = elliptic(cy, cx, radius * stretch, radius)
    edge = (cell_r - 1) * radius[:, None, None]
    inside = _smooth_step(-edge)

    nucleus_r = np.full_like(cell_r, np.inf)
    lobes = np.array([t.lobes for t in types])
    ratio = np.array([t.nucleus_ratio for t in types])
    lobe_radius = radius * ratio * np.where(lobes > 1, 0.75, 1.0)
    for lobe in range(3):
        spread = np.where(lobe < lobes, np.where(lobes > 1, 0.45 * radius, 0.0), 0.0)
        phase = rng.uniform(0, 2 * np.pi, n)
        lobe_r = elliptic(
            cy + spread * np.sin(phase), cx + spread * np.cos(phase), lobe_radius, lobe_radius * 0.9
        )
        nucleus_r = np.minimum(nucleus_r, lobe_r)
    nucleus = _smooth_step((1 - nucleus_r) * (radius * ratio)[:, None, None]) * inside

    texture = ndimage.gaussian_filter(rng.standard_normal((n, side, side)).astype(np.float32), (0, 1.2, 1.2))
    texture /= texture.std(axis=(1, 2), keepdims=True) + 1e-6
    return _Cells(types, edge, inside, nucleus, texture, (cell_r <= 1).astype(np.uint8))


def _bright_field(cells: _Cells, acq: _Acquisition, name: str, rng: np.random.Generator):
    """Dark refractive rim with a faint halo outside, textured cytoplasm, darker nucleus."""
    rim = np.exp(-((cells.edge / 1.3) ** 2))
    halo = np.exp(-(((cells.edge - 2.2) / 1.2) ** 2))
    brightness = cells.per_cell([t.brightness for t in cells.types])
    relative = (
        1.0
        - 0.06 * cells.inside * (2 - brightness)
        + 0.05 * cells.inside * cells.texture * (0.5 + cells.chromatin)
        - 0.10 * cells.nucleus
        - 0.30 * rim
        + 0.10 * halo
    )
    return acq.background * relative, 6.0


def _dark_field(cells: _Cells, acq: _Acquisition, name: str, rng: np.random.Generator):
    """Side-scatter speckle whose density grows with the cell's granularity."""
    density = cells.per_cell([t.granularity for t in cells.types])
    grains = (rng.uniform(0, 1, cells.edge.shape) < 0.12 * density) * cells.inside
    speckle = ndimage.gaussian_filter(grains.astype(np.float32), (0, 0.8, 0.8))
    return 40 + acq.offset + 900 * speckle + 25 * cells.inside * (1 + 0.5 * cells.texture), 3.0


def _dapi(cells: _Cells, acq: _Acquisition, name: str, rng: np.random.Generator):
    """Nuclear stain with chromatin texture (condensed and fragmented in dead cells)."""
    return 35 + acq.offset + 420 * cells.nucleus * (1 + cells.chromatin * 0.6 * cells.texture).clip(0.2), 4.0


def _marker(cells: _Cells, acq: _Acquisition, name: str, rng: np.random.Generator):
    """A surface antigen: bright at the membrane, faint inside, at the cell type's expression level."""
    level = cells.per_cell([_marker_level(t, name, rng) for t in cells.types])
    membrane = np.exp(-((cells.edge / 1.6) ** 2)) + 0.25 * cells.inside
    return 30 + acq.offset + 260 * level * membrane, 3.0


_PLANES = {"BF": _bright_field, "DF": _dark_field, "DAPI": _dapi}


def _smooth_step(distance: np.ndarray) -> np.ndarray:
    """Soft inside indicator from a signed distance (positive inside), about one pixel wide."""
    return 1.0 / (1.0 + np.exp(-2.0 * distance))


def _marker_level(cell_type: _CellType, marker: str, rng: np.random.Generator) -> float:
    mean, positive = cell_type.markers[marker]
    level = mean if rng.uniform() < positive else 0.05
    return float(level * rng.lognormal(0, 0.3))


def write_tiff_export(
    source: SimulatedSource, out: Path, on_cells: Callable[[int], None] | None = None
) -> Path:
    """Write the cells as an IDEAS-style export tree ``OUT/<instance>/<label>/<instance>_<n>_Ch<k>.ome.tif``.

    ``OUT/samples.csv`` records each sample's patient, timepoint and exact class counts.
    The tree is written into a hidden sibling folder and renamed when complete.
    """
    out = Path(out)
    if out.exists():
        raise InputError(f"{out}: already exists; choose another output folder")

    def write(tmp: Path) -> None:
        tmp.mkdir()
        for chunk in source.chunks(256):
            for j in range(len(chunk)):
                folder = tmp / chunk.instances[j]
                if chunk.labels[j] is not None:
                    folder = folder / chunk.labels[j]
                folder.mkdir(parents=True, exist_ok=True)
                for c, k in enumerate(source.channels):
                    name = f"{chunk.instances[j]}_{chunk.object_numbers[j]}_Ch{k}.ome.tif"
                    tifffile.imwrite(folder / name, chunk.images[j][c], photometric="minisblack")
            if on_cells:
                on_cells(len(chunk))
        source.samples.to_csv(tmp / "samples.csv", index=False)

    return replace_atomically(out, write)
