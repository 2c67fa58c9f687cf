"""The main job on embedded default data, one function per step, callable from Python.

Simulated samples with known truth go through the paper's flow: an IDEAS-style TIFF export,
ingest, CellProfiler measurements, ground truth by gating the stained channels and the QC gates,
the grid of ``experiments/demo.yaml`` in MLflow, the comparison report, export of the best
design, and the readout of new simulated patients. Each step writes its output atomically and
is skipped when the output exists, so an interrupted demo goes on where it stopped. ``ifcml
demo`` runs the steps in order and prints what they return; progress is told to a ``Bars``
(a factory of progress callbacks: ``with bars(total, "ingest") as update: update(n)``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ifcml.executors import available_cores
from ifcml.io.ingest import Reading, ingest
from ifcml.io.store import CellStore
from ifcml.progress import Bars, no_bars
from ifcml.simulate import PAPER_CHANNELS, SimulatedSource, SimulationSettings, write_tiff_export


@dataclass(frozen=True)
class Demo:
    """Where the demo's steps write, under ``out``, and the seed they share."""

    out: Path
    seed: int = 0

    @property
    def raw(self) -> Path:
        return self.out / "simulated_tiff"

    @property
    def store(self) -> Path:
        return self.out / "store"

    @property
    def uri(self) -> str:
        return f"sqlite:///{(self.out / 'mlflow.db').resolve()}"

    @property
    def model(self) -> Path:
        return self.out / "model"

    @property
    def new_raw(self) -> Path:
        return self.out / "new_samples_tiff"

    @property
    def predictions(self) -> Path:
        return self.out / "predictions"

    @property
    def workers(self) -> int:
        return available_cores()


def simulate(settings: SimulationSettings, out: Path, bars: Bars = no_bars) -> int:
    """Simulated samples as an IDEAS-style TIFF export at ``out`` (if missing); their cell count."""
    source = SimulatedSource(settings)
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        with bars(source.n_candidates, "simulate") as update:
            write_tiff_export(source, out, on_cells=update)
    return source.n_candidates


def ingest_export(raw: Path, store: Path, bars: Bars = no_bars, channels: dict | None = None) -> CellStore:
    """The TIFF export at ``raw`` (one folder per sample, ``samples.csv`` beside them) as a
    CellStore at ``store`` (if missing)."""
    if not store.exists():
        samples = pd.read_csv(raw / "samples.csv")
        ingest(_samples_in(raw), store, Reading("tiff", channels), samples=samples, bars=bars)
    return CellStore(store)


def experiment(demo: Demo):
    """``experiments/demo.yaml`` pointed at the demo's store, feature table and seed."""
    from ifcml.experiments.spec import EXPERIMENTS_DIR, load_experiment

    spec = load_experiment(EXPERIMENTS_DIR / "demo.yaml")
    shipped = spec.data.labels_from
    assert shipped is not None, "experiments/demo.yaml takes its labels from gates/simulated_panel.xml"
    labels_from = shipped.model_copy(  # the shipped strategy, wherever the demo runs
        update={"strategy": str(EXPERIMENTS_DIR.parent / shipped.strategy)}
    )
    data = spec.data.model_copy(
        update={"store": demo.store, "features": demo.out / "features.parquet", "labels_from": labels_from}
    )
    return spec.model_copy(update={"data": data, "seed": demo.seed})


def measure(demo: Demo, spec, bars: Bars = no_bars) -> list[str]:
    """The feature table, the gating table and the QC strategy; the gating summary's lines."""
    from ifcml.experiments.gated_data import gating_summary
    from ifcml.experiments.grid import prepare_data

    store = CellStore(demo.store)
    with bars(store.n_cells, "features") as update:
        prepare_data(spec, demo.workers, on_cells=update)
    return gating_summary(spec, store.cells.set_index("cell_id")["label"])


def grid(demo: Demo, spec, on_task: Callable[[int], None] | None = None, on_total=None):
    """Every design's folds and final refit in MLflow (finished tasks are skipped)."""
    from ifcml.experiments.grid import run_grid

    return run_grid(spec, demo.uri, demo.workers, on_task=on_task, on_total=on_total)


def report(demo: Demo, spec) -> Path:
    """The comparison report, ``OUT/report/report.html``."""
    from ifcml.experiments.compare import write_report
    from ifcml.experiments.tracking import Tracking

    page, _ = write_report(Tracking(demo.uri, existing=True), spec.name, demo.out / "report")
    return page


def export(demo: Demo, spec):
    """The best design as an exported model at ``OUT/model``; None when it was exported before."""
    from ifcml.deploy.export import export_model
    from ifcml.experiments.tracking import Tracking

    if demo.model.exists():
        return None
    return export_model(Tracking(demo.uri, existing=True), spec.name, "balanced_accuracy", demo.model)


def read_out(demo: Demo, bars: Bars = no_bars) -> pd.DataFrame:
    """Two new simulated patients (another seed than the grid's), acquired on the exported
    model's label-free channels and read out by it (if not yet); their ``samples.csv``."""
    from ifcml.deploy.predict import model_card, write_predictions

    card = model_card(demo.model)
    channels = {k: v for k, v in PAPER_CHANNELS.items() if v in card.channels}  # label-free acquisition
    simulate(SimulationSettings(patients=2, channels=channels, seed=demo.seed + 1), demo.new_raw, bars)
    samples = demo.predictions / "samples.csv"
    if not samples.exists():
        with tempfile.TemporaryDirectory(dir=demo.out) as tmp:
            store = ingest(
                _samples_in(demo.new_raw),
                Path(tmp) / "store",
                lambda sample: Reading("tiff", channels, instance=f"new_{sample.name}"),
                bars=bars,
            )
            with bars(store.n_cells, "predict") as update:
                write_predictions(demo.model, [store], demo.predictions, demo.workers, update)
    return pd.read_csv(samples)


def _samples_in(export: Path) -> list[Path]:
    """An IDEAS-style export's sample folders, in name order."""
    return [p for p in sorted(export.iterdir()) if p.is_dir()]
