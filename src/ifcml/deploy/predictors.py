"""Raw cells in, classes out: a trained model together with the way it reads a cell.

A classical model measures each cell as its feature table was measured (the same recipe,
engine, channels and outline source, from the model's metadata); a network crops and stretches
each cell as in training. Cells are processed a batch at a time; a store's batches run on local
processes for measurements (the slow part), and through tf.data's prefetch for networks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import as_completed
from functools import lru_cache

import numpy as np
import pandas as pd

from ifcml.cells import FAILED, METADATA
from ifcml.deploy.cells import CellImages, from_store
from ifcml.errors import InputError
from ifcml.executors import executor
from ifcml.features.recipe import Recipe
from ifcml.features.table import measure_images
from ifcml.io.store import CellStore

UNCLASSIFIED = -1  # a cell whose outline was not found: not measured, so not classified


class FeaturePredictor:
    """A scikit-learn or XGBoost model on CellProfiler measurements of each cell."""

    def __init__(self, model, classes: list[str], features: list[str], inputs: dict):
        self.model, self.classes, self.features = model, classes, features
        self.channels: list[str] = inputs["channels"]
        self.engine: str = inputs["engine"]
        self.recipe = Recipe.model_validate(inputs["recipe"])
        self.tile_size: int | None = inputs.get("tile_size")
        self.batch_cells = self.recipe.chunk_cells

    def predict(self, cells: CellImages) -> tuple[np.ndarray, np.ndarray | None]:
        """Class codes (``UNCLASSIFIED`` where no outline was found) and probabilities (or None
        for models without them, e.g. the linear SVM)."""
        codes, probabilities, _ = self.predict_keeping(cells, ())
        return codes, probabilities

    def predict_keeping(
        self, cells: CellImages, keep: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray | None, pd.DataFrame]:
        """:meth:`predict`, and the measured columns ``keep`` of each cell (NaN where a column was
        not measured): what the readout's gates read, measured once with the model's features."""
        if self.recipe.segmentation.source == "instrument" and cells.masks is None:
            raise InputError("this model outlines cells with the instrument's masks; the input has none")
        if self.tile_size:
            cells = to_tile_size(cells, self.tile_size)
        measured = measure_images(
            cells.images, cells.masks, cells.sizes, self.channels, self.recipe, self.engine
        )
        outlined = ~measured[FAILED].to_numpy(bool)
        values = measured.reindex(columns=self.features).astype(np.float64)[outlined]  # named, as in fit
        codes = np.full(len(cells), UNCLASSIFIED)
        has_probabilities = hasattr(self.model, "predict_proba")
        probabilities = np.full((len(cells), len(self.classes)), np.nan) if has_probabilities else None
        if outlined.any():
            codes[outlined] = self.model.predict(values)
            if probabilities is not None:
                probabilities[outlined] = self.model.predict_proba(values)
        return codes, probabilities, measured.reindex(columns=list(keep)).reset_index(drop=True)


def to_tile_size(cells: CellImages, size: int) -> CellImages:
    """Cells centre-cropped, or padded with noise like their own background, to ``size`` square:
    a montage stitched with larger (or smaller) tiles gives the training's cell images back."""
    from ifcml.preprocess import CropSettings, crop_or_pad

    heights, widths = cells.sizes[:, 0], cells.sizes[:, 1]
    tiles = crop_or_pad(cells.images, heights, widths, cells.cell_ids, CropSettings(size))
    images = np.rint(tiles).clip(0, np.iinfo(np.uint16).max).astype(np.uint16)
    return CellImages(images, np.full((len(cells), 2), size), None, cells.cell_ids)


class NetworkPredictor:
    """A Keras network on each cell's crop."""

    def __init__(self, network):
        self.network = network
        self.classes, self.channels = network.classes, network.channels
        self.batch_cells = 512

    def predict(self, cells: CellImages) -> tuple[np.ndarray, np.ndarray]:
        from ifcml.preprocess import preprocess

        crops = preprocess(
            cells.images, cells.sizes[:, 0], cells.sizes[:, 1], cells.cell_ids, self.network.crop.settings()
        )
        probabilities = np.asarray(
            self.network.model.predict_on_batch(crops.transpose(0, 2, 3, 1).astype(np.float32)), np.float64
        )
        return probabilities.argmax(axis=1), probabilities


Predictor = FeaturePredictor | NetworkPredictor


@lru_cache(maxsize=2)
def load_predictor(path: str) -> Predictor:
    """The model logged by a grid or ``ifcml train`` at ``path`` (a local folder), read by
    :func:`~ifcml.models.saved.load_trained` (formats that run no code, or an error)."""
    from ifcml.models.saved import load_trained

    saved = load_trained(path)
    meta = saved.metadata
    if not meta.get("inputs"):
        raise InputError(
            f"{path}: the model does not say how it reads raw cells (its feature table predates "
            "this ifcml; measure and train again)"
        )
    if saved.flavor == "keras":
        from ifcml.models.inference import network_from

        return NetworkPredictor(network_from(saved))
    return FeaturePredictor(saved.model, list(meta["classes"]), list(meta["features"]), meta["inputs"])


def predict_cells(predictor: Predictor, cells: CellImages) -> pd.DataFrame:
    """``predicted`` (class name, empty when unclassified) and ``probability_<class>`` per cell."""
    parts = [
        predictor.predict(cells.rows(start, start + predictor.batch_cells))
        for start in range(0, len(cells), predictor.batch_cells)
    ]
    return _frame(parts, predictor.classes)


def predict_store(
    predictor: Predictor,
    model_path: str,
    store: CellStore,
    workers: int = 1,
    on_cells: Callable[[int], None] | None = None,
    keep: Sequence[str] = (),
) -> pd.DataFrame:
    """Every cell of ``store``: its store columns, then :func:`predict_cells`' columns, then the
    measured columns ``keep`` (a classical model's measurements only)."""
    store.channel_indices(predictor.channels)  # a missing channel fails here, naming the store
    if isinstance(predictor, NetworkPredictor):
        if keep:
            raise InputError("a network measures nothing: no measured column to keep")
        from ifcml.models.inference import stream_store_batches

        parts = []
        for rows, probabilities, _ in stream_store_batches(predictor.network, store):
            parts.append((probabilities.argmax(axis=1), probabilities, None))
            if on_cells:
                on_cells(len(rows))
    else:
        parts = _measured_parts(predictor, model_path, store, workers, on_cells, keep)
    table = store.cells[[c for c in METADATA if c in store.cells]].reset_index(drop=True)
    predicted = _frame([part[:2] for part in parts], predictor.classes)
    kept = [pd.concat([part[2] for part in parts], ignore_index=True)] if keep else []
    return pd.concat([table, predicted, *kept], axis=1)


def _measured_parts(
    predictor: FeaturePredictor, model_path: str, store: CellStore, workers: int, on_cells, keep
):
    step = predictor.batch_cells
    spans = [(a, min(a + step, store.n_cells)) for a in range(0, store.n_cells, step)]
    results = {}
    path = str(store.path)
    with executor(workers, None, jobs=len(spans)) as pool:
        if pool is None:
            done = ((span, predict_store_span(model_path, path, *span, keep)) for span in spans)
        else:
            futures = {pool.submit(predict_store_span, model_path, path, *s, keep): s for s in spans}
            done = ((futures[f], f.result()) for f in as_completed(futures))
        for span, result in done:
            results[span] = result
            if on_cells:
                on_cells(span[1] - span[0])
    return [results[span] for span in spans]


def predict_store_span(model_path: str, store_path: str, start: int, stop: int, keep: Sequence[str] = ()):
    """Codes, probabilities and the measured columns ``keep`` of store cells ``start:stop`` (runs
    in a worker process)."""
    predictor = load_predictor(model_path)
    return predictor.predict_keeping(from_store(_open(store_path), predictor.channels, start, stop), keep)


@lru_cache(maxsize=2)
def _open(path: str) -> CellStore:
    return CellStore(path)


def _frame(parts: list[tuple[np.ndarray, np.ndarray | None]], classes: list[str]) -> pd.DataFrame:
    codes = np.concatenate([codes for codes, _ in parts]) if parts else np.zeros(0, int)
    names = np.asarray([*classes, None], dtype=object)  # code -1 (UNCLASSIFIED) picks None
    table = pd.DataFrame({"predicted": names[codes]})
    if parts and parts[0][1] is not None:
        probabilities = np.concatenate([p for _, p in parts])
        for k, name in enumerate(classes):
            table[f"probability_{name}"] = probabilities[:, k]
    return table
