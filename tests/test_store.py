"""The CellStore contract: ragged sizes kept, streamed chunks, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ifcml.errors import InputError, StoreError
from ifcml.io.sources import CellChunk
from ifcml.io.store import CellStore, write_store


class ListSource:
    """A planned source over in-memory cells; optionally fails after some chunks."""

    format = "test"

    def __init__(self, images, labels, instance="i1", masks=None, fail_after=None, name="mem"):
        self.images, self.labels, self.instance, self.masks = images, labels, instance, masks
        self.fail_after, self.name = fail_after, name
        self.channels = {k + 1: f"C{k + 1}" for k in range(images[0].shape[0])}
        self.max_height = max(i.shape[1] for i in images)
        self.max_width = max(i.shape[2] for i in images)
        self.has_masks = masks is not None
        self.n_candidates = len(images)

    def chunks(self, chunk_cells):
        for n, start in enumerate(range(0, len(self.images), chunk_cells)):
            if self.fail_after is not None and n >= self.fail_after:
                raise InputError(f"{self.name}: broken at cell {start}")
            stop = start + chunk_cells
            yield CellChunk(
                images=self.images[start:stop],
                masks=None if self.masks is None else self.masks[start:stop],
                object_numbers=list(range(start + 1, start + 1 + len(self.images[start:stop]))),
                labels=self.labels[start:stop],
                instances=[self.instance] * len(self.images[start:stop]),
                sources=[self.name] * len(self.images[start:stop]),
            )

    def provenance(self):
        return {"format": "test"}


def _ragged(n, channels=2, seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.integers(0, 65536, (channels, rng.integers(3, 30), rng.integers(3, 30)), dtype=np.uint16)
        for _ in range(n)
    ]


def test_ragged_images_round_trip_through_chunks(tmp_path):
    images = _ragged(53)
    masks = [(im > 30000).astype(np.uint8) for im in images]
    labels = [None if i % 5 == 0 else f"L{i % 3}" for i in range(53)]
    source = ListSource(images, labels, masks=masks)
    store = write_store([source], tmp_path / "s", chunk_cells=7, samples=None)
    assert store.images.chunks[0] == 7
    assert store.cells["cell_id"].tolist() == list(range(53))
    for i, image in enumerate(images):
        h, w = image.shape[1:]
        assert (store.cells.loc[i, "height"], store.cells.loc[i, "width"]) == (h, w)
        np.testing.assert_array_equal(store.images[i][:, :h, :w], image)
        np.testing.assert_array_equal(store.masks[i][:, :h, :w], masks[i])
        assert not store.images[i][:, h:, :].any() and not store.images[i][:, :, w:].any()
    assert store.cells["label"].isna().sum() == 11
    assert store.counts()["i1"]["null"] == 11


def test_batches_stream_in_store_order(tmp_path):
    images = _ragged(20, channels=3)
    store = write_store([ListSource(images, ["a"] * 20)], tmp_path / "s", chunk_cells=6)
    seen = []
    for rows, batch in store.iter_batches(batch_cells=8, channels=["C3", "C1"]):
        assert batch.shape[1] == 2 and len(rows) == len(batch) <= 8
        seen.extend(rows["cell_id"])
        first = rows.index[0]
        h, w = images[first].shape[1:]
        np.testing.assert_array_equal(batch[0, 0, :h, :w], images[first][2])
    assert seen == list(range(20))
    with pytest.raises(StoreError, match="no channel"):
        next(store.iter_batches(channels=["DAPI"]))


def test_failed_ingest_leaves_nothing_and_keeps_old_store(tmp_path):
    out = tmp_path / "s"
    write_store([ListSource(_ragged(5), ["a"] * 5)], out)
    before = (out / "meta.json").read_text()
    broken = ListSource(_ragged(30, seed=1), ["b"] * 30, fail_after=2)
    with pytest.raises(InputError, match="broken"):
        write_store([broken], out, overwrite=True, chunk_cells=4)
    assert (out / "meta.json").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


def test_abandoned_temporary_folder_of_a_killed_ingest_is_cleaned(tmp_path):
    stale = tmp_path / ".s.ingest-999999999"
    stale.mkdir()
    write_store([ListSource(_ragged(3), ["a"] * 3)], tmp_path / "s")
    assert not stale.exists()


def test_samples_table_and_meta(tmp_path):
    import pandas as pd

    samples = pd.DataFrame({"instance": ["i1"], "patient": ["P7"], "timepoint": ["day15"]})
    store = write_store([ListSource(_ragged(4), ["a"] * 4)], tmp_path / "s", samples=samples)
    assert set(store.cells["patient"]) == {"P7"} and set(store.cells["timepoint"]) == {"day15"}
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["schema_version"] == 2 and meta["channels"] == ["C1", "C2"]
    assert len(meta["images_sha256"]) == 64


def test_sources_with_different_channels_are_refused(tmp_path):
    a = ListSource(_ragged(3, channels=2), ["a"] * 3, name="first")
    b = ListSource(_ragged(3, channels=3), ["a"] * 3, name="second")
    with pytest.raises(StoreError, match="second"):
        write_store([a, b], tmp_path / "s")
    assert not (tmp_path / "s").exists()


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="not a CellStore"):
        CellStore(tmp_path)


def test_a_store_verifies_itself_chunk_by_chunk(tmp_path):
    images = _ragged(30)
    masks = [np.zeros(im.shape, np.uint8) for im in images]  # all zero: written anyway
    store = write_store([ListSource(images, ["a"] * 30, masks=masks)], tmp_path / "s", chunk_cells=8)
    assert store.verify() == []
    assert (tmp_path / "s" / "images.zarr" / "masks" / "c" / "3" / "0" / "0" / "0").is_file()
    chunk = tmp_path / "s" / "images.zarr" / "images" / "c" / "2" / "0" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one bit pattern flipped on disk
    chunk.write_bytes(bytes(data))
    (tmp_path / "s" / "images.zarr" / "masks" / "c" / "3" / "0" / "0" / "0").unlink()
    reopened = CellStore(tmp_path / "s")
    assert reopened.verify() == [
        f"{reopened.path}: chunk images/c/2/0/0/0 (cells 16-23) is damaged (CRC-32C checksum mismatch)",
        f"{reopened.path}: chunk masks/c/3/0/0/0 (cells 24-29) is damaged (missing)",
    ]
    assert reopened.read(0, 16).shape[0] == 16  # undamaged chunks still read
    with pytest.raises(StoreError, match=r"chunk images/c/2/0/0/0 \(cells 16-23\) is damaged"):
        reopened.read(10, 20)
    with pytest.raises(StoreError, match=r"chunk masks/c/3/0/0/0 \(cells 24-29\) is damaged \(missing\)"):
        reopened.read_masks(20, 30)
