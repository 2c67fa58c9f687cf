"""Two commands at once, and a command killed mid-way: real processes, real files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from conftest import write_montage
from ifcml.io.store import CellStore
from ifcml.outputs import claimed

IFCML = Path(sys.executable).with_name("ifcml")


def start(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [str(IFCML), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for(condition, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_claimed_output_is_refused_at_once_naming_its_writer(tmp_path, ifcml):
    tiles = np.random.default_rng(0).integers(1, 999, (4, 10, 10)).astype(np.uint16)
    write_montage(tmp_path / "acq" / "A" / "Ch1_M.tif", tiles, (2, 2))
    out = tmp_path / "store"
    with claimed(out):  # this test process is "the other ifcml"
        code, _, err = ifcml("ingest", tmp_path / "acq", "--grid", "2x2", "--out", out)
    assert code == 2 and f"{out}: is being written by another ifcml (pid {os.getpid()})" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acq"]
    assert ifcml("ingest", tmp_path / "acq", "--grid", "2x2", "--out", out)[0] == 0  # once released


def test_two_feature_runs_to_one_table_one_writes_the_other_is_refused(tmp_path, simulated_features):
    store = CellStore(simulated_features.parent / "store")  # 480 cells: the first run takes ~15 s
    out = tmp_path / "features.parquet"
    first = start("features", store.path, "--out", out)
    wait_for((tmp_path / ".features.parquet.lock").exists, what="the first run's claim")
    second = start("features", store.path, "--out", out)
    _, second_err = second.communicate(timeout=120)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err[-2000:]
    assert second.returncode == 2 and f"is being written by another ifcml (pid {first.pid})" in second_err
    assert "Traceback" not in first_err + second_err
    assert len(pd.read_parquet(out)) == store.n_cells
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.parquet", "features.recipe.yaml"]


def test_two_trainings_on_a_new_tracking_store_both_finish(tmp_path, simulated_features):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [
        "train",
        simulated_features,
        "--model",
        "naive_bayes",
        "--max-evals",
        "1",
        "--tracking-uri",
        uri,
    ]
    runs = [start(*command, "--experiment", f"e{k}") for k in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=600)
        assert run.returncode == 0 and "Traceback" not in err, err[-3000:]
    code = subprocess.run([str(IFCML), "compare", "e0", "--out", tmp_path / "r", "--tracking-uri", uri])
    assert code.returncode == 0  # the store still works for every later command


def test_a_killed_feature_run_leaves_no_workers_and_resumes(tmp_path, simulated_features):
    store = CellStore(simulated_features.parent / "store")
    out = tmp_path / "features.parquet"
    run = start("features", store.path, "--out", out, "--workers", "2")
    parent = psutil.Process(run.pid)
    wait_for(lambda: len(parent.children()) >= 2, what="two workers")
    time.sleep(2)  # measuring
    workers = parent.children(recursive=True)
    run.send_signal(signal.SIGKILL)
    run.wait()
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive, f"{len(alive)} worker(s) outlived their killed parent"
    code = subprocess.run(
        [str(IFCML), "features", store.path, "--out", out, "--workers", "2", "--resume"],
        capture_output=True,
        text=True,
    )
    assert code.returncode == 0, code.stderr[-2000:]
    assert pd.read_parquet(out)["Metadata_cell_id"].tolist() == list(range(store.n_cells))


def test_a_version_1_store_reads_with_a_notice(tmp_path, simulated_store, ifcml):
    """Stores written before checksums still read; the user is told they cannot be verified."""
    old = tmp_path / "old"
    shutil.copytree(simulated_store.path, old)
    meta = json.loads((old / "meta.json").read_text())
    (old / "meta.json").write_text(json.dumps({**meta, "schema_version": 1}))
    code, out, err = ifcml("info", old, "--verify")
    assert code == 0, err
    assert "notice: " in err and "damage cannot be detected" in err
    assert "verified, every chunk decoded (no checksums)" in out
