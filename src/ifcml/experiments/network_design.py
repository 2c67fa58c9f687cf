"""The deep branch's design: a network on each cell's crop, trained per fold with the paper's recipe.

Folds come from the same splits over the same cells table as the classical branch's. Each fold
trains on its training rows only (balancing, validation split and channel means included, see
:func:`ifcml.models.deep.train_network`); held-out crops are only predicted. Every training
checkpoints into its own folder, named by a fingerprint of everything it depends on, so a
killed evaluation resumes where it stopped and finished folds are not trained again.
Keras is imported when a network trains, not when this module is read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ifcml.cells import CELL, INSTANCE, LABEL, is_store, usable_cells, with_metadata_names
from ifcml.errors import InputError
from ifcml.experiments.design import Design, Relabel, chosen_channels
from ifcml.experiments.results import Trained
from ifcml.features.recipe import Pruning
from ifcml.models.network_spec import NetworkSpec
from ifcml.progress import SILENT, Progress


@dataclass(kw_only=True)
class NetworkDesign(Design):
    spec: NetworkSpec
    crops: np.ndarray  # every store cell's crop, by cell id
    checkpoint_root: Path  # where this data's trainings checkpoint

    branch = "deep"
    reads = "store"

    @classmethod
    def read(
        cls,
        data: Path,
        spec: NetworkSpec,
        channels: list[str] | None,
        relabel: Relabel | None,
        pruning: Pruning,
        store: Path | None = None,
    ) -> NetworkDesign:
        """The store at ``data``, its usable cells and their crops (cached across runs)."""
        from ifcml.io.store import CellStore
        from ifcml.models.inputs import cache_dir, cached_crops

        if not is_store(data):
            raise InputError(
                f"{data}: model {spec.name!r} is a network and reads a CellStore (from `ifcml ingest`), "
                "not a feature table"
            )
        cells = CellStore(data)
        chosen = chosen_channels(data, cells.channels, channels)
        table = with_metadata_names(cells.cells)
        table = usable_cells(relabel(table) if relabel else table)
        digest = cells.meta["images_sha256"]
        key = json.dumps([spec.model_dump(mode="json"), chosen, digest, table[LABEL].tolist()])
        recipe = spec.training
        params = {
            "network": spec.network,
            "crop_size": spec.crop.size,
            "store": str(data),
            **{k: v for k, v in recipe.model_dump().items() if k != "augmentation"},
            **{f"augment_{k}": v for k, v in recipe.augmentation.model_dump().items()},
        }
        checkpoints = cache_dir().parent / "checkpoints" / hashlib.sha256(key.encode()).hexdigest()[:20]
        return cls(
            spec=spec, table=table, channels=chosen, source=str(data.resolve()), digest=digest, params=params,
            inputs={"kind": "crops", "channels": chosen, "crop": spec.crop.model_dump(mode="json")},
            crops=cached_crops(cells, chosen, spec.crop.settings()),
            checkpoint_root=checkpoints,
        )  # fmt: skip

    @property
    def checkpoints(self) -> Path:
        """This design's own checkpoint folder: a learning curve's designs share the data, and
        one finishing (which deletes its folder) must not delete another's trainings."""
        return self.checkpoint_root / f"cells_{self.train_size}"

    def train(
        self, rows: np.ndarray, seed: int, max_evals: int | None = None, progress: Progress = SILENT
    ) -> Trained:
        """A network trained on ``rows`` of the cells table (checkpointed in its own folder)."""
        from ifcml.models.deep import TrainingCells, train_network

        positions = self.table[CELL].to_numpy()[rows]  # cell ids = store rows: where the crops are
        cells = TrainingCells(
            positions, self.table[LABEL].to_numpy()[rows], self.table[INSTANCE].to_numpy()[rows]
        )
        folder = self.checkpoints / self._fingerprint(seed, positions)
        trained = train_network(self.spec, self.crops, cells, self.classes, seed, folder, progress)
        details = {
            "epochs": len(trained.history.get("loss", [])),
            "best_val_loss": float(np.min(trained.history["val_loss"])) if trained.history else float("nan"),
            **{f"mean_{name}": float(m) for name, m in zip(self.channels, trained.means, strict=True)},
        }
        return Trained(trained.model, self.channels, {}, [], trained.rows, trained.history, details)

    def predict(self, trained: Trained, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from ifcml.models.deep import predict_proba

        cells = self.table[CELL].to_numpy()[rows]
        probabilities = predict_proba(trained.model, self.crops, cells, self.spec.inference_batch)
        return probabilities.argmax(axis=1), probabilities

    @property
    def flavor(self) -> str:
        return "keras"

    def example(self, trained: Trained) -> np.ndarray:
        return np.zeros((2, self.spec.crop.size, self.spec.crop.size, len(self.channels)), np.float32)

    def figures(self, final: Trained, seed: int) -> dict:
        """The network's embedding of the cells it was fitted on (a view of what it learnt, not a
        held-out result)."""
        from ifcml.models.embed import embedding_figure

        title = f"{self.spec.name}: t-SNE of the final model's pooled features (cells it was fitted on)"
        cells, labels = self.table[CELL].to_numpy(), self.table[LABEL].to_numpy()
        return {"embedding_tsne.png": embedding_figure(final.model, self.crops, cells, labels, title, seed)}

    def finished(self) -> None:
        shutil.rmtree(self.checkpoints, ignore_errors=True)

    def _fingerprint(self, seed: int, rows: np.ndarray) -> str:
        """What a training depends on: spec, data (the store's hash), channels, classes, rows, seed."""
        key = json.dumps(
            {
                "spec": self.spec.model_dump(mode="json"),
                "channels": self.channels,
                "classes": self.classes,
                "seed": seed,
                "rows": hashlib.sha256(np.sort(rows).astype(np.int64).tobytes()).hexdigest(),
                "data": self.digest,
            },
            sort_keys=True,
        )
        return hashlib.sha256(key.encode()).hexdigest()[:20]
