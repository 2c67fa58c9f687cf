"""The networks' backbones by name: what a network spec's ``network:`` may say.

Each builds the layers between the centred crops and the global pooling for a spec
(a :class:`~ifcml.models.network_spec.NetworkSpec`, which reads its names from here), crops of
``size`` and ``n_channels``. Adding a
network is one function here, one entry in :data:`BACKBONES` and one YAML spec; Keras is
imported when a backbone is built, so that reading specs stays fast.
"""

from __future__ import annotations

import warnings
from typing import Any


def resnet50(spec: Any, size: int, n_channels: int) -> Any:
    """Keras' own ResNet50: 50 layers, bottleneck residual blocks, any C, size >= 32, random start."""
    import keras

    with warnings.catch_warnings():  # about ImageNet weights' 3 channels; these start from random
        warnings.filterwarnings("ignore", "This model usually expects 1 or 3 input channels")
        return keras.applications.ResNet50(
            include_top=False, weights=None, input_shape=(size, size, n_channels), pooling=None
        )


def compact_cnn(spec: Any, size: int, n_channels: int) -> Any:
    """A stride-2 stem, then per entry of ``filters`` a block of 3x3 convolutions and a max-pool."""
    import keras

    inputs = keras.Input((size, size, n_channels))
    x = _conv(inputs, spec.stem_filters, "stem", strides=2)
    for block, width in enumerate(spec.filters):
        for conv in range(spec.convs_per_block):
            x = _conv(x, width, f"block{block}_{conv}")
        x = keras.layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    return keras.Model(inputs, x, name="compact_cnn")


def _conv(x: Any, width: int, name: str, strides: int = 1) -> Any:
    import keras

    x = keras.layers.Conv2D(width, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)  # small data: settle fast
    return keras.layers.Activation("relu", name=f"{name}_relu")(x)


BACKBONES = {"resnet50": resnet50, "compact_cnn": compact_cnn}
