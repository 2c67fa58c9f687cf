"""The native CIF reader and writer: exact on the real file, exact round trips."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SHARED_DATA
from ifcml.io.cif import CifError, CifFile, cif_metadata, read_cif
from ifcml.io.cif_writer import write_cif
from ifcml.io.store import CellStore

CIF_DIR = SHARED_DATA / "cif"


@pytest.fixture(scope="module")
def example():
    path = CIF_DIR / "example.cif"
    if not path.is_file():
        pytest.skip(f"real CIF file not found at {path}")
    reference = np.load(CIF_DIR / "example_cif_reference.npz")
    return path, {key: reference[key] for key in reference.files}


def test_every_object_of_the_real_file_equals_the_bioformats_decoding(example):
    path, reference = example
    objects = list(read_cif(path))
    assert [o.object_id for o in objects] == list(range(111))
    images_equal = sum(np.array_equal(o.image, reference[f"img_{o.index}"]) for o in objects)
    masks_equal = sum(np.array_equal(o.mask, reference[f"msk_{o.index}"]) for o in objects)
    assert (images_equal, masks_equal) == (111, 111)
    assert all(o.image.dtype == np.uint16 and o.mask.dtype == np.uint8 for o in objects)


def test_hashes_ids_and_raw_tags_match_the_reference_json(example):
    path, _ = example
    info = json.loads((CIF_DIR / "example_cif_reference.json").read_text())
    with CifFile(path) as cif:
        means, stds = cif.backgrounds()
        for entry in info["objects"]:
            obj = cif[entry["index"]]
            assert obj.object_id == entry["object_id_tag33003"]
            assert obj.image.shape == (entry["C"], entry["H"], entry["W"])
            assert hashlib.sha256(obj.image.astype("<u2").tobytes()).hexdigest() == entry["img_sha256"]
            assert hashlib.sha256(obj.mask.tobytes()).hexdigest() == entry["msk_sha256"]
            np.testing.assert_array_equal(means[obj.index], entry["raw_tags"]["33052"])
            np.testing.assert_array_equal(stds[obj.index], entry["raw_tags"]["33053"])


def test_metadata_without_decoding(example):
    path, _ = example
    meta = cif_metadata(path)
    assert meta.n_objects == 111 and meta.n_channels == 6
    assert meta.channels == [1, 2, 3, 4, 5, 6]
    assert meta.brightfield == [5]
    assert meta.magnification == 40 and meta.instrument == "IS100-Lab"
    assert "ChannelInUseIndicators" in meta.acquisition_xml
    with CifFile(path) as cif:
        means, stds = cif.backgrounds()
        shapes = cif.shapes()
    assert means.shape == (111, 6) and 200 < means[0, 4] < 250 and (stds > 0).all()
    assert shapes[0] == (43, 46) and shapes[110] == (45, 44)


def test_random_access_does_not_need_earlier_objects(example):
    path, reference = example
    with CifFile(path) as cif:
        for index in (110, 0, 57, 4):
            obj = cif[index]
            assert obj.index == index and obj.object_id == index
            np.testing.assert_array_equal(obj.image, reference[f"img_{index}"])
            np.testing.assert_array_equal(obj.mask, reference[f"msk_{index}"])
        with pytest.raises(IndexError):
            cif[111]


def test_ingest_cif_keeps_masks_ids_and_picked_channels(example, tmp_path, ifcml):
    path, reference = example
    out = tmp_path / "s"
    code, _, err = ifcml("ingest", path, "--channels", "5:BF,6:DF", "--label", "sorted", "--out", out)
    assert code == 0, err
    store = CellStore(out)
    assert store.n_cells == 111 and store.channels == ["BF", "DF"]
    assert store.cells["instance"].unique().tolist() == ["example"]
    assert store.cells["object_number"].tolist() == list(range(111))
    row = store.cells.iloc[4]
    h, w = row["height"], row["width"]
    np.testing.assert_array_equal(store.images[4][:, :h, :w], reference["img_4"][[4, 5]])
    np.testing.assert_array_equal(store.masks[4][:, :h, :w], reference["msk_4"][[4, 5]])


@st.composite
def cif_objects(draw):
    n_channels = draw(st.integers(1, 12))
    objects = []
    for object_id in range(draw(st.integers(1, 4))):
        h, w = draw(st.integers(1, 200)), draw(st.integers(1, 200))
        seed = draw(st.integers(0, 2**32 - 1))
        rng = np.random.default_rng(seed)
        style = draw(st.sampled_from(["uniform", "smooth", "extreme"]))
        if style == "uniform":
            image = rng.integers(0, 65536, (n_channels, h, w), dtype=np.uint16)
        elif style == "smooth":
            image = rng.normal(500, 40, (n_channels, h, w)).clip(0, 65535).astype(np.uint16)
        else:
            image = rng.choice(np.array([0, 1, 65534, 65535], np.uint16), (n_channels, h, w))
        mask = rng.choice(np.array([0, 1, 2, 3], np.uint8), (n_channels, h, w), p=[0.5, 0.4, 0.05, 0.05])
        objects.append((object_id * 7 + 3, image, mask))
    return objects


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(objects=cif_objects())
def test_round_trip_of_random_objects(tmp_path_factory, objects):
    path = tmp_path_factory.mktemp("rt") / "random.cif"
    n_channels = objects[0][1].shape[0]
    channels = list(range(1, 13))[-n_channels:]
    assert write_cif(path, objects, channels=channels, brightfield=channels[:1]) == len(objects)
    back = list(read_cif(path))
    assert len(back) == len(objects)
    for (object_id, image, mask), got in zip(objects, back, strict=True):
        assert got.object_id == object_id
        np.testing.assert_array_equal(got.image, image)
        np.testing.assert_array_equal(got.mask, mask)
    meta = cif_metadata(path)
    assert meta.channels == channels and meta.brightfield == channels[:1]


def test_rewritten_real_file_reads_back_identically(example, tmp_path):
    path, _ = example
    objects = list(read_cif(path))
    copy = tmp_path / "copy.cif"
    write_cif(copy, objects, brightfield=[5])
    for a, b in zip(objects, read_cif(copy), strict=True):
        assert a.object_id == b.object_id
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.mask, b.mask)


def test_not_a_cif_file(tmp_path):
    bad = tmp_path / "x.cif"
    bad.write_bytes(b"MM\x00*" + b"\x00" * 100)
    with pytest.raises(CifError, match="x.cif.*little-endian"):
        CifFile(bad)
    with pytest.raises(CifError, match="cannot open"):
        CifFile(tmp_path / "missing.cif")
