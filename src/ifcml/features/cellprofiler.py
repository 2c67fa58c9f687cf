"""The CellProfiler engine: real CellProfiler 4.2.8.1, headless, in its own environment.

CellProfiler needs numpy 1.26 and other old pins, so it lives in a separate virtual
environment (``ifcml cellprofiler install``) and runs as a subprocess on
``pipelines/ifc_cells.cppipe``. Each chunk of cells is written as the same montage and label
images the cp-measure engine measures in memory (:mod:`ifcml.features.tiling`), so both
engines measure identical objects; CellProfiler's per-object CSVs are read back into the same
columns.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

from ifcml.errors import IfcmlError, InputError
from ifcml.features import naming
from ifcml.features.recipe import Measurements, Objects, Recipe
from ifcml.features.tiling import Layout, tile, tile_labels

VERSION = "4.2.8.1"
PIPELINE = Path(__file__).resolve().parents[3] / "pipelines" / "ifc_cells.cppipe"
PIPELINE_CHANNELS = ("BF", "DF")  # the image names ifc_cells.cppipe measures
REQUIREMENTS = Path(__file__).with_name("cellprofiler-requirements.txt")
# Built before everything else: javabridge compiles against numpy 1.26 with Cython < 3, and
# CellProfiler 4.2 still imports pkg_resources (setuptools < 70).
BUILD_TOOLS = ["setuptools==65.5.0", "wheel==0.48.0", "cython==0.29.37", "numpy==1.26.4"]
JAVABRIDGE = "python-javabridge==4.0.4"
# scikit-image 0.21 (wheels for 3.11) removed the ``selem=`` keyword that a few CellProfiler
# 4.2.8 modules still pass (MeasureGranularity among them); renaming it to ``footprint=`` in
# those modules was chosen over building scikit-image 0.19 from source (~10 min per install).
SELEM_MODULES = ["measuregranularity", "identifyprimaryobjects", "findmaxima", "enhanceorsuppressfeatures"]
COMPLETE = ".ifcml-complete"
CATEGORIES = ("AreaShape_", "Intensity_", "Texture_", "Granularity_", "RadialDistribution_", "Correlation_")


class CellProfilerError(IfcmlError):
    """CellProfiler is missing, or a CellProfiler run failed."""


def env_dir() -> Path:
    """Where CellProfiler's environment lives (``IFCML_CELLPROFILER_ENV`` overrides)."""
    default = Path.home() / ".cache" / "ifcml" / f"cellprofiler-{VERSION}"
    return Path(os.environ.get("IFCML_CELLPROFILER_ENV", default))


def install(env: Path | None = None, log=print) -> Path:
    """Create CellProfiler's environment once; a finished one is reused, a broken one rebuilt."""
    env = env or env_dir()
    marker = env / COMPLETE
    if marker.exists() and marker.read_text() == _install_key():
        log(f"CellProfiler {VERSION} already installed in {env}")
        return env
    if env.exists():
        shutil.rmtree(env)
    java_home = _java_home()
    log(f"installing CellProfiler {VERSION} into {env} (a few minutes)")
    _run([sys.executable, "-m", "venv", str(env)])
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, *BUILD_TOOLS])
    _run([*pip, "--no-build-isolation", JAVABRIDGE], extra_env={"JAVA_HOME": str(java_home)})
    _run([*pip, "-r", str(REQUIREMENTS)])
    # cellprofiler declares wxPython (no Linux wheel) as a requirement: its real needs are above
    _run([*pip, "--no-deps", f"cellprofiler=={VERSION}", f"cellprofiler-core=={VERSION}"])
    _rename_selem(env)
    _run([str(env / "bin" / "cellprofiler"), "--version"])
    (env / COMPLETE).write_text(_install_key())
    log(f"CellProfiler {VERSION} ready in {env}")
    return env


def measure_cells(
    images: np.ndarray, channels: list[str], cells: np.ndarray, expanded: np.ndarray, recipe: Recipe
) -> dict[str, np.ndarray]:
    """Same contract as :func:`ifcml.features.measure.measure_cells`, measured by CellProfiler."""
    _check_matches_pipeline(channels, recipe)
    executable = env_dir() / "bin" / "cellprofiler"
    if not (env_dir() / COMPLETE).exists():
        raise CellProfilerError(
            f"CellProfiler is not installed in {env_dir()}; run `ifcml cellprofiler install` first"
        )
    n, _, height, width = images.shape
    found = cells.reshape(n, -1).any(axis=1)
    if not found.any():
        return {}
    layout = Layout(n, height, width, recipe.tile_padding)
    with tempfile.TemporaryDirectory(prefix="ifcml-cellprofiler-") as work:
        inputs, outputs = Path(work) / "input", Path(work) / "output"
        inputs.mkdir()
        for k, ch in enumerate(channels):
            tifffile.imwrite(inputs / f"1_{ch}.tif", tile(images[:, k], layout))
        for name, masks in (("Cells", cells), ("CellsExpanded", expanded)):
            tifffile.imwrite(inputs / f"1_{name}.tif", tile_labels(masks, layout).astype(np.uint16))
        command = [str(executable), "-c", "-r", "-p", str(PIPELINE), "-i", str(inputs), "-o", str(outputs)]
        _run([*command, "-f", "1", "-l", "1"], extra_env={"PYTHONHASHSEED": "0"})
        return _read_csvs(outputs, found)


def _read_csvs(outputs: Path, found: np.ndarray) -> dict[str, np.ndarray]:
    """CellProfiler's per-object CSVs -> our columns, rows back in cell order."""
    columns: dict[str, np.ndarray] = {}
    for obj in ("Cells", "CellsExpanded"):
        table = pd.read_csv(outputs / f"{obj}.csv").sort_values("ObjectNumber")
        if len(table) != found.sum():
            raise CellProfilerError(
                f"{outputs / f'{obj}.csv'}: {len(table)} objects, "
                f"expected {found.sum()} (one per segmented cell)"
            )
        for column in table.columns:
            name = f"{obj}_{column}"
            if column.startswith(CATEGORIES) and not naming.POSITION.search(name):
                values = np.full(len(found), np.nan)
                values[found] = table[column].to_numpy(np.float64)
                columns[name] = values
    return columns


def _check_matches_pipeline(channels: list[str], recipe: Recipe) -> None:
    if tuple(channels) != PIPELINE_CHANNELS:
        raise InputError(
            f"the CellProfiler engine runs {PIPELINE.name}, which measures channels "
            f"{','.join(PIPELINE_CHANNELS)}; choose them with --channels {','.join(PIPELINE_CHANNELS)}"
        )
    if recipe.measurements != Measurements() or recipe.objects != Objects():
        raise InputError(
            f"{PIPELINE.name} implements the default recipe's objects and measurements; "
            "use the cp-measure engine for other settings (or edit pipelines/make_ifc_cells.py)"
        )


def _rename_selem(env: Path) -> None:
    site = next((env / "lib").glob("python3*/site-packages"))
    for module in SELEM_MODULES:
        path = site / "cellprofiler" / "modules" / f"{module}.py"
        path.write_text(path.read_text().replace("selem=", "footprint="))


def _java_home() -> Path:
    """A JDK with JNI headers (javabridge compiles against them)."""
    candidates = [Path(os.environ["JAVA_HOME"])] if os.environ.get("JAVA_HOME") else []
    candidates += sorted(Path("/usr/lib/jvm").glob("*"))
    for home in candidates:
        if (home / "include" / "jni.h").exists():
            return home
    raise CellProfilerError("no JDK found (set JAVA_HOME to a JDK with include/jni.h; e.g. openjdk-17-jdk)")


def _install_key() -> str:
    return f"{VERSION}\n{REQUIREMENTS.read_text()}"


def _run(command: list[str], extra_env: dict[str, str] | None = None) -> None:
    result = subprocess.run(
        command, env={**os.environ, **(extra_env or {})}, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise CellProfilerError(f"`{' '.join(command[:6])} ...` failed (exit {result.returncode}):\n{tail}")
