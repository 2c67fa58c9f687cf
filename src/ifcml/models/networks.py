"""The Keras networks of network specs (see :mod:`ifcml.models.network_spec`).

Every network takes uint8 crops (N, size, size, C) as floats, subtracts the per-channel means of
its training cells (a fixed ``Normalization`` layer, so a saved model carries its own means),
runs a backbone, pools globally into the layer named ``embedding`` (what ``ifcml embed``
reads), and ends in a softmax. The paper's training recipe is the default of every setting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import keras
import numpy as np

from ifcml.models.backbones import BACKBONES
from ifcml.models.network_spec import Augmentation, NetworkSpec

EMBEDDING = "embedding"
MEANS = "training_means"


class _NoRetracingNotes(logging.Filter):
    """Every fold trains a new model, whose first ``predict`` traces that model's own function;
    TensorFlow counts those across models as retracing and warns between the progress bars,
    though no model is traced twice. Other TensorFlow warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


logging.getLogger("tensorflow").addFilter(_NoRetracingNotes())


def build_network(spec: NetworkSpec, n_channels: int, n_classes: int, means: np.ndarray) -> keras.Model:
    """The network of ``spec`` for ``n_channels`` crops, with the training ``means`` built in."""
    size = spec.crop.size
    with _precision(spec):
        inputs = keras.Input((size, size, n_channels), name="crops")
        centred = keras.layers.Normalization(
            axis=-1,
            mean=np.asarray(means, np.float32),
            variance=np.ones(n_channels, np.float32),
            name=MEANS,
        )(inputs)
        features = BACKBONES[spec.network](spec, size, n_channels)(centred)
        pooled = keras.layers.GlobalAveragePooling2D(name=EMBEDDING)(features)
        if spec.dropout:
            pooled = keras.layers.Dropout(spec.dropout, name="dropout")(pooled)
        outputs = keras.layers.Dense(n_classes, activation="softmax", dtype="float32", name="classes")(pooled)
        return keras.Model(inputs, outputs, name=spec.name)


@contextmanager
def _precision(spec: NetworkSpec) -> Iterator[None]:
    """Layers built inside compute in float16 on a GPU (``mixed_precision: auto``), else float32."""
    import tensorflow as tf

    mixed = spec.mixed_precision == "auto" and bool(tf.config.list_physical_devices("GPU"))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16" if mixed else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def load_network(path: Path | str, compile: bool = False) -> keras.Model:
    """A saved ``.keras`` model, loaded with Keras' safe mode (no arbitrary code runs)."""
    return keras.saving.load_model(path, safe_mode=True, compile=compile)


def augmenter(augmentation: Augmentation, seed: int) -> keras.Sequential | None:
    """Keras' random flip / translation / rotation layers for the spec, or None when all are off."""
    layers = []
    if augmentation.flip:
        layers.append(keras.layers.RandomFlip("horizontal_and_vertical", seed=seed))
    if augmentation.shift:
        layers.append(
            keras.layers.RandomTranslation(
                augmentation.shift,
                augmentation.shift,
                fill_mode=augmentation.fill_mode,
                interpolation=augmentation.interpolation,
                seed=seed + 1,
            )
        )
    if augmentation.rotation_degrees:
        layers.append(
            keras.layers.RandomRotation(
                augmentation.rotation_degrees / 360,
                fill_mode=augmentation.fill_mode,
                interpolation=augmentation.interpolation,
                seed=seed + 2,
            )
        )
    return keras.Sequential(layers, name="augmentation") if layers else None
