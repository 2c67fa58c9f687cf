"""Throughput of the deep branch: inference and training, ResNet50 and the compact CNN.

Each measurement runs in a child process pinned to 1 or N cores (TensorFlow sizes its thread
pools from the cores it may use), and reports:

- ``inference``: cells/s of ``model.predict`` at batch 512 on crops in memory, 48x48x3 and
  48x48x12 (the network alone, as the paper's 375,000 cells/min on a Titan X);
- ``store``: cells/s of :func:`ifcml.models.inference.stream_store_batches` on a simulated store,
  reading, cropping and stretching included (what ``ifcml embed`` / ``predict`` achieve), after a
  first pass that traces the network, next to the same network on crops in memory measured
  alternately in the same process, and their ratio;
- ``training``: images/s of one epoch through the real training input pipeline (tf.data from
  the crop cache, augmentation) at batch 256;
- peak RSS of the child.

``--accuracy`` also trains both networks on the same simulated design (a holdout of two
patients, the paper's recipe with ``--epochs`` at most) and reports their balanced accuracy.

Usage: python benchmarks/deep_throughput.py [--cores 1,2] [--accuracy] [--epochs 15]
Results: printed as JSON lines and written to benchmarks/results/deep_throughput.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = ("compact_cnn", "resnet50")


def device() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
    return f"CPU {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} core(s)"


def measure_inference(network: str, channels: int, cells: int = 4096) -> float:
    import numpy as np

    from ifcml.models.networks import build_network
    from ifcml.models.registry import load_model_spec

    model = build_network(load_model_spec(network), channels, 3, np.zeros(channels))
    crops = np.random.default_rng(0).integers(0, 256, (cells, 48, 48, channels)).astype(np.float32)
    model.predict(crops[:1024], batch_size=512, verbose=0)  # build and trace
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        model.predict(crops, batch_size=512, verbose=0)
        best = max(best, cells / (time.perf_counter() - start))
    return best


def measure_store(network: str, store_path: str) -> dict:
    """Store -> predictions against the model alone, in the same process, alternating (the
    ratio survives a machine whose speed drifts); the first pass (tracing) is start-up."""
    import numpy as np

    from ifcml.io.store import CellStore
    from ifcml.models.inference import Network, stream_store_batches
    from ifcml.models.networks import build_network
    from ifcml.models.registry import load_model_spec

    store = CellStore(store_path)
    spec = load_model_spec(network)
    channels = store.channels
    model = build_network(spec, len(channels), 3, np.zeros(len(channels)))
    loaded = Network(model, channels, ["a", "b", "c"], spec.crop)
    shape = (store.n_cells, 48, 48, len(channels))
    crops = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
    predictor = loaded.predictor(embeddings=False)

    def end_to_end() -> float:
        gc.collect()  # the previous pass's garbage is not billed to this one
        start = time.perf_counter()
        n = sum(len(cells) for cells, _, _ in stream_store_batches(loaded, store))
        return n / (time.perf_counter() - start)

    def model_only() -> float:
        gc.collect()
        start = time.perf_counter()
        for at in range(0, len(crops), 512):
            predictor.predict_on_batch(crops[at : at + 512])
        return len(crops) / (time.perf_counter() - start)

    first = end_to_end()
    rounds = [(end_to_end(), model_only()) for _ in range(3)]
    best_store, best_model = max(r[0] for r in rounds), max(r[1] for r in rounds)
    return {
        "value": best_store,
        "model_only_cells_per_s": round(best_model, 1),
        "share_of_model_only": round(best_store / best_model, 3),
        "first_pass_cells_per_s": round(first, 1),
    }


def measure_training(network: str, images: int) -> float:
    import numpy as np

    from ifcml.models import inputs
    from ifcml.models.networks import augmenter, build_network
    from ifcml.models.registry import load_model_spec

    spec = load_model_spec(network)
    crops = np.random.default_rng(0).integers(0, 256, (images, 48, 48, 3), dtype=np.uint8)
    labels = np.arange(images) % 3
    model = build_network(spec, 3, 3, np.zeros(3))
    import keras

    model.compile(keras.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
    data = inputs.training_dataset(
        crops,
        np.arange(images),
        labels,
        spec.training.batch_size,
        0,
        augmenter(spec.training.augmentation, 0),
    )
    model.fit(data.take(2), epochs=1, verbose=0)  # build and trace
    start = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    return images / (time.perf_counter() - start)


def measure_accuracy(store_path: str, epochs: int) -> dict:
    from ifcml.experiments.run import TrainOptions, run_model
    from ifcml.models.registry import load_model_spec

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for network in NETWORKS:
            spec = load_model_spec(network)
            training = spec.training.model_copy(update={"max_epochs": min(epochs, spec.training.max_epochs)})
            spec = spec.model_copy(update={"training": training})
            start = time.perf_counter()
            options = TrainOptions(
                split="holdout:P01_day0,P01_day15,P01_day33,P02_day0,P02_day15,P02_day33",
                channels=["BF", "DF"],
                uri=f"sqlite:///{tmp}/mlflow.db",
                experiment="benchmark",
            )
            result = run_model(store_path, spec, options)
            results[network] = {
                "balanced_accuracy": round(result.metrics["balanced_accuracy"], 4),
                "readout_mae": round(result.metrics["readout_mae"], 4),
                "wall_s": round(time.perf_counter() - start, 1),
                "max_epochs": training.max_epochs,
            }
    return results


def child(kind: str, network: str, argument: str) -> None:
    measured = {
        "inference": lambda: measure_inference(network, int(argument)),
        "store": lambda: measure_store(network, argument),
        "training": lambda: measure_training(network, int(argument)),
    }[kind]()
    result = measured if isinstance(measured, dict) else {"value": measured}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({**result, "peak_rss_mib": round(peak), "device": device()}))


def run_child(cores: int, *args: str) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, range(cores)),
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cores", default=",".join(str(c) for c in sorted({1, len(os.sched_getaffinity(0))}))
    )
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        child(*options.child)
        return
    from ifcml.io.store import write_store
    from ifcml.simulate import SimulatedSource, SimulationSettings

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        source = SimulatedSource(SimulationSettings(channels={1: "BF", 6: "DF", 7: "DAPI"}))
        store = write_store([source], Path(tmp) / "store", samples=source.samples)
        for cores in [int(c) for c in options.cores.split(",")]:
            for network in NETWORKS:
                for kind, argument, unit in [
                    ("inference", "3", "cells/s"),
                    ("inference", "12", "cells/s"),
                    ("store", str(store.path), "cells/s"),
                    ("training", "2048" if network == "compact_cnn" else "512", "images/s"),
                ]:
                    measured = run_child(cores, kind, network, argument)
                    label = (
                        f"48x48x{argument}" if kind == "inference" else ("48x48x3" if kind == "store" else "")
                    )
                    row = {
                        "network": network,
                        "measure": kind,
                        "input": label or "48x48x3",
                        "cores": cores,
                        unit.replace("/", "_per_"): round(measured.pop("value"), 1),
                        **measured,
                    }
                    print(json.dumps(row), flush=True)
                    results.append(row)
        if options.accuracy:
            accuracy = measure_accuracy(str(store.path), options.epochs)
            print(json.dumps({"accuracy": accuracy}), flush=True)
            results.append({"accuracy": accuracy})
    out = ROOT / "benchmarks" / "results" / "deep_throughput.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
