"""Bio-Formats (the reference decoder) reads files written by ifcml exactly as ifcml does."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ifcml.io.cif import read_cif
from ifcml.io.cif_writer import write_cif

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import bioformats_reference  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("n_channels", [1, 6, 12])
def test_bioformats_reads_written_files_exactly(tmp_path, n_channels):
    reason = bioformats_reference.unavailable_reason()
    if reason:
        pytest.skip(reason)
    rng = np.random.default_rng(n_channels)
    objects = []
    for object_id in range(40):
        h, w = rng.integers(1, 201, 2)
        image = rng.integers(0, 65536, (n_channels, h, w), dtype=np.uint16)
        if object_id % 2:
            image = rng.normal(400, 60, (n_channels, h, w)).clip(0, 65535).astype(np.uint16)
        mask = rng.choice(np.array([0, 1, 2, 3], np.uint8), (n_channels, h, w), p=[0.6, 0.3, 0.05, 0.05])
        objects.append((object_id, image, mask))
    path = tmp_path / "written.cif"
    write_cif(path, objects, channels=list(range(1, n_channels + 1)))
    expected = [bioformats_reference.digest_pair(image, mask) for _, image, mask in objects]
    assert bioformats_reference.digests(path) == expected
    assert [o.object_id for o in read_cif(path)] == list(range(40))
