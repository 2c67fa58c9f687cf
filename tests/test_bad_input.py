"""Bad input: one clear error line naming the file and what was expected, and no partial output."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import write_montage


def _tiles(n=4, h=10, w=10):
    return np.random.default_rng(0).integers(1, 999, (n, h, w)).astype(np.uint16)


def _assert_clean_failure(code, err, out_dir, *must_mention):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for text in must_mention:
        assert str(text) in lines[0], (text, lines[0])
    assert not out_dir.exists()
    assert not list(out_dir.parent.glob(f".{out_dir.name}*")), "temporary output left behind"


def test_missing_folder(tmp_path, ifcml):
    missing = tmp_path / "nope"
    code, _, err = ifcml("ingest", missing, "--grid", "2x2", "--out", tmp_path / "s")
    _assert_clean_failure(code, err, tmp_path / "s", missing, "no such file or folder")


def test_montage_not_divisible_by_grid(tmp_path, ifcml):
    write_montage(tmp_path / "acq" / "A" / "Ch1_M.tif", _tiles(4, 10, 10), (2, 2))  # 20x20 pixels
    code, _, err = ifcml("ingest", tmp_path / "acq", "--grid", "3x3", "--out", tmp_path / "s")
    _assert_clean_failure(code, err, tmp_path / "s", "Ch1_M.tif", "20x20", "3x3")


def test_channel_missing_for_some_montages(tmp_path, ifcml):
    for label in ("A", "B"):
        write_montage(tmp_path / "acq" / label / "Ch1_M.tif", _tiles(), (2, 2))
    write_montage(tmp_path / "acq" / "A" / "Ch6_M.tif", _tiles(), (2, 2))
    code, _, err = ifcml("ingest", tmp_path / "acq", "--grid", "2x2", "--out", tmp_path / "s")
    _assert_clean_failure(code, err, tmp_path / "s", tmp_path / "acq" / "B", "Ch6_M.tif")


def test_unreadable_tiff(tmp_path, ifcml):
    write_montage(tmp_path / "acq" / "A" / "Ch1_M.tif", _tiles(), (2, 2))
    bad = tmp_path / "acq" / "B" / "Ch1_M.tif"
    bad.parent.mkdir()
    bad.write_bytes(b"II*\x00garbage that is not a TIFF")
    code, _, err = ifcml("ingest", tmp_path / "acq", "--grid", "2x2", "--out", tmp_path / "s")
    _assert_clean_failure(code, err, tmp_path / "s", bad, "not a readable TIFF")


def test_label_folder_with_no_images(tmp_path, ifcml):
    write_montage(tmp_path / "acq" / "A" / "Ch1_M.tif", _tiles(), (2, 2))
    (tmp_path / "acq" / "Empty").mkdir()
    code, _, err = ifcml("ingest", tmp_path / "acq", "--grid", "2x2", "--out", tmp_path / "s")
    _assert_clean_failure(code, err, tmp_path / "s", tmp_path / "acq" / "Empty", "holds no montage")


def test_existing_store_is_not_overwritten_unless_asked(tmp_path, ifcml):
    write_montage(tmp_path / "acq" / "A" / "Ch1_M.tif", _tiles(), (2, 2))
    out = tmp_path / "s"
    assert ifcml("ingest", tmp_path / "acq", "--grid", "2x2", "--out", out)[0] == 0
    before = (out / "meta.json").read_text()
    code, _, err = ifcml("ingest", tmp_path / "acq", "--grid", "1x1", "--out", out)
    assert code == 2 and "already exists" in err and str(out) in err
    assert (out / "meta.json").read_text() == before
    code, _, err = ifcml("ingest", tmp_path / "acq", "--grid", "1x1", "--out", out, "--overwrite")
    assert code == 0, err
    assert (out / "meta.json").read_text() != before
    assert not list(tmp_path.glob(".s.*"))


@pytest.mark.parametrize("spec", ["3-BF", "3:BF,3:DF", "3:BF,4:BF", "x:BF"])
def test_bad_channel_map(tmp_path, ifcml, spec):
    write_montage(tmp_path / "acq" / "A" / "Ch3_M.tif", _tiles(), (2, 2))
    code, _, err = ifcml(
        "ingest", tmp_path / "acq", "--grid", "2x2", "--channels", spec, "--out", tmp_path / "s"
    )
    _assert_clean_failure(code, err, tmp_path / "s", "--channels")


def test_requested_channel_absent(tmp_path, ifcml):
    write_montage(tmp_path / "acq" / "A" / "Ch3_M.tif", _tiles(), (2, 2))
    code, _, err = ifcml(
        "ingest", tmp_path / "acq", "--grid", "2x2", "--channels", "3:BF,9:DF", "--out", tmp_path / "s"
    )
    _assert_clean_failure(code, err, tmp_path / "s", "Ch9", "Ch3")


def _export(root, objects=(1, 2), channels=(1, 6)):
    import tifffile

    (root / "blast").mkdir(parents=True)
    for number in objects:
        for k in channels:
            tifffile.imwrite(root / "blast" / f"s_{number}_Ch{k}.ome.tif", _tiles(1)[0])


def test_tiff_export_object_missing_a_channel(tmp_path, ifcml):
    _export(tmp_path / "sample")
    (tmp_path / "sample" / "blast" / "s_2_Ch6.ome.tif").unlink()
    code, _, err = ifcml("ingest", tmp_path / "sample", "--out", tmp_path / "s")
    _assert_clean_failure(code, err, tmp_path / "s", "object 2", "s_2_Ch6.ome.tif")


def test_tiff_export_unreadable_file_found_by_a_reading_process(tmp_path, ifcml):
    _export(tmp_path / "sample")
    bad = tmp_path / "sample" / "blast" / "s_1_Ch6.ome.tif"
    bad.write_bytes(b"not a tiff at all")
    code, _, err = ifcml("ingest", tmp_path / "sample", "--out", tmp_path / "s")
    _assert_clean_failure(code, err, tmp_path / "s", bad, "not a readable TIFF")


def test_label_given_for_a_folder_source(tmp_path, ifcml):
    _export(tmp_path / "sample")
    code, _, err = ifcml("ingest", tmp_path / "sample", "--label", "x", "--out", tmp_path / "s")
    _assert_clean_failure(code, err, tmp_path / "s", "--label applies to CIF files")
