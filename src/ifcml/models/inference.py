"""Applying a trained network to a store: batched, streamed, no per-cell Python work.

A network is found from an MLflow model (``runs:/ID/model``, ``models:/NAME@ALIAS``, or a
local model folder), whose metadata names its classes, channels and crop, or from a bare
``.keras`` file, for which the channels are given. Store batches are preprocessed in a
background thread of tf.data while the previous batch is on the CPU (or GPU), so neither waits.
"""

from __future__ import annotations

import gc
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from ifcml.errors import InputError
from ifcml.io.store import CellStore
from ifcml.models.inputs import crops_of
from ifcml.models.network_spec import Crop
from ifcml.models.networks import EMBEDDING, load_network
from ifcml.models.saved import SavedModel, load_trained


@dataclass
class Network:
    model: keras.Model
    channels: list[str]
    classes: list[str]
    crop: Crop
    _outputs: dict[bool, keras.Model] = field(default_factory=dict, repr=False, compare=False)

    def predictor(self, embeddings: bool) -> keras.Model:
        """The model answering probabilities (and pooled embeddings): built once, so its
        compiled prediction function is traced once however many stores it reads."""
        if embeddings not in self._outputs:
            outputs = [self.model.output]
            if embeddings:
                outputs.append(self.model.get_layer(EMBEDDING).output)
            self._outputs[embeddings] = keras.Model(self.model.input, outputs)
        return self._outputs[embeddings]


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
    """(cells rows, class probabilities, pooled embeddings or None) per batch, in store order.

    Batches are read and preprocessed by tf.data on the cores the network leaves idle, two at
    once, in order, while the network answers the previous ones.
    """
    import tensorflow as tf

    model = network.predictor(embeddings)
    crop = network.crop.settings()
    size, n_channels = crop.size, len(network.channels)

    def batch(start: np.int64) -> np.ndarray:
        stop = min(int(start) + batch_size, store.n_cells)
        return crops_of(store, network.channels, crop, int(start), stop).astype(np.float32)

    def read(start):
        crops = tf.numpy_function(batch, [start], tf.float32, stateful=False)
        return tf.ensure_shape(crops, (None, size, size, n_channels))

    starts = np.arange(0, store.n_cells, batch_size, dtype=np.int64)
    data = tf.data.Dataset.from_tensor_slices(starts).map(read, num_parallel_calls=2).prefetch(2)
    with _older_objects_left_alone():
        for start, crops in zip(starts, data, strict=True):
            result = model.predict_on_batch(crops)  # the compiled prediction function
            if not embeddings:  # a one-output model answers with the array, not a list of one
                result = [result]
            probabilities = np.asarray(result[0], np.float64)
            pooled = np.asarray(result[1], np.float32) if embeddings else None
            yield store.cells.iloc[start : start + batch_size], probabilities, pooled


@contextmanager
def _older_objects_left_alone() -> Iterator[None]:
    """Python's cyclic garbage collector skips the objects alive before the stream (a network's
    hundreds of thousands): its full collections walked them all, again and again, and halved
    the cells/s of a 72,000-cell store. Garbage made while streaming is still collected."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
