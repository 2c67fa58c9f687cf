"""CIF decoding throughput: ifcml's native reader against Bio-Formats on the same file.

Makes a synthetic CIF of N six-channel objects (default 10^5) by cycling the 111 real objects of
shared/data/cif/example.cif (so compression statistics are real), then times, each in a fresh
process: ifcml reading every object (1 and 2 worker processes, each decoding a contiguous range
by random access), and Bio-Formats opening the file and reading every plane (Java, one thread).
It also checks that Bio-Formats decodes the first objects of the synthetic file exactly as ifcml.

Usage: python benchmarks/cif_throughput.py [--objects 100000] [--bioformats-objects N]
Prints a JSON line per measurement and writes benchmarks/results/cif_throughput.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bioformats_reference
from ifcml.io.cif import CifFile, read_cif
from ifcml.io.cif_writer import write_cif

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT.parent / "shared" / "data" / "cif" / "example.cif"

READ_RANGE = """
import sys, time
from ifcml.io.cif import CifFile
path, start, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with CifFile(path) as cif:
    cif.read([0])  # load the compiled decoder before timing
    t0 = time.perf_counter()
    n = 0
    for first in range(start, stop, 256):
        n += len(cif.read(list(range(first, min(first + 256, stop)))))
    print(n, time.perf_counter() - t0)
"""


def make_file(path: Path, n_objects: int) -> None:
    source = list(read_cif(EXAMPLE))
    objects = ((i, o.image, o.mask) for i, o in zip(range(n_objects), itertools.cycle(source)))
    write_cif(path, objects, brightfield=[5])


def time_ifcml(path: Path, n_objects: int, workers: int) -> dict:
    t0 = time.perf_counter()
    with CifFile(path) as cif:
        assert len(cif) == n_objects
    index_s = time.perf_counter() - t0
    bounds = [n_objects * k // workers for k in range(workers + 1)]
    start = time.perf_counter()
    children = [
        subprocess.Popen(
            [sys.executable, "-c", READ_RANGE, str(path), str(a), str(b)], stdout=subprocess.PIPE, text=True
        )
        for a, b in zip(bounds[:-1], bounds[1:], strict=False)
    ]
    decoded = [child.communicate()[0].split() for child in children]
    wall = time.perf_counter() - start
    busiest = max(float(seconds) for _, seconds in decoded)
    size_mb = path.stat().st_size / 1e6
    return {
        "reader": "ifcml", "workers": workers, "objects": n_objects, "index_s": round(index_s, 2),
        "decode_s": round(busiest, 2), "objects_per_s": round(n_objects / busiest),
        "objects_per_s_per_core": round(n_objects / busiest / workers),
        "mb_per_s": round(size_mb / busiest, 1),
        "wall_with_start_s": round(wall, 2),
    }  # fmt: skip


def time_bioformats(path: Path, n_objects: int) -> dict:
    result = bioformats_reference.timing(path, n_objects)
    total = result["open_s"] + result["read_s"]
    size_mb = path.stat().st_size / 1e6 * result["objects"] / n_objects
    return {
        "reader": "bioformats-7.3.1", "workers": 1, "objects": result["objects"], "open_s": result["open_s"],
        "read_s": result["read_s"], "objects_per_s": round(result["objects"] / total),
        "mb_per_s": round(size_mb / total, 1),
    }  # fmt: skip


def check_agreement(path: Path, n: int) -> bool:
    with CifFile(path) as cif:
        ours = [bioformats_reference.digest_pair(o.image, o.mask) for o in cif.read(list(range(n)))]
    return bioformats_reference.digests(path, n) == ours


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--bioformats-objects", type=int, default=None, help="default: all")
    args = parser.parse_args()
    if not EXAMPLE.is_file():
        sys.exit(f"needs the real CIF file at {EXAMPLE}")
    results = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("IFCML_BENCH_TMP")) as tmp:
        path = Path(tmp) / "synthetic.cif"
        t0 = time.perf_counter()
        make_file(path, args.objects)
        size_mb = path.stat().st_size / 1e6
        print(f"wrote {args.objects} objects, {size_mb:.0f} MB in {time.perf_counter() - t0:.0f} s")
        for workers in (1, 2):
            results.append(time_ifcml(path, args.objects, workers))
            print(json.dumps(results[-1]), flush=True)
        reason = bioformats_reference.unavailable_reason()
        if reason:
            print(f"Bio-Formats skipped: {reason}")
        else:
            results.append(time_bioformats(path, args.bioformats_objects or args.objects))
            print(json.dumps(results[-1]), flush=True)
            agree = check_agreement(path, 1000)
            print(f"Bio-Formats decodes the first 1000 objects exactly as ifcml: {agree}")
            results.append({"bioformats_agrees_first_1000": agree})
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "cif_throughput.json").write_text(
        json.dumps({"cores": os.cpu_count(), "results": results}, indent=2)
    )


if __name__ == "__main__":
    main()
