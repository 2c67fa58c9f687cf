"""Model specs by name or path: ``models/<name>.yaml`` is classical or a network by its keys.

A spec with ``estimator:`` is a classical model (:class:`~ifcml.models.classical.ModelSpec`),
one with ``network:`` a network (:class:`~ifcml.models.network_spec.NetworkSpec`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ifcml.errors import InputError
from ifcml.models.classical import ModelSpec
from ifcml.models.network_spec import NetworkSpec
from ifcml.specs import load_spec

MODELS_DIR = Path(__file__).resolve().parents[3] / "models"


def known_models() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.yaml"))


def load_model_spec(name_or_path: str | Path) -> ModelSpec | NetworkSpec:
    """A spec by name (``models/<name>.yaml``) or path; errors name the file and the key."""
    path = Path(name_or_path)
    if not path.suffix:
        path = MODELS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise InputError(f"{path}: no such model spec (known: {', '.join(known_models())})")
    try:
        is_network = "network" in (yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError:
        is_network = False  # load_spec reports the YAML error with the file
    return load_spec(path, NetworkSpec if is_network else ModelSpec, "model spec")
