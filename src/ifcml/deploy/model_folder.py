"""An exported model folder, checked before anything in it is loaded.

``ifcml export`` writes an MLflow "model from code" whose code is ifcml's own
``deploy/model_code.py`` and whose one artifact is the trained model (read by
:mod:`ifcml.models.saved`). ``ifcml predict`` does not hand the folder to MLflow, which would run
the folder's copy of that code: it checks that the copy is byte for byte the installed one and
that MLflow is asked to do nothing else, then builds the model from the installed code
(:func:`ifcml.deploy.pyfunc.open_exported`).
"""

from __future__ import annotations

from pathlib import Path

from ifcml.errors import InputError
from ifcml.models.saved import read_mlmodel

MODEL_CODE = Path(__file__).with_name("model_code.py")
MODEL_ARTIFACT = "model"  # the trained model inside the exported one
ARTIFACT_PATH = f"artifacts/{MODEL_ARTIFACT}"
CODE_LOADER = "mlflow.pyfunc.loaders.code_model"


def check_exported(folder: Path | str) -> dict:
    """The exported model's metadata, or an error naming the file that is not ifcml's."""
    folder = Path(folder)
    mlmodel = read_mlmodel(folder)
    where = folder / "MLmodel"
    if set(mlmodel["flavors"]) != {"python_function"}:
        raise InputError(f"{where}: flavors {', '.join(mlmodel['flavors'])}; not a model from `ifcml export`")
    settings = mlmodel["flavors"]["python_function"] or {}
    if settings.get("loader_module") != CODE_LOADER or settings.get("code") or "python_model" in settings:
        loader = settings.get("loader_module")
        raise InputError(
            f"{where}: loads through {loader!r}, or ships code or a pickle; ifcml export writes neither"
        )
    code_name = Path(str(settings.get("model_code_path", ""))).name
    if code_name != MODEL_CODE.name:
        raise InputError(f"{where}: names model code {code_name!r}; ifcml's is {MODEL_CODE.name}")
    code = folder / MODEL_CODE.name
    if not code.is_file() or code.read_bytes() != MODEL_CODE.read_bytes():
        raise InputError(f"{code}: differs from the installed ifcml's {MODEL_CODE.name}; refusing to run it")
    artifacts = settings.get("artifacts") or {}
    if set(artifacts) != {MODEL_ARTIFACT} or (artifacts[MODEL_ARTIFACT] or {}).get("path") != ARTIFACT_PATH:
        raise InputError(
            f"{where}: artifacts {artifacts}; expected only {MODEL_ARTIFACT!r} at {ARTIFACT_PATH}"
        )
    meta = mlmodel.get("metadata") or {}
    if "inputs" not in meta or "classes" not in meta:
        raise InputError(f"{folder}: an MLflow model, but not one written by `ifcml export`")
    return meta


def trained_model_path(folder: Path | str) -> Path:
    """Where the exported folder keeps its trained model."""
    return Path(folder) / ARTIFACT_PATH
