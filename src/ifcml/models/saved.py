"""Trained model folders are data, not code: ifcml reads them itself and refuses anything else.

A grid or ``ifcml train`` saves each final model as an MLflow model folder in one of three
formats, none of which runs code when it is read: scikit-learn through skops, XGBoost's JSON,
Keras' ``.keras`` (read in safe mode); a hybrid's or a stack's final model is a folder of such
folders (``parts/<name>``, flavor ``ifcml_composite``), each part read the same way. The
folders are read here and not by MLflow's loaders, because those do what the folder's
``MLmodel`` says: unpickle a file, import a class it names, trust the skops types it lists.
A folder from a colleague's machine or a download would then decide what runs. Here the
formats, the class and the trusted types are fixed in ifcml's source, and a folder that asks
for anything else is refused before any of it is deserialised. Each flavor is written
(:func:`log_trained`) and read (:func:`load_trained`) here, side by side; a model family names
its flavor.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ifcml.errors import InputError

# Types skops must load besides scikit-learn's estimators: reviewed, nothing that runs code.
SKOPS_TRUSTED = ["numpy.dtype", "sklearn.tree._tree.Tree"]
XGBOOST_CLASS = "xgboost.sklearn.XGBClassifier"
COMPOSITE = "ifcml_composite"  # a folder of parts, each a model folder of one of the others
FLAVORS = ("sklearn", "xgboost", "keras", COMPOSITE)


@dataclass
class SavedModel:
    flavor: str  # one of FLAVORS
    model: Any
    metadata: dict  # the MLmodel's metadata: classes, features, inputs


def read_mlmodel(folder: Path | str) -> dict:
    """The folder's ``MLmodel`` file, read as plain YAML (no Python objects)."""
    path = Path(folder) / "MLmodel"
    if not path.is_file():
        raise InputError(f"{folder}: not an MLflow model folder (no MLmodel file)")
    try:
        content = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(content, dict) or not isinstance(content.get("flavors"), dict):
        raise InputError(f"{path}: no 'flavors' mapping; not an MLflow model file")
    return content


def load_trained(folder: Path | str) -> SavedModel:
    """The trained model in ``folder``, or an error naming what in it is not ifcml's format."""
    folder = Path(folder)
    mlmodel = read_mlmodel(folder)
    flavors = [f for f in FLAVORS if f in mlmodel["flavors"]]
    if len(flavors) != 1:
        raise InputError(
            f"{folder / 'MLmodel'}: flavors {', '.join(mlmodel['flavors'])}; ifcml reads exactly one of "
            f"{', '.join(FLAVORS)}"
        )
    flavor = flavors[0]
    settings = mlmodel["flavors"][flavor] or {}
    if settings.get("code"):
        raise InputError(f"{folder / 'MLmodel'}: the model ships code ({settings['code']}); ifcml refuses it")
    load = {
        "sklearn": _load_skops,
        "xgboost": _load_xgboost,
        "keras": _load_keras,
        COMPOSITE: _load_composite,
    }
    return SavedModel(flavor, load[flavor](folder, settings), mlmodel.get("metadata") or {})


def log_trained(flavor: str, model: Any, example: Any, metadata: dict) -> Any:
    """Log ``model`` as the active run's MLflow model ``model`` in ``flavor``'s safe format,
    with the signature of its output on ``example`` (an input example too, for tables)."""
    import mlflow
    from mlflow.models import infer_signature

    if flavor == COMPOSITE:  # parts saved by their own flavors; the input is cells, not one array
        return mlflow.models.Model.log(
            None, _CompositeWriter, name="model", metadata=metadata, composite=model
        )
    if flavor == "keras":  # inputs are uint8 crops as float32; no example (it would be images)
        import keras

        signature = infer_signature(example, keras.ops.convert_to_numpy(model(example)))
        return mlflow.keras.log_model(
            model, name="model", signature=signature, metadata=metadata, save_exported_model=False
        )
    with warnings.catch_warnings():  # outputs are class codes (metadata "classes" names them), never missing
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer column")
        signature = infer_signature(example, model.predict(example))
        common = {"name": "model", "signature": signature, "input_example": example, "metadata": metadata}
        if flavor == "xgboost":
            return mlflow.xgboost.log_model(model, model_format="json", **common)
        return mlflow.sklearn.log_model(
            model, serialization_format="skops", skops_trusted_types=SKOPS_TRUSTED, **common
        )


class _CompositeWriter:
    """What ``mlflow.models.Model.log`` calls to save a composite: each part into
    ``parts/<name>`` in its own flavor's format, then the MLmodel that lists them."""

    __name__ = COMPOSITE

    @staticmethod
    def save_model(path: str, mlflow_model, composite) -> None:
        folder = Path(path)
        folder.mkdir(parents=True)
        for name, part in composite.parts.items():
            _save_part(folder / "parts" / name, part)
        parts = {name: f"parts/{name}" for name in composite.parts}
        mlflow_model.add_flavor(COMPOSITE, kind=composite.kind, parts=parts)
        mlflow_model.save(str(folder / "MLmodel"))


def _save_part(path: Path, part) -> None:
    """One part in its flavor's format, with the signature of its output on its example."""
    import mlflow
    from mlflow.models import infer_signature

    if part.flavor == "keras":
        import keras

        output = keras.ops.convert_to_numpy(part.model(part.example))
    else:
        output = part.model.predict(part.example)
    with warnings.catch_warnings():  # outputs are class codes (metadata "classes" names them), never missing
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer column")
        signature = infer_signature(part.example, output)
    common = {"path": str(path), "metadata": part.metadata, "signature": signature}
    if part.flavor == "keras":
        mlflow.keras.save_model(part.model, save_exported_model=False, **common)
    elif part.flavor == "xgboost":
        mlflow.xgboost.save_model(part.model, model_format="json", **common)
    else:
        mlflow.sklearn.save_model(
            part.model, serialization_format="skops", skops_trusted_types=SKOPS_TRUSTED, **common
        )


def _load_composite(folder: Path, settings: dict) -> Any:
    from ifcml.models.composite import Composite, Part

    parts = settings.get("parts")
    if settings.get("kind") not in ("hybrid", "stacked") or not isinstance(parts, dict) or not parts:
        raise InputError(f"{folder / 'MLmodel'}: a composite model without a kind and its parts")
    loaded = {}
    for name, relative in parts.items():
        where = (folder / str(relative)).resolve()
        if not where.is_relative_to(folder.resolve()) or not where.is_dir():
            raise InputError(f"{folder / 'MLmodel'}: part {name!r} at {relative!r} is not a folder inside it")
        if COMPOSITE in read_mlmodel(where)["flavors"]:  # refused before anything in it is read
            raise InputError(f"{where}: a composite inside a composite; ifcml saves none")
        part = load_trained(where)
        loaded[name] = Part(part.flavor, part.model, part.metadata)
    return Composite(settings["kind"], loaded)


def _load_skops(folder: Path, settings: dict) -> Any:
    import skops.io

    if settings.get("serialization_format") != "skops":
        raise InputError(
            f"{folder / 'MLmodel'}: scikit-learn model serialised as "
            f"{settings.get('serialization_format')!r}; ifcml reads only skops (a pickle runs code)"
        )
    path = _inside(folder, settings.get("pickled_model"), ".skops")
    try:
        untrusted = [t for t in skops.io.get_untrusted_types(file=path) if t not in SKOPS_TRUSTED]
    except Exception as exc:  # skops raises several kinds for a damaged file
        raise InputError(f"{path}: not a readable skops file ({exc})") from exc
    if untrusted:
        raise InputError(f"{path}: holds type(s) ifcml does not trust: {', '.join(untrusted)}")
    return skops.io.load(path, trusted=SKOPS_TRUSTED)


def _load_xgboost(folder: Path, settings: dict) -> Any:
    from xgboost import XGBClassifier
    from xgboost.core import XGBoostError

    if settings.get("model_class") != XGBOOST_CLASS or settings.get("model_format") != "json":
        raise InputError(
            f"{folder / 'MLmodel'}: XGBoost model of class {settings.get('model_class')!r} in format "
            f"{settings.get('model_format')!r}; ifcml reads only {XGBOOST_CLASS} in JSON"
        )
    path = _inside(folder, settings.get("data"), ".json")
    model = XGBClassifier()
    try:
        model.load_model(path)
    except XGBoostError as exc:
        raise InputError(f"{path}: not a readable XGBoost JSON model ({str(exc).splitlines()[0]})") from exc
    return model


def _load_keras(folder: Path, settings: dict) -> Any:
    from ifcml.models.networks import load_network

    if settings.get("save_exported_model"):
        raise InputError(f"{folder / 'MLmodel'}: a TensorFlow SavedModel; ifcml reads only .keras files")
    path = _inside(folder, f"{settings.get('data') or 'data'}/model.keras", ".keras")
    try:
        return load_network(path)
    except Exception as exc:  # Keras raises several kinds; safe mode refuses lambdas and custom code
        raise InputError(f"{path}: not a .keras model ifcml can load safely ({exc})") from exc


def _inside(folder: Path, name: str | None, suffix: str) -> Path:
    """``folder/name``, refused unless it is a ``suffix`` file inside the folder."""
    path = (folder / str(name)).resolve()
    if not name or path.suffix != suffix or not path.is_relative_to(folder.resolve()) or not path.is_file():
        raise InputError(
            f"{folder / 'MLmodel'}: names model file {name!r}; expected a {suffix} file in {folder}"
        )
    return path
