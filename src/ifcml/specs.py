"""Reading the YAML files users edit (feature recipes, model specs, experiment grids).

One place turns a YAML file into a validated pydantic model, so every kind of spec reports a
problem the same way: the file, the key's path, what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from ifcml.errors import InputError

Spec = TypeVar("Spec", bound=BaseModel)


def load_spec(path: Path, model: type[Spec], what: str) -> Spec:
    """``model`` validated from the YAML file ``path`` (``what`` names it in messages)."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise InputError(f"{path}: cannot read the {what} ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not valid YAML ({exc})") from exc
    return validated(model, data, str(path))


def validated(model: type[Spec], data: object, where: str) -> Spec:
    """``model`` validated from ``data``; an error names ``where``, the key's path and what was expected."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{where}: {describe(exc)}") from exc


def describe(error: ValidationError) -> str:
    """The first problem as ``key.path: what was expected``."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    return f"{key}: {first['msg']}"
