"""A hostile user: damaged files, tampered model folders, mistakes in every option.

Each case must end with exit status 2, one ``error:`` line naming what is wrong, no traceback,
every file that existed before unchanged, and no claim (lock file) left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
import skops.io
import yaml
from sklearn.preprocessing import FunctionTransformer

from ifcml.deploy.export import export_model
from ifcml.experiments.run import TrainOptions, run_model
from ifcml.experiments.tracking import Tracking

MARKER = "ran.txt"  # what tampered code would write: its absence proves nothing of it ran


@dataclass
class World:
    """Small real inputs every case may use (copies, so that damage stays in the test)."""

    tmp: Path
    store: Path
    features: Path
    model: Path  # an exported naive Bayes model
    uri: str  # the MLflow store it came from

    def copy(self, path: Path, name: str | None = None) -> Path:
        target = self.tmp / (name or path.name)
        (shutil.copytree if path.is_dir() else shutil.copy)(path, target)
        return target

    def spec(self, **changes) -> Path:
        spec = {
            "name": "hostile",
            "data": {"store": str(self.store), "features": str(self.features)},
            "models": ["naive_bayes"],
            "channel_sets": {"label_free": ["BF", "DF"]},
            "max_evals": 1,
            **changes,
        }
        path = self.tmp / "spec.yaml"
        path.write_text(yaml.safe_dump(spec))
        return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, simulated_features):
    """(store, feature table, exported model folder, tracking URI) made once."""
    folder = tmp_path_factory.mktemp("hostile")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    options = TrainOptions(channels=["BF", "DF"], max_evals=1, experiment="base", uri=uri)
    run_model(simulated_features, "naive_bayes", options)
    export_model(Tracking(uri), "base", "balanced_accuracy", folder / "model")
    return simulated_features.parent / "store", simulated_features, folder / "model", uri


@pytest.fixture
def world(tmp_path, exported):
    store, features, model, uri = exported
    return World(tmp_path, store, features, model, uri)


def chunk(store: Path, k: int = 0) -> Path:
    return store / "images.zarr" / "images" / "c" / str(k) / "0" / "0" / "0"


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "overwrite":  # 4 KiB of another file's bytes in the middle
        middle = len(data) // 2
        path.write_bytes(data[:middle] + os.urandom(4096) + data[middle + 4096 :])
    elif how == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif how == "delete":
        path.unlink()


def damaged_store(w: World, how: str) -> Path:
    store = w.copy(w.store)
    damage(chunk(store), how)
    return store


def tampered_code(w: World) -> Path:
    model = w.copy(w.model, "tampered")
    code = model / "model_code.py"
    code.write_text(code.read_text() + f"\nopen({str(w.tmp / MARKER)!r}, 'w').write('ran')\n")
    return model


class Payload:
    """Unpickling this writes the marker: a stand-in for any code a pickle can run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def pickled_model(w: World) -> Path:
    model = w.copy(w.model, "pickled")
    inner = model / "artifacts" / "model"
    mlmodel = yaml.safe_load((inner / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"] |= {"serialization_format": "cloudpickle", "pickled_model": "model.pkl"}
    (inner / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (inner / "model.pkl").write_bytes(pickle.dumps(Payload(w.tmp / MARKER)))
    return model


def widened_trust(w: World) -> Path:
    """A skops file holding a function (``posix.getcwd``) and an MLmodel that trusts it."""
    model = w.copy(w.model, "widened")
    inner = model / "artifacts" / "model"
    skops.io.dump(FunctionTransformer(os.getcwd), inner / "model.skops")
    mlmodel = yaml.safe_load((inner / "MLmodel").read_text())
    mlmodel["flavors"]["sklearn"]["skops_trusted_types"] += skops.io.get_untrusted_types(
        file=inner / "model.skops"
    )
    (inner / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return model


def edited_mlmodel(w: World, inner: bool, change: Callable[[dict], None]) -> Path:
    model = w.copy(w.model)
    path = (model / "artifacts" / "model" if inner else model) / "MLmodel"
    content = yaml.safe_load(path.read_text())
    change(content)
    path.write_text(yaml.safe_dump(content))
    return model


def edited_meta(w: World, change: Callable[[dict], None]) -> Path:
    store = w.copy(w.store)
    meta = json.loads((store / "meta.json").read_text())
    change(meta)
    (store / "meta.json").write_text(json.dumps(meta))
    return store


def notes_folder(w: World) -> Path:
    folder = w.tmp / "notes"
    folder.mkdir()
    (folder / "lab_notes.txt").write_text("do not lose me")
    return folder


def notes_file(w: World, name: str = "notes.txt") -> Path:
    path = w.tmp / name
    path.write_text("do not lose me")
    return path


def qc_strategy(w: World) -> Path:
    """The QC strategy of the world's cells, written by `ifcml qc` (a valid strategy)."""
    from ifcml.gating.qc import qc_thresholds, write_qc_strategy

    path = w.tmp / "qc.xml"
    write_qc_strategy(qc_thresholds(pd.read_parquet(w.features)), path, 3.0, 1)
    return path


def foreign_parquet(w: World) -> Path:
    path = w.tmp / "other.parquet"
    pd.DataFrame({"x": [1, 2]}).to_parquet(path)
    return path


def corrupt_parquet(w: World) -> Path:
    path = w.tmp / "broken.parquet"
    path.write_bytes(w.features.read_bytes()[:2000])
    return path


def unlabelled_table(w: World) -> Path:
    """The feature table as measured from cells nobody labelled (its manifest kept)."""
    table = pq.read_table(w.features)
    column = table.schema.get_field_index("Metadata_label")
    table = table.set_column(column, "Metadata_label", pa.nulls(len(table), pa.string()))
    path = w.tmp / "unlabelled.parquet"
    pq.write_table(table, path)
    return path


def montage(w: World) -> Path:
    import numpy as np

    from conftest import write_montage

    tiles = np.random.default_rng(0).integers(1, 999, (4, 10, 10)).astype(np.uint16)
    write_montage(w.tmp / "acq" / "A" / "Ch1_M.tif", tiles, (2, 2))
    return w.tmp / "acq"


def samples_csv(w: World) -> Path:
    path = w.tmp / "samples.csv"
    path.write_text("instance,patient\nnot_a_sample,P1\n")
    return path


def interrupted_features(w: World) -> Path:
    """A feature table's working folder, as a run killed mid-way leaves it."""
    parts = w.tmp / ".f.parquet.parts"
    parts.mkdir()
    (parts / "manifest.json").write_text("{}")
    finished = pa.Table.from_pandas(pd.DataFrame({"Metadata_cell_id": [0]}))
    feather.write_feather(finished, parts / "part-0000000000-0000000064.arrow")
    return w.tmp / "f.parquet"


def report_over_notes(w: World) -> list:
    return ["compare", "base", "--out", notes_folder(w), "--tracking-uri", w.uri]


# (case id, the command given the world, text the error line must contain)
CASES: list[tuple[str, Callable[[World], list], list[str]]] = [
    # damaged stores
    (
        "features-deleted-chunk",
        lambda w: ["features", damaged_store(w, "delete"), "--out", w.tmp / "f.parquet"],
        ["images/c/0/0/0/0", "missing", "cells "],
    ),
    (
        "features-overwritten-chunk",
        lambda w: ["features", damaged_store(w, "overwrite"), "--out", w.tmp / "f.parquet"],
        ["images/c/0/0/0/0", "checksum mismatch"],
    ),
    (
        "features-truncated-chunk",
        lambda w: ["features", damaged_store(w, "truncate"), "--out", w.tmp / "f.parquet"],
        ["images/c/0/0/0/0", "damaged"],
    ),
    (
        "predict-damaged-chunk",
        lambda w: ["predict", w.model, damaged_store(w, "overwrite"), "--out", w.tmp / "p"],
        ["images/c/0/0/0/0", "checksum mismatch"],
    ),
    ("verify-damaged", lambda w: ["info", damaged_store(w, "overwrite"), "--verify"], ["1 problem(s) found"]),
    (
        "store-without-cells-table",
        lambda w: ["info", _without(w.copy(w.store), "cells.parquet")],
        ["cells.parquet missing"],
    ),
    (
        "store-corrupt-cells-table",
        lambda w: ["info", _truncated(w.copy(w.store), "cells.parquet")],
        ["cells.parquet: damaged Parquet table"],
    ),
    (
        "store-without-images",
        lambda w: ["info", _without(w.copy(w.store), "images.zarr")],
        ["images.zarr missing"],
    ),
    (
        "store-corrupt-meta",
        lambda w: ["info", _truncated(w.copy(w.store), "meta.json")],
        ["meta.json: not valid JSON"],
    ),
    (
        "store-future-schema",
        lambda w: ["info", edited_meta(w, lambda m: m.update(schema_version=99))],
        ["schema version 99"],
    ),
    (
        "store-cell-count-lies",
        lambda w: ["info", edited_meta(w, lambda m: m.update(n_cells=7))],
        ["meta.json says 7"],
    ),
    (
        "not-a-store",
        lambda w: ["features", notes_folder(w), "--out", w.tmp / "f.parquet"],
        ["not a CellStore"],
    ),
    # outputs: never replace what is not ifcml's
    (
        "ingest-overwrite-notes-folder",
        lambda w: ["ingest", montage(w), "--grid", "2x2", "--out", notes_folder(w), "--overwrite"],
        ["not a CellStore", "--overwrite replaces only ifcml's own"],
    ),
    (
        "ingest-overwrite-plain-file",
        lambda w: ["ingest", montage(w), "--grid", "2x2", "--out", notes_file(w), "--overwrite"],
        ["an existing file that is not a CellStore"],
    ),
    (
        "ingest-existing-store",
        lambda w: ["ingest", montage(w), "--grid", "2x2", "--out", w.copy(w.store)],
        ["already exists"],
    ),
    (
        "ingest-grid-too-large",
        lambda w: ["ingest", montage(w), "--grid", "1200x1200", "--out", w.tmp / "s"],
        ["20x20"],
    ),
    (
        "ingest-samples-match-nothing",
        lambda w: ["ingest", montage(w), "--grid", "2x2", "--samples", samples_csv(w), "--out", w.tmp / "s"],
        ["--samples: no row names an instance", "not_a_sample"],
    ),
    (
        "features-out-existing-folder",
        lambda w: ["features", w.store, "--out", notes_folder(w)],
        ["already exists"],
    ),
    (
        "features-overwrite-folder",
        lambda w: ["features", w.store, "--out", notes_folder(w), "--overwrite"],
        ["not an ifcml feature table"],
    ),
    (
        "features-overwrite-foreign-parquet",
        lambda w: ["features", w.store, "--out", foreign_parquet(w), "--overwrite"],
        ["not an ifcml feature table"],
    ),
    (
        "features-interrupted-run",
        lambda w: ["features", w.store, "--out", interrupted_features(w)],
        ["--resume"],
    ),
    (
        "prune-overwrite-notes",
        lambda w: ["prune", w.features, "--out", notes_file(w, "n.parquet"), "--overwrite"],
        ["not an ifcml feature table"],
    ),
    (
        "gate-overwrite-notes",
        lambda w: [
            "gate",
            w.features,
            "--gates",
            qc_strategy(w),
            "--out",
            notes_file(w, "n.parquet"),
            "--overwrite",
        ],
        ["not an ifcml cells table"],
    ),
    (
        "gate-notes-as-strategy",
        lambda w: ["gate", w.features, "--gates", notes_file(w, "gates.xml"), "--out", w.tmp / "g.parquet"],
        ["gates.xml", "not a GatingML 2.0 strategy"],
    ),
    (
        "gate-damaged-table",
        lambda w: ["gate", corrupt_parquet(w), "--gates", qc_strategy(w), "--out", w.tmp / "g.parquet"],
        ["broken.parquet", "not a readable Parquet table"],
    ),
    (
        "fcs-overwrite-notes",
        lambda w: ["fcs", w.features, "--out", notes_file(w, "cells.fcs"), "--overwrite"],
        ["not an FCS file ifcml wrote"],
    ),
    (
        "qc-overwrite-notes",
        lambda w: ["qc", w.features, "--out", notes_file(w, "qc.xml"), "--overwrite"],
        ["not a QC strategy ifcml wrote"],
    ),
    ("compare-out-notes-folder", report_over_notes, ["not an ifcml report folder"]),
    (
        "compare-out-file",
        lambda w: ["compare", "base", "--out", notes_file(w), "--tracking-uri", w.uri],
        ["an existing file"],
    ),
    ("predict-out-file", lambda w: ["predict", w.model, w.store, "--out", notes_file(w)], ["not a folder"]),
    (
        "export-existing-out",
        lambda w: ["export", "base", "--out", notes_folder(w), "--tracking-uri", w.uri],
        ["already exists"],
    ),
    # options
    (
        "features-bad-scheduler",
        lambda w: ["features", w.store, "--out", w.tmp / "f.parquet", "--scheduler", "nope"],
        ["--scheduler", "tcp://HOST:PORT"],
    ),
    (
        "features-unreachable-scheduler",
        lambda w: ["features", w.store, "--out", w.tmp / "f.parquet", "--scheduler", "tcp://127.0.0.1:9"],
        ["no Dask scheduler answers"],
    ),
    (
        "features-unknown-engine",
        lambda w: ["features", w.store, "--out", w.tmp / "f.parquet", "--engine", "magic"],
        ["magic"],
    ),
    (
        "features-unknown-channel",
        lambda w: ["features", w.store, "--out", w.tmp / "f.parquet", "--channels", "GFP"],
        ["GFP"],
    ),
    (
        "features-zero-workers",
        lambda w: ["features", w.store, "--out", w.tmp / "f.parquet", "--workers", "0"],
        ["--workers"],
    ),
    (
        "train-negative-seed",
        lambda w: ["train", w.features, "--model", "naive_bayes", "--seed", "-5"],
        ["--seed"],
    ),
    (
        "train-unlabelled-table",
        lambda w: ["train", unlabelled_table(w), "--model", "naive_bayes", "--tracking-uri", w.uri],
        ["at least two classes", "labels: none"],
    ),
    (
        "train-unknown-positive",
        lambda w: [
            "train",
            w.features,
            "--model",
            "naive_bayes",
            "--positive",
            "unicorn",
            "--tracking-uri",
            w.uri,
        ],
        ["'unicorn' is not a label"],
    ),
    (
        "train-unsupported-uri",
        lambda w: ["train", w.features, "--model", "naive_bayes", "--tracking-uri", "ftp://example.org/runs"],
        ["unsupported scheme 'ftp'"],
    ),
    (
        "train-corrupt-table",
        lambda w: ["train", corrupt_parquet(w), "--model", "naive_bayes"],
        ["not a readable Parquet table"],
    ),
    (
        "train-missing-table",
        lambda w: ["train", w.tmp / "nope.parquet", "--model", "naive_bayes"],
        ["no such feature table"],
    ),
    ("train-unknown-model", lambda w: ["train", w.features, "--model", "perceptron"], ["no such model spec"]),
    (
        "train-bad-split",
        lambda w: ["train", w.features, "--model", "naive_bayes", "--split", "sideways"],
        ["sideways"],
    ),
    ("grid-negative-seed", lambda w: ["grid", w.spec(seed=-5)], ["seed"]),
    ("grid-empty-name", lambda w: ["grid", w.spec(name="")], ["name"]),
    (
        "grid-unknown-positive",
        lambda w: ["grid", w.spec(positive="unicorn"), "--tracking-uri", w.uri],
        ["'unicorn' is not a label"],
    ),
    ("grid-malformed-yaml", lambda w: ["grid", notes_file(w, "bad.yaml")], ["bad.yaml"]),
    ("grid-bad-scheduler", lambda w: ["grid", w.spec(), "--scheduler", "localhost"], ["--scheduler"]),
    (
        "compare-misspelt-store",
        lambda w: ["compare", "base", "--tracking-uri", f"sqlite:///{w.tmp / 'mlfow.db'}"],
        ["no MLflow store there"],
    ),
    (
        "compare-unknown-experiment",
        lambda w: ["compare", "nope", "--out", w.tmp / "r", "--tracking-uri", w.uri],
        ["nope"],
    ),
    (
        "compare-unknown-metric",
        lambda w: ["compare", "base", "--metric", "vibes", "--tracking-uri", w.uri],
        ["vibes"],
    ),
    ("simulate-unknown-format", lambda w: ["simulate", w.tmp / "sim", "--format", "png"], ["png"]),
    (
        "predict-min-cells-zero",
        lambda w: ["predict", w.model, w.store, "--out", w.tmp / "p", "--min-cells", "0"],
        ["--min-cells"],
    ),
    (
        "predict-no-model",
        lambda w: ["predict", w.tmp / "nowhere", w.store, "--out", w.tmp / "p"],
        ["no MLmodel"],
    ),
    # model folders are data, not code
    (
        "predict-tampered-code",
        lambda w: ["predict", tampered_code(w), w.store, "--out", w.tmp / "p"],
        ["model_code.py: differs from the installed ifcml's"],
    ),
    (
        "predict-pickled-model",
        lambda w: ["predict", pickled_model(w), w.store, "--out", w.tmp / "p"],
        ["'cloudpickle'", "only skops"],
    ),
    (
        "predict-widened-trust",
        lambda w: ["predict", widened_trust(w), w.store, "--out", w.tmp / "p"],
        ["does not trust", "getcwd"],
    ),
    (
        "predict-code-dir",
        lambda w: [
            "predict",
            edited_mlmodel(w, False, lambda m: m["flavors"]["python_function"].update(code="code")),
            w.store,
            "--out",
            w.tmp / "p",
        ],
        ["ships code"],
    ),
    (
        "predict-foreign-xgboost-class",
        lambda w: [
            "predict",
            edited_mlmodel(
                w,
                True,
                lambda m: (
                    m["flavors"].update(
                        xgboost={
                            "model_class": "subprocess.Popen",
                            "model_format": "json",
                            "data": "model.json",
                        }
                    )
                    or m["flavors"].pop("sklearn")
                ),
            ),
            w.store,
            "--out",
            w.tmp / "p",
        ],
        ["subprocess.Popen"],
    ),
    (
        "predict-model-file-outside",
        lambda w: [
            "predict",
            edited_mlmodel(
                w, True, lambda m: m["flavors"]["sklearn"].update(pickled_model="../../../model.skops")
            ),
            w.store,
            "--out",
            w.tmp / "p",
        ],
        ["expected a .skops file"],
    ),
]


def _without(store: Path, name: str) -> Path:
    target = store / name
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    return store


def _truncated(store: Path, name: str) -> Path:
    target = store / name
    target.write_bytes(target.read_bytes()[: max(1, target.stat().st_size // 2)])
    return store


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` with its SHA-256."""
    found = {}
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_the_suite_is_as_large_as_promised():
    assert len(CASES) >= 40 and len({case for case, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("case, command, mentions", CASES, ids=[c for c, _, _ in CASES])
def test_a_hostile_command_fails_cleanly_and_changes_nothing(world, ifcml, case, command, mentions):
    argv = command(world)
    roots = [world.tmp, world.store, world.features, world.model]
    before = snapshot(*roots)
    code, _, err = ifcml(*argv)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2, (case, err[-2000:])
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    for text in mentions:
        assert text in errors[0], (text, errors[0])
    after = snapshot(*roots)
    assert {path: after.get(path) for path in before} == before, "a file that existed changed or vanished"
    assert not (world.tmp / MARKER).exists(), "code from the model folder ran"
    assert not list(world.tmp.rglob(".*.lock")), "a claim was left behind"


def test_the_tampering_is_real_mlflow_itself_would_run_it(world):
    """What ifcml refuses above, MLflow's own loaders run: the tests tamper for real."""
    import mlflow

    mlflow.pyfunc.load_model(str(tampered_code(world)))
    assert (world.tmp / MARKER).read_text() == "ran"
    (world.tmp / MARKER).unlink()
    mlflow.sklearn.load_model(str(pickled_model(world) / "artifacts" / "model"))
    assert (world.tmp / MARKER).read_text() == "ran"
