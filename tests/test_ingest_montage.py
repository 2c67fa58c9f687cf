"""Montage ingest: the real Jurkat montages, other grids, and empty-tile detection."""

from __future__ import annotations

import json

import numpy as np
import tifffile

from conftest import JURKAT_COUNTS, write_montage
from ifcml.io.montage import empty_tiles, split_tiles
from ifcml.io.store import CellStore


def test_real_jurkat_montages_give_exact_cells_per_phase(jurkat, tmp_path, ifcml):
    out = tmp_path / "jurkat"
    code, _, err = ifcml(
        "ingest",
        jurkat,
        "--format",
        "montage",
        "--grid",
        "30x30",
        "--channels",
        "3:BF,4:DNA,6:DF",
        "--out",
        out,
    )
    assert code == 0, err
    code, stdout, _ = ifcml("info", out, "--json")
    summary = json.loads(stdout)
    assert summary["n_cells"] == 3419
    assert summary["channels"] == ["BF", "DNA", "DF"]
    assert summary["counts"] == {"Experiment_1": JURKAT_COUNTS}


def test_real_montage_tiles_are_stored_unchanged(jurkat, tmp_path, ifcml):
    out = tmp_path / "s"
    ifcml("ingest", jurkat, "--format", "montage", "--grid", "30x30", "--channels", "6:DF", "--out", out)
    store = CellStore(out)
    montage = tifffile.imread(next((jurkat / "Anaphase").glob("Ch6_*.tif")))
    anaphase = store.cells.index[store.cells["label"] == "Anaphase"]
    assert store.cells.loc[anaphase, "object_number"].tolist() == list(range(1, 17))
    # column-major fill: tile k sits in row k % 30, column k // 30
    for k, index in enumerate(anaphase):
        r, c = k % 30, k // 30
        np.testing.assert_array_equal(
            store.images[index][0], montage[r * 40 : r * 40 + 40, c * 40 : c * 40 + 40]
        )


def _cells(n: int, h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(100, 4000, (n, h, w)).astype(np.uint16)


def test_other_grid_and_tile_size_with_striped_and_blank_padding(tmp_path, ifcml):
    root = tmp_path / "acq"
    grid, h, w = (4, 6), 25, 31
    for label, n_cells in {"A": 24, "B": 7}.items():
        tiles = np.zeros((24, h, w), np.uint16)
        tiles[:n_cells] = _cells(n_cells, h, w, seed=len(label) + n_cells)
        tiles[n_cells:] = np.arange(w, dtype=np.uint16)[None, None, :] * 7  # vertical stripes
        if label == "B":
            tiles[-1] = 0  # blank
            tiles[-2] = np.arange(h, dtype=np.uint16)[:, None]  # horizontal stripes
        for k in (1, 5):
            write_montage(root / label / f"Ch{k}_M01.tif", tiles, grid)
    out = tmp_path / "s"
    code, _, err = ifcml("ingest", root, "--format", "montage", "--grid", "4x6", "--out", out)
    assert code == 0, err
    store = CellStore(out)
    assert store.summary()["counts"] == {"acq": {"A": 24, "B": 7}}
    assert store.channels == ["Ch1", "Ch5"]
    assert (store.cells["height"] == h).all() and (store.cells["width"] == w).all()


def test_row_major_fill(tmp_path, ifcml):
    tiles = _cells(6, 10, 12, seed=3)
    write_montage(tmp_path / "acq" / "X" / "Ch2_M.tif", tiles, (2, 3), column_major=False)
    out = tmp_path / "s"
    code, _, err = ifcml("ingest", tmp_path / "acq", "--grid", "2x3", "--row-major", "--out", out)
    assert code == 0, err
    np.testing.assert_array_equal(CellStore(out).images[:][:, 0], tiles)


def test_empty_tile_needs_every_channel_flat():
    tiles = _cells(3, 8, 8, seed=1).reshape(3, 1, 8, 8).repeat(2, axis=1)
    tiles[1, 0] = 5  # flat in one channel only: still a cell
    tiles[2, :] = np.arange(8, dtype=np.uint16)  # striped in both: empty
    assert empty_tiles(tiles).tolist() == [False, False, True]


def test_split_tiles_orders():
    montage = np.arange(4 * 6, dtype=np.uint16).reshape(1, 4, 6)  # 2x3 grid of 2x2 tiles
    col = split_tiles(montage, (2, 3), column_major=True)[:, 0, 0, 0]
    row = split_tiles(montage, (2, 3), column_major=False)[:, 0, 0, 0]
    assert col.tolist() == [0, 12, 2, 14, 4, 16]
    assert row.tolist() == [0, 2, 4, 12, 14, 16]


def test_relative_path_through_parent_folder(tmp_path, ifcml, monkeypatch):
    """A path like ../data/montages must work: only hidden folders INSIDE the input are skipped."""
    rng = np.random.default_rng(0)
    write_montage(tmp_path / "data" / "A" / "Ch1_CP0001.tif", rng.integers(100, 900, (3, 8, 8)), (2, 2))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    code, _, err = ifcml("ingest", "../data", "--format", "montage", "--grid", "2x2", "--out", "s")
    assert code == 0, err
    assert CellStore(tmp_path / "work" / "s").counts() == {"data": {"A": 3}}
