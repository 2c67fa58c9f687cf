"""Raw cells in, classes out: a trained model together with the way it reads a cell.

A classical model measures each cell as its feature table was measured (the same recipe,
engine, channels and outline source, from the model's metadata); a network crops and stretches
each cell as in training; a hybrid does both and feeds the network's pooled features (with the
measurements) to its classifier; a stack asks each member its way and combines their
probabilities. Cells are processed a batch at a time; a store's batches run on local
processes for measurements (the slow part), and through tf.data's prefetch for networks.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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
from ifcml.features.wanted import Wanted
from ifcml.io.store import CellStore
from ifcml.models.classical import class_probabilities
from ifcml.models.composite import COMBINER, embedding_columns, stacked_inputs
from ifcml.models.saved import COMPOSITE, SavedModel

UNCLASSIFIED = -1  # a cell whose outline was not found: not measured, so not classified


class KeepingPredictor(ABC):
    """A predictor that can also return measured columns of each cell (``predict_keeping``)."""

    def predict(self, cells: CellImages) -> tuple[np.ndarray, np.ndarray | None]:
        """Class codes (``UNCLASSIFIED`` where a cell could not be read, e.g. no outline found)
        and probabilities (or None for models without them, e.g. the linear SVM)."""
        codes, probabilities, _ = self.predict_keeping(cells, ())
        return codes, probabilities

    @abstractmethod
    def predict_keeping(
        self, cells: CellImages, keep: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray | None, pd.DataFrame]:
        """Codes, probabilities and the measured columns ``keep`` of each cell (NaN where not measured)."""


class FeaturePredictor(KeepingPredictor):
    """A scikit-learn or XGBoost model on CellProfiler measurements of each cell."""

    def __init__(self, model, classes: list[str], features: list[str], inputs: dict):
        self.model, self.classes, self.features = model, classes, features
        self.channels: list[str] = inputs["channels"]
        self.engine: str = inputs["engine"]
        self.recipe = Recipe.model_validate(inputs["recipe"])
        self.tile_size: int | None = inputs.get("tile_size")
        self.batch_cells = self.recipe.chunk_cells

    def predict_keeping(
        self, cells: CellImages, keep: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray | None, pd.DataFrame]:
        """:meth:`predict`, and the measured columns ``keep`` of each cell (NaN where a column was
        not measured): what the readout's gates read, measured once with the model's features."""
        measured = self.measure(cells, keep)
        outlined = ~measured[FAILED].to_numpy(bool)
        codes, probabilities = classify(
            self.model, measured.reindex(columns=self.features), outlined, self.classes
        )
        return codes, probabilities, measured.reindex(columns=list(keep))

    def measure(self, cells: CellImages, keep: Sequence[str] = ()) -> pd.DataFrame:
        """Each cell measured as the model's feature table was (a row per cell, in order), in
        the model's features and the columns ``keep`` only: families nobody reads are skipped."""
        if self.recipe.segmentation.source == "instrument" and cells.masks is None:
            raise InputError("this model outlines cells with the instrument's masks; the input has none")
        if self.tile_size:
            cells = to_tile_size(cells, self.tile_size)
        wanted = Wanted([*self.features, *keep])
        measured = measure_images(
            cells.images, cells.masks, cells.sizes, self.channels, self.recipe, self.engine, wanted
        )
        return measured.reset_index(drop=True)


def classify(
    model, values: pd.DataFrame, usable: np.ndarray, classes: list[str]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Codes (``UNCLASSIFIED`` where not ``usable``) and probabilities (NaN there; None for
    models without them) of a fitted classical model on named ``values``, as in training."""
    codes = np.full(len(values), UNCLASSIFIED)
    has_probabilities = hasattr(model, "predict_proba")
    probabilities = np.full((len(values), len(classes)), np.nan) if has_probabilities else None
    if usable.any():
        picked = values.astype(np.float64)[usable]  # named, as in fit
        codes[usable] = model.predict(picked)
        if probabilities is not None:
            probabilities[usable] = class_probabilities(model, picked, len(classes))
    return codes, probabilities


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
        probabilities, _ = self.answer(cells, embeddings=False)
        return probabilities.argmax(axis=1), probabilities

    def answer(self, cells: CellImages, embeddings: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities of each cell's crop, and its pooled features when asked."""
        from ifcml.preprocess import preprocess

        crops = preprocess(
            cells.images, cells.sizes[:, 0], cells.sizes[:, 1], cells.cell_ids, self.network.crop.settings()
        )
        result = self.network.predictor(embeddings).predict_on_batch(
            crops.transpose(0, 2, 3, 1).astype(np.float32)
        )
        result = result if embeddings else [result]
        pooled = np.asarray(result[1], np.float64) if embeddings else None
        return np.asarray(result[0], np.float64), pooled


class HybridPredictor(KeepingPredictor):
    """A classical model on a network's pooled features of each cell's crop (and its
    measurements, when the model was trained with them)."""

    def __init__(
        self, network: NetworkPredictor, classifier, features: list[str], measuring: FeaturePredictor | None
    ):
        self.network, self.classifier, self.measuring = network, classifier, measuring
        self.features, self.classes = features, network.classes
        self.channels = list(dict.fromkeys(network.channels + (measuring.channels if measuring else [])))
        self.batch_cells = measuring.batch_cells if measuring else network.batch_cells

    def predict_keeping(self, cells: CellImages, keep: Sequence[str]):
        _, pooled = self.network.answer(part_of(cells, self.channels, self.network.channels), embeddings=True)
        values = pd.DataFrame(pooled, columns=embedding_columns(pooled.shape[1]))
        usable = np.ones(len(cells), bool)
        measured = pd.DataFrame(index=range(len(cells)))
        if self.measuring:
            measured = self.measuring.measure(part_of(cells, self.channels, self.measuring.channels), keep)
            usable = ~measured[FAILED].to_numpy(bool)
            values = pd.concat([values, measured.drop(columns=list(values.columns), errors="ignore")], axis=1)
        codes, probabilities = classify(
            self.classifier, values.reindex(columns=self.features), usable, self.classes
        )
        return codes, probabilities, measured.reindex(columns=list(keep))


class StackedPredictor(KeepingPredictor):
    """A combiner on the class probabilities of its members (each reading cells its own way)."""

    def __init__(self, members: dict[str, Predictor], combiner, features: list[str], classes: list[str]):
        self.members, self.combiner, self.features, self.classes = members, combiner, features, classes
        self.channels = list(dict.fromkeys(c for member in members.values() for c in member.channels))
        self.batch_cells = min(member.batch_cells for member in members.values())

    def predict_keeping(self, cells: CellImages, keep: Sequence[str]):
        answers = []
        for member in self.members.values():
            codes, probabilities = member.predict(part_of(cells, self.channels, member.channels))
            probabilities = probabilities.copy()
            probabilities[codes == UNCLASSIFIED] = np.nan  # a member that could not read the cell
            answers.append(probabilities)
        values = pd.DataFrame(stacked_inputs(answers, list(self.members), self.classes))[self.features]
        usable = ~values.isna().any(axis=1).to_numpy()
        codes, probabilities = classify(self.combiner, values, usable, self.classes)
        return codes, probabilities, pd.DataFrame(np.nan, index=range(len(cells)), columns=list(keep))


def part_of(cells: CellImages, channels: list[str], wanted: list[str]) -> CellImages:
    """``cells`` (in ``channels``' order) with only the channels a part reads, in its order."""
    return cells.pick([channels.index(c) for c in wanted])


Predictor = FeaturePredictor | NetworkPredictor | HybridPredictor | StackedPredictor


@lru_cache(maxsize=2)
def load_predictor(path: str) -> Predictor:
    """The model logged by a grid or ``ifcml train`` at ``path`` (a local folder), read by
    :func:`~ifcml.models.saved.load_trained` (formats that run no code, or an error)."""
    from ifcml.models.saved import load_trained

    saved = load_trained(path)
    if not saved.metadata.get("inputs"):
        raise InputError(
            f"{path}: the model does not say how it reads raw cells (its feature table predates "
            "this ifcml; measure and train again)"
        )
    return predictor_of(saved)


def predictor_of(saved: SavedModel) -> Predictor:
    """The predictor of a loaded model, or of a composite's loaded parts."""
    meta = saved.metadata
    if saved.flavor == "keras":
        from ifcml.models.inference import network_from

        return NetworkPredictor(network_from(saved))
    if saved.flavor != COMPOSITE:
        return FeaturePredictor(saved.model, list(meta["classes"]), list(meta["features"]), meta["inputs"])
    parts = {name: SavedModel(p.flavor, p.model, p.metadata) for name, p in saved.model.parts.items()}
    if saved.model.kind == "hybrid":
        classifier = parts["classifier"]
        inputs = classifier.metadata.get("inputs")
        features = list(classifier.metadata["features"])
        measuring = (
            FeaturePredictor(classifier.model, list(meta["classes"]), features, inputs) if inputs else None
        )
        return HybridPredictor(predictor_of(parts["network"]), classifier.model, features, measuring)
    combiner = parts.pop(COMBINER)
    members = {name: predictor_of(part) for name, part in parts.items()}
    return StackedPredictor(
        members, combiner.model, list(combiner.metadata["features"]), list(meta["classes"])
    )


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
