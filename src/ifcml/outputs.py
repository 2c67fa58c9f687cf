"""What ifcml writes: one writer per output, and ``--overwrite`` only replaces ifcml's own.

A claim is an exclusive ``flock`` on a lock file beside the output (``.NAME.lock``, holding the
writer's pid). The kernel releases it when the writer exits, however it exits, so a killed
command never leaves a stale claim; a second command on the same output is refused at once
(or, for a grid preparing its data, waits) instead of sharing temporary files with the first.
``flock`` works on local disks and on NFSv4; two machines writing one output on an older
network filesystem are not protected.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq

from ifcml.errors import IfcmlError


class OutputError(IfcmlError):
    """An output is being written by another process, or is not ifcml's to replace."""


@contextmanager
def claimed(out: Path, wait: bool = False) -> Iterator[None]:
    """Hold the claim on ``out`` while the block writes it (see the module docstring)."""
    lock = out.parent / f".{out.name}.lock"
    out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.pread(handle, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise OutputError(
                f"{out}: is being written by another ifcml (pid {holder}); wait for it, or write elsewhere"
            ) from None
        if _same_file(lock, handle):
            break
        os.close(handle)  # the holder removed the lock file as we opened it: take the new one
    os.ftruncate(handle, 0)
    os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(handle)


def _same_file(path: Path, handle: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle).st_ino
    except FileNotFoundError:
        return False


def is_ifcml_table(path: Path) -> bool:
    """A Parquet table with ifcml's cell ids (a feature table or a pruned one)."""
    try:
        return path.is_file() and "Metadata_cell_id" in pq.read_schema(path).names
    except Exception:  # not Parquet at all
        return False


def check_replaceable(path: Path, is_ours: bool, what: str) -> None:
    """Refuse to replace an existing ``path`` unless it is ``what`` ifcml wrote (``is_ours``)."""
    if path.exists() and not is_ours:
        kind = "folder" if path.is_dir() else "file"
        raise OutputError(
            f"{path}: an existing {kind} that is not {what}; --overwrite replaces only ifcml's own"
        )


@contextmanager
def writing(out: Path, overwrite: bool, is_ours: Callable[[Path], bool], what: str) -> Iterator[None]:
    """Claim ``out`` and, inside the claim, refuse an existing one unless ``overwrite`` is given
    and it is ``what`` ifcml wrote (``is_ours(out)``)."""
    with claimed(out):
        if out.exists():
            if not overwrite:
                raise OutputError(
                    f"{out}: already exists; choose another --out or pass --overwrite to replace it"
                )
            check_replaceable(out, is_ours(out), what)
        yield


def replace_atomically(out: Path, write: Callable[[Path], None]) -> Path:
    """Have ``write`` fill a private temporary file (or folder) beside ``out``, then rename it
    into place: readers see the old output or the new one, never half of one, and a failed
    write leaves nothing behind. The temporary name ends as ``out``'s does (``.weights.h5``,
    ``.keras``, ``.npy``: some writers choose the format by it). A folder replaces only a
    missing or empty ``out``. Returns ``out``."""
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    try:
        write(tmp)
        tmp.replace(out)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return out
