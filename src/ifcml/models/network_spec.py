"""Network specs (``models/resnet50.yaml``, ``models/compact_cnn.yaml``): validated settings.

Kept apart from :mod:`ifcml.models.networks` so reading a spec does not import Keras.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ifcml.models.backbones import BACKBONES
from ifcml.preprocess import CropSettings


class Crop(BaseModel):
    """The paper's crop: ``size`` square, noise padding from the most uniform corner, stretch."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    size: int = Field(48, ge=32)
    corner: int = Field(10, ge=2)
    low_percentile: float = Field(0.5, ge=0, lt=50)
    high_percentile: float = Field(99.5, gt=50, le=100)
    seed: int = 0

    def settings(self) -> CropSettings:
        return CropSettings(**self.model_dump())


class Augmentation(BaseModel):
    """Random flips, shifts (fraction of the side) and rotations (degrees), training only."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    flip: bool = True
    shift: float = Field(0.5, ge=0, le=1)
    rotation_degrees: float = Field(180, ge=0, le=180)
    # Both defaults keep pixel statistics as prediction sees them: bilinear resampling smooths the
    # noise of the background and padding, a nearest fill smears edge pixels into flat stripes, and
    # batch normalisation would learn statistics during training that prediction never meets.
    fill_mode: Literal["reflect", "nearest", "wrap", "constant"] = "reflect"
    interpolation: Literal["nearest", "bilinear"] = "nearest"


class TrainingRecipe(BaseModel):
    """Doan et al. 2020's recipe; every number a setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    learning_rate: float = Field(1e-4, gt=0)  # Adam
    plateau_factor: float = Field(0.1, gt=0, lt=1)  # learning rate x this ...
    plateau_patience: int = Field(10, ge=1)  # ... after this many epochs without val-loss gain
    early_stop_patience: int = Field(25, ge=1)
    max_epochs: int = Field(512, ge=1)
    batch_size: int = Field(256, ge=1)
    validation_fraction: float = Field(0.2, gt=0, lt=1)  # of the training cells, stratified
    balance: Literal["undersample", "class_weight", "none"] = "undersample"
    augmentation: Augmentation = Augmentation()


class NetworkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    network: Literal[tuple(BACKBONES)]  # type: ignore[valid-type]
    # compact_cnn: a stride-2 stem, then per entry of ``filters`` a block of 3x3 convolutions + max-pool
    stem_filters: int = Field(16, ge=1)
    filters: list[int] = [32, 64, 128]
    convs_per_block: int = Field(1, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)  # before the classifier
    crop: Crop = Crop()
    training: TrainingRecipe = TrainingRecipe()
    inference_batch: int = Field(512, ge=1)
    mixed_precision: Literal["auto", "off"] = "auto"  # auto: float16 compute on a GPU
