"""Network inputs: the paper's crops of a store's cells, computed once, streamed through tf.data.

Crops are a pure function of (store images, channels, crop settings): each cell's result depends
on that cell alone (see :mod:`ifcml.preprocess`). They are computed once, chunk by chunk, into
an ``.npy`` file in the crop cache (``IFCML_CACHE``, else ``~/.cache/ifcml``) named by the
store's image hash, the channels and the settings, and memory-mapped from there: training and
prediction read batches from disk, so memory does not grow with the number of cells.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ifcml.io.store import CellStore
from ifcml.outputs import replace_atomically
from ifcml.preprocess import CropSettings, preprocess


def cache_dir() -> Path:
    return Path(os.environ.get("IFCML_CACHE") or Path.home() / ".cache" / "ifcml") / "crops"


def store_crops(
    store: CellStore, channels: Sequence[str], crop: CropSettings, batch_cells: int = 2048
) -> Iterator[tuple[pd.DataFrame, np.ndarray]]:
    """(cells rows, uint8 crops (n, size, size, C)) a batch at a time, in store order."""
    for cells, images in store.iter_batches(batch_cells, channels):
        yield cells, _crops(cells, images, crop)


def crops_of(
    store: CellStore, channels: Sequence[str], crop: CropSettings, start: int, stop: int
) -> np.ndarray:
    """The uint8 crops (n, size, size, C) of store cells ``start:stop`` (safe to call from
    several threads at once: the reading and the compiled steps release the GIL)."""
    images = store.read(start, stop, store.channel_indices(channels))
    return _crops(store.cells.iloc[start:stop], images, crop)


def _crops(cells: pd.DataFrame, images: np.ndarray, crop: CropSettings) -> np.ndarray:
    crops = preprocess(
        images, cells["height"].to_numpy(), cells["width"].to_numpy(), cells["cell_id"].to_numpy(), crop
    )
    return np.ascontiguousarray(crops.transpose(0, 2, 3, 1))


def cached_crops(
    store: CellStore,
    channels: Sequence[str],
    crop: CropSettings,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Every cell's crop, (N, size, size, C) uint8, memory-mapped read-only from the cache."""
    key = json.dumps(
        {"store": store.meta["images_sha256"], "channels": list(channels), "crop": vars(crop)}, sort_keys=True
    )
    path = cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npy"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shape = (store.n_cells, crop.size, crop.size, len(channels))

        def fill(partial: Path) -> None:
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
            start = 0
            for cells, crops in store_crops(store, channels, crop):
                out[start : start + len(cells)] = crops
                start += len(cells)
                if progress:
                    progress(len(cells))
            out.flush()
            del out

        replace_atomically(path, fill)  # the cache holds complete crops or none
    return np.load(path, mmap_mode="r")


def channel_means(crops: np.ndarray, rows: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Per-channel mean pixel value over ``rows`` only (the training cells), streamed."""
    rows = np.sort(rows)
    total = np.zeros(crops.shape[-1], np.float64)
    for start in range(0, len(rows), chunk):
        total += crops[rows[start : start + chunk]].sum(axis=(0, 1, 2), dtype=np.float64)
    return total / (len(rows) * crops.shape[1] * crops.shape[2])


def training_dataset(
    crops: np.ndarray,
    rows: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    seed: int,
    augment: Callable | None = None,
):
    """Shuffled (every epoch), batched, optionally augmented (crops, labels); reads from disk."""
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((rows.astype(np.int64), labels.astype(np.int64)))
    data = data.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    data = data.map(lambda r, y: (_read(crops, r), y), num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        data = data.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)


def ordered_dataset(crops: np.ndarray, rows: np.ndarray, batch_size: int, labels: np.ndarray | None = None):
    """``rows`` in order, batched, never augmented (validation and prediction)."""
    import tensorflow as tf

    items = rows.astype(np.int64) if labels is None else (rows.astype(np.int64), labels.astype(np.int64))
    data = tf.data.Dataset.from_tensor_slices(items).batch(batch_size)
    if labels is None:
        data = data.map(lambda r: _read(crops, r), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        data = data.map(lambda r, y: (_read(crops, r), y), num_parallel_calls=tf.data.AUTOTUNE)
    return data.prefetch(tf.data.AUTOTUNE)


def _read(crops: np.ndarray, rows):
    """Crops of a batch of rows as float32, read from the memory map in a tf.data worker."""
    import tensorflow as tf

    images = tf.numpy_function(lambda r: crops[r].astype(np.float32), [rows], tf.float32, stateful=False)
    return tf.ensure_shape(images, (None, *crops.shape[1:]))
