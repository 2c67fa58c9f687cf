"""Training a network on some cells with the paper's recipe, resumable, and predicting in batches.

The training cells are balanced (per-instance undersampling), split 80/20 (stratified) into
fit and validation cells; the per-channel means come from the fit cells alone and are built into
the model. :class:`PaperSchedule` does the recipe's learning-rate plateau, early stopping and
best-weights keeping in one callback whose state is written after every epoch, together with the
whole model (optimizer included), so a killed training resumes at its last finished epoch, and a
finished one is not trained again. Keras' own ReduceLROnPlateau / EarlyStopping /
BackupAndRestore cannot be combined that way: their counters are not part of any checkpoint.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_class_weight

from ifcml.cells import undersample_per_instance
from ifcml.models import inputs
from ifcml.models.network_spec import NetworkSpec, TrainingRecipe
from ifcml.models.networks import augmenter, build_network, load_network
from ifcml.outputs import replace_atomically
from ifcml.progress import SILENT, Progress

STATE, LAST, BEST = "state.json", "last.keras", "best.weights.h5"


@dataclass(frozen=True)
class TrainingCells:
    """The cells a network learns from: crop rows (store cell ids), their labels and instances."""

    rows: np.ndarray
    labels: np.ndarray
    instances: np.ndarray


@dataclass
class TrainedNetwork:
    model: keras.Model
    history: dict[str, list[float]]  # per epoch: loss, accuracy, val_loss, val_accuracy, learning_rate
    means: np.ndarray
    rows: np.ndarray  # the fit rows (balanced, validation excluded): where the means come from


class EpochReport(keras.callbacks.Callback):
    """Tells ``progress`` of each finished epoch (after :class:`PaperSchedule` has recorded it)."""

    def __init__(self, progress: Progress):
        super().__init__()
        self.progress = progress

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {}) | {"learning_rate": float(self.model.optimizer.learning_rate.numpy())}
        self.progress.epoch(epoch, {name: float(value) for name, value in logs.items()})


class PaperSchedule(keras.callbacks.Callback):
    """Plateau (lr x factor), early stop and best weights on val_loss; checkpoints every epoch."""

    def __init__(self, recipe: TrainingRecipe, folder: Path, fingerprint: str):
        super().__init__()
        self.recipe, self.folder, self.fingerprint = recipe, folder, fingerprint
        self.state = {
            "fingerprint": fingerprint,
            "epochs_done": 0,
            "best_val_loss": float("inf"),
            "since_best": 0,
            "since_plateau": 0,
            "learning_rate": recipe.learning_rate,
            "finished": False,
            "history": {},
        }

    def restore(self, model: keras.Model) -> keras.Model:
        """The model to train: the checkpointed one if this same training was under way."""
        path = self.folder / STATE
        if not path.exists():
            return model
        state = json.loads(path.read_text())
        if state.get("fingerprint") != self.fingerprint:  # another training's leftovers
            shutil.rmtree(self.folder)
            return model
        self.state = state
        model = load_network(self.folder / LAST, compile=True)
        if state["finished"]:
            model.load_weights(self.folder / BEST)
        return model

    @property
    def finished(self) -> bool:
        return bool(self.state["finished"])

    def on_train_begin(self, logs=None):
        self.folder.mkdir(parents=True, exist_ok=True)
        self.model.optimizer.learning_rate.assign(self.state["learning_rate"])

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {}) | {"learning_rate": float(self.model.optimizer.learning_rate.numpy())}
        for name, value in logs.items():
            self.state["history"].setdefault(name, []).append(float(value))
        state = self.state
        state["epochs_done"] = epoch + 1
        if logs["val_loss"] < state["best_val_loss"]:
            state |= {"best_val_loss": float(logs["val_loss"]), "since_best": 0, "since_plateau": 0}
            replace_atomically(self.folder / BEST, self.model.save_weights)
        else:
            state["since_best"] += 1
            state["since_plateau"] += 1
            if state["since_plateau"] >= self.recipe.plateau_patience:
                self.model.optimizer.learning_rate.assign(logs["learning_rate"] * self.recipe.plateau_factor)
                state["since_plateau"] = 0
            if state["since_best"] >= self.recipe.early_stop_patience:
                self.model.stop_training = True
        state["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())
        self._checkpoint()

    def on_train_end(self, logs=None):
        self.model.load_weights(self.folder / BEST)
        self.state["finished"] = True
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Model first, then the state that points at it: a kill between the two loses one epoch."""
        replace_atomically(self.folder / LAST, self.model.save)
        replace_atomically(self.folder / STATE, lambda tmp: tmp.write_text(json.dumps(self.state)))


def balanced_split(
    labels: np.ndarray, instances: np.ndarray, recipe: TrainingRecipe, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) positions into ``labels``: balanced per instance if asked, then a
    stratified split."""
    kept = np.arange(len(labels))
    if recipe.balance == "undersample":
        frame = pd.DataFrame({"instance": instances, "label": labels})
        kept = undersample_per_instance(frame, kept, seed)
    stratify = labels[kept] if np.unique(labels[kept], return_counts=True)[1].min() >= 2 else None
    fit, validation = train_test_split(
        kept, test_size=recipe.validation_fraction, random_state=seed, stratify=stratify
    )
    return np.sort(fit), np.sort(validation)


def train_network(
    spec: NetworkSpec,
    crops: np.ndarray,
    cells: TrainingCells,
    classes: list[str],
    seed: int,
    checkpoints: Path,
    progress: Progress = SILENT,
) -> TrainedNetwork:
    """Train on the crops of ``cells`` and nothing else, checkpointing into ``checkpoints`` (a
    folder named by what the training depends on); ``progress.epoch`` hears of each epoch."""
    recipe = spec.training
    keras.utils.set_random_seed(seed)
    labels = np.asarray(cells.labels)
    fit, validation = balanced_split(labels, np.asarray(cells.instances), recipe, seed)
    codes = pd.Categorical(labels, categories=classes).codes.astype(np.int64)
    fit_rows, validation_rows = cells.rows[fit], cells.rows[validation]
    means = inputs.channel_means(crops, fit_rows)
    model = build_network(spec, crops.shape[-1], len(classes), means)
    model.compile(
        keras.optimizers.Adam(recipe.learning_rate), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    schedule = PaperSchedule(recipe, checkpoints, checkpoints.name)
    model = schedule.restore(model)
    if not schedule.finished:
        weights = None
        if recipe.balance == "class_weight":
            present = np.unique(codes[fit])
            values = compute_class_weight("balanced", classes=present, y=codes[fit])
            weights = dict(zip(present.tolist(), values.tolist(), strict=True))
        model.fit(
            inputs.training_dataset(
                crops,
                fit_rows,
                codes[fit],
                recipe.batch_size,
                seed,
                augmenter(recipe.augmentation, seed),
            ),
            validation_data=inputs.ordered_dataset(
                crops, validation_rows, recipe.batch_size, codes[validation]
            ),
            epochs=recipe.max_epochs,
            initial_epoch=schedule.state["epochs_done"],
            callbacks=[EpochReport(progress), schedule],
            class_weight=weights,
            shuffle=False,  # the dataset reshuffles itself every epoch
            verbose=0,
        )
    return TrainedNetwork(model, schedule.state["history"], means, fit_rows)


def predict_proba(model: keras.Model, crops: np.ndarray, rows: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities (len(rows), K) for cached crops, batched, read from disk as it goes."""
    return model.predict(inputs.ordered_dataset(crops, rows, batch_size), verbose=0).astype(np.float64)
