"""Model specs by name or path: ``models/<name>.yaml`` is of a kind told by its keys.

A spec with ``estimator:`` is a classical model (:class:`~ifcml.models.classical.ModelSpec`),
one with ``network:`` a network (:class:`~ifcml.models.network_spec.NetworkSpec`), one with
``embedding_of:`` a hybrid and one with ``stack:`` a stack
(:mod:`ifcml.models.composite_spec`), whose parts are named like any spec and read here.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ifcml.errors import InputError
from ifcml.models.classical import ModelSpec
from ifcml.models.composite_spec import HybridSpec, StackedSpec
from ifcml.models.network_spec import NetworkSpec
from ifcml.specs import load_spec, validated

MODELS_DIR = Path(__file__).resolve().parents[3] / "models"
AnySpec = ModelSpec | NetworkSpec | HybridSpec | StackedSpec
KINDS = {"network": NetworkSpec, "embedding_of": HybridSpec, "stack": StackedSpec}  # else ModelSpec
PARTS = {"embedding_of": NetworkSpec, "classifier": ModelSpec, "stack": None, "combiner": ModelSpec}


def known_models() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.yaml"))


def spec_path(name_or_path: str | Path) -> Path:
    """``models/<name>.yaml`` for a bare name, else the path itself; an error if missing."""
    path = Path(name_or_path)
    if not path.suffix:
        path = MODELS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise InputError(f"{path}: no such model spec (known: {', '.join(known_models())})")
    return path


def load_model_spec(name_or_path: str | Path) -> AnySpec:
    """A spec by name (``models/<name>.yaml``) or path; errors name the file and the key."""
    path = spec_path(name_or_path)
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        content = {}  # load_spec reports the YAML error with the file
    kind = next((KINDS[key] for key in KINDS if isinstance(content, dict) and key in content), ModelSpec)
    if kind in (HybridSpec, StackedSpec):
        return _composite(path, kind, content)
    return load_spec(path, kind, "model spec")


def _composite(path: Path, kind: type, content: dict) -> HybridSpec | StackedSpec:
    """A hybrid or a stack with its parts' names replaced by their specs (single models only)."""
    resolved = dict(content)
    for key, expected in PARTS.items():
        if key not in content:
            continue
        named = content[key] if key == "stack" else [content[key]]
        if not isinstance(named, list):
            raise InputError(f"{path}: {key}: expected a list of model names")
        parts = [_part(path, key, item, expected) for item in named]
        resolved[key] = parts if key == "stack" else parts[0]
    return validated(kind, resolved, str(path))


def _part(path: Path, key: str, item, expected: type | None) -> dict:
    if not isinstance(item, str):
        return item  # written out in full: validated with the whole spec
    part = load_model_spec(item)
    allowed = (expected,) if expected else (ModelSpec, NetworkSpec)
    if not isinstance(part, allowed):
        what = " or ".join(a.__name__ for a in allowed)
        raise InputError(f"{path}: {key}: {item!r} is a {type(part).__name__}; expected a {what}")
    return part.model_dump()
