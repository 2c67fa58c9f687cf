"""Feature recipes: which objects and CellProfiler measurements to compute, and how to prune.

A recipe is YAML (``features/default.yaml``) validated here; unknown or misspelt keys are
errors that name the key's path. Every number of the measurement is a setting, with the
defaults IFC CellProfiler pipelines use at 40x.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ifcml.specs import load_spec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Segmentation(_Strict):
    """How each cell's object is found (see ``ifcml.features.segment``)."""

    channel: str = "BF"
    # auto: the instrument's mask when the store has one, else bright-field segmentation
    source: Literal["auto", "instrument", "bright-field"] = "auto"
    smoothing: float = Field(1.0, ge=0)
    closing_radius: int = Field(2, ge=0)
    min_area: int = Field(20, ge=1)


class Objects(_Strict):
    """``Cells`` is the segmented cell; ``CellsExpanded`` the same object grown for scatter."""

    expand_pixels: int = Field(2, ge=0)
    # channels measured on CellsExpanded (dark-field scatter reaches past the bright-field edge)
    expanded_channels: list[str] = ["DF"]


class SizeShape(_Strict):
    enabled: bool = True
    zernike_degree: int = Field(9, ge=0)
    feret: bool = True


class Intensity(_Strict):
    enabled: bool = True


class Texture(_Strict):
    enabled: bool = True
    scales: list[int] = [3]
    gray_levels: int = Field(256, ge=2, le=256)


class Granularity(_Strict):
    """Unsubsampled, so each cell's spectrum depends on its own pixels only."""

    enabled: bool = True
    element_size: int = Field(10, ge=1)  # background (tophat) radius, pixels
    spectrum_length: int = Field(16, ge=1)


class RadialDistribution(_Strict):
    enabled: bool = True
    bins: int = Field(4, ge=0)  # 0 turns FracAtD, MeanFrac and RadialCV off
    zernike_degree: int = Field(9, ge=0)  # 0 turns the radial Zernike moments off


class Correlation(_Strict):
    """Colocalisation of every pair of measured channels inside ``Cells``."""

    enabled: bool = True
    # costes is off by default: ~3 ms per cell and channel pair (a threshold search per cell)
    methods: list[Literal["pearson", "manders_fold", "rwc", "costes"]] = ["pearson", "manders_fold", "rwc"]
    threshold_percent: int = Field(15, ge=0, le=100)


class Quality(_Strict):
    """ifcml's own focus and shape-quality measurements (:mod:`ifcml.features.quality`)."""

    enabled: bool = True


class Measurements(_Strict):
    sizeshape: SizeShape = SizeShape()
    intensity: Intensity = Intensity()
    texture: Texture = Texture()
    granularity: Granularity = Granularity()
    radial_distribution: RadialDistribution = RadialDistribution()
    correlation: Correlation = Correlation()
    quality: Quality = Quality()


class Normalisation(_Strict):
    method: Literal["none", "standardize", "mad_robustize"] = "none"
    by: Literal["instance", "all"] = "instance"


Operation = Literal[
    "drop_na_columns", "variance_threshold", "blocklist", "noise_removal", "correlation_threshold"
]


class Pruning(_Strict):
    """pycytominer feature selection, in this order, then optional normalisation."""

    operations: list[Operation] = list(Operation.__args__)
    sample_cells: int = Field(100_000, ge=2)  # fit on a seeded sample of at most this many cells
    na_cutoff: float = Field(0.05, ge=0, le=1)
    freq_cut: float = Field(0.05, gt=0, le=1)
    unique_cut: float = Field(0.01, gt=0, le=1)
    blocklist: list[str] = []  # feature names dropped in addition to pycytominer's default list
    noise_removal_stdev_cutoff: float = Field(0.8, gt=0)
    corr_threshold: float = Field(0.95, gt=0, le=1)
    corr_method: Literal["pearson", "spearman", "kendall"] = "pearson"
    normalisation: Normalisation = Normalisation()


class Recipe(_Strict):
    version: Literal[1] = 1
    tile_padding: int = Field(2, ge=1)  # zero pixels around each cell when cells are measured together
    chunk_cells: int = Field(256, ge=1)
    segmentation: Segmentation = Segmentation()
    objects: Objects = Objects()
    measurements: Measurements = Measurements()
    pruning: Pruning = Pruning()

    def digest(self) -> str:
        """Hash of every setting that changes a measured value (pruning excluded)."""
        measured = self.model_dump(exclude={"pruning", "chunk_cells"})
        return hashlib.sha256(json.dumps(measured, sort_keys=True).encode()).hexdigest()[:16]


def load_recipe(path: Path | str | None = None) -> Recipe:
    """Read and validate a recipe file; ``None`` gives the defaults (``features/default.yaml``)."""
    return Recipe() if path is None else load_spec(Path(path), Recipe, "feature recipe")


def outline_source(recipe: Recipe, has_masks: bool) -> str:
    """Where the outlines come from for a store with (or without) the instrument's masks:
    "instrument" or "bright-field" ("auto" takes the masks when there are any)."""
    source = recipe.segmentation.source
    return "instrument" if source == "instrument" or (source == "auto" and has_masks) else "bright-field"
