"""Applying a trained network to a store: batched, streamed, no per-cell Python work.

A network is found from an MLflow model (``runs:/ID/model``, ``models:/NAME@ALIAS``, or a
local model folder), whose metadata names its classes, channels and crop, or from a bare
``.keras`` file, for which the channels are given. Store batches are preprocessed in a
background thread of tf.data while the previous batch is on the CPU (or GPU), so neither waits.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from ifcml.errors import InputError
from ifcml.io.store import CellStore
from ifcml.models.inputs import store_crops
from ifcml.models.network_spec import Crop
from ifcml.models.networks import EMBEDDING, load_network
from ifcml.models.saved import SavedModel, load_trained


@dataclass
class Network:
    model: keras.Model
    channels: list[str]
    classes: list[str]
    crop: Crop


def load_for_inference(
    reference: str | Path, channels: Sequence[str] | None = None, classes: Sequence[str] | None = None
) -> Network:
    """The network at ``reference`` (a model folder, a ``.keras`` file, or an MLflow model URI
    found in the process's tracking store)."""
    text = str(reference)
    if text.endswith(".keras"):
        if not Path(text).is_file():
            raise InputError(f"{text}: no such model file")
        if not channels:
            raise InputError(f"{text}: a bare .keras file does not name its channels; give --channels")
        model = load_network(text)
        n_classes = model.output_shape[-1]
        names = list(classes) if classes else [f"class_{k}" for k in range(n_classes)]
        return Network(model, list(channels), names, Crop(size=model.input_shape[1]))
    if Path(text).is_dir():
        return network_from(load_trained(text))
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = mlflow.artifacts.download_artifacts(text, dst_path=tmp)
        except Exception as exc:  # mlflow raises several kinds for a missing model or run
            raise InputError(f"{text}: not an MLflow model ({exc})") from exc
        return network_from(load_trained(folder))


def network_from(saved: SavedModel) -> Network:
    """A loaded network with the channels, classes and crop its metadata names."""
    if saved.flavor != "keras":
        raise InputError(f"an MLflow model, but not a network (a {saved.flavor} model)")
    inputs = saved.metadata.get("inputs") or {}
    try:
        return Network(
            saved.model, list(inputs["channels"]), list(saved.metadata["classes"]), Crop(**inputs["crop"])
        )
    except (KeyError, TypeError) as exc:
        raise InputError(f"the network's metadata lacks {exc} (channels, classes and crop)") from exc


def stream_store_batches(
    network: Network, store: CellStore, batch_size: int = 512, embeddings: bool = False
) -> Iterator[tuple[pd.DataFrame, np.ndarray, np.ndarray | None]]:
    """(cells rows, class probabilities, pooled embeddings or None) per batch, in store order."""
    import tensorflow as tf

    outputs = [network.model.output]
    if embeddings:
        outputs.append(network.model.get_layer(EMBEDDING).output)
    model = keras.Model(network.model.input, outputs)
    crop = network.crop.settings()
    rows: list[pd.DataFrame] = []

    def batches():
        for cells, crops in store_crops(store, network.channels, crop, batch_size):
            rows.append(cells)
            yield crops.astype(np.float32)

    size, n_channels = crop.size, len(network.channels)
    signature = tf.TensorSpec((None, size, size, n_channels), tf.float32)
    data = tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(2)
    for crops in data:
        result = model.predict_on_batch(crops)  # the compiled prediction function
        if not embeddings:  # a one-output model answers with the array, not a list of one
            result = [result]
        probabilities = np.asarray(result[0], np.float64)
        pooled = np.asarray(result[1], np.float32) if embeddings else None
        yield rows.pop(0), probabilities, pooled
