"""Shared fixtures: real data from ../shared/data (skipped cleanly when absent) and small inputs."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tifffile

from ifcml.cli import main

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
JURKAT = SHARED_DATA / "jurkat_ifc" / "Experiment_1"
JURKAT_COUNTS = {
    "G1": 900,
    "S_phase": 900,
    "G2": 900,
    "Prophase": 606,
    "Metaphase": 69,
    "Anaphase": 16,
    "Telophase": 28,
}


@pytest.fixture(autouse=True)
def _environment_kept():
    """Each test leaves os.environ as it found it. Opening a Dask LocalCluster writes Dask's
    worker environment (MALLOC_TRIM_THRESHOLD_, one BLAS thread) into this process's, and every
    later test's subprocesses would inherit it (glibc's trim setting made measurements 60 %
    slower)."""
    with mock.patch.dict(os.environ):
        yield


@pytest.fixture
def jurkat() -> Path:
    if not JURKAT.is_dir():
        pytest.skip(f"real Jurkat montages not found at {JURKAT}")
    return JURKAT


@pytest.fixture
def ifcml(capsys):
    """Run the real ``ifcml`` entry point in-process; returns (exit code, stdout, stderr)."""

    def run(*args) -> tuple[int, str, str]:
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def write_montage(path: Path, tiles: np.ndarray, grid: tuple[int, int], column_major: bool = True) -> None:
    """Stitch (N, h, w) tiles into a montage file as CellProfiler's script does."""
    rows, cols = grid
    n, h, w = tiles.shape
    montage = np.zeros((rows * h, cols * w), np.uint16)
    for i in range(n):
        r, c = (i % rows, i // rows) if column_major else (i // cols, i % cols)
        montage[r * h : (r + 1) * h, c * w : (c + 1) * w] = tiles[i]
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, montage)


@pytest.fixture(scope="session")
def jurkat_store(tmp_path_factory):
    """The real Jurkat cells, label-free channels (bright-field, dark-field), as a CellStore."""
    from ifcml.io.detect import open_source
    from ifcml.io.store import write_store

    if not JURKAT.is_dir():
        pytest.skip(f"real Jurkat montages not found at {JURKAT}")
    source = open_source(JURKAT, "montage", channels={3: "BF", 6: "DF"}, grid="30x30")
    return write_store([source], tmp_path_factory.mktemp("jurkat") / "store")


@pytest.fixture(scope="session")
def simulated_store(tmp_path_factory):
    """A small simulated store with instrument masks: 2 patients x 2 timepoints x 40 cells."""
    from ifcml.io.store import write_store
    from ifcml.simulate import SimulatedSource, SimulationSettings

    settings = SimulationSettings(
        patients=2, timepoints=("day0", "day15"), cells_per_sample=40, channels={1: "BF", 6: "DF", 7: "DAPI"}
    )
    return write_store([SimulatedSource(settings)], tmp_path_factory.mktemp("sim") / "store")


@pytest.fixture(scope="session")
def simulated_features(tmp_path_factory):
    """Features of simulated samples with known truth: 4 patients x 2 timepoints x 60 cells."""
    from ifcml.features.table import write_features
    from ifcml.io.store import write_store
    from ifcml.simulate import SimulatedSource, SimulationSettings

    settings = SimulationSettings(
        patients=4, timepoints=("day0", "day15"), cells_per_sample=60, channels={1: "BF", 6: "DF", 7: "DAPI"}
    )
    folder = tmp_path_factory.mktemp("simfeatures")
    source = SimulatedSource(settings)
    store = write_store([source], folder / "store", samples=source.samples)
    return write_features(store.path, folder / "features.parquet")


@pytest.fixture(scope="session", autouse=True)
def crop_cache(tmp_path_factory):
    """Crops and training checkpoints go to a temporary cache, never the user's."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("IFCML_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def deep_store(tmp_path_factory):
    """Simulated label-free cells for networks: 3 patients x 2 timepoints x 120 cells, BF and DF."""
    from ifcml.io.store import write_store
    from ifcml.simulate import SimulatedSource, SimulationSettings

    settings = SimulationSettings(
        patients=3, timepoints=("day0", "day15"), cells_per_sample=120, channels={1: "BF", 6: "DF"}
    )
    source = SimulatedSource(settings)
    return write_store([source], tmp_path_factory.mktemp("deep") / "store", samples=source.samples)
