"""Running a command (the real ``ifcml``, or a benchmark's own script) in a child process pinned
to some cores, for benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time


def run_child(argv: list[str], cores: int) -> tuple[float, float]:
    """Run ``argv`` on ``cores`` cores; return (wall s, peak RSS MiB of it or its largest worker)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=errors,
            preexec_fn=lambda: os.sched_setaffinity(0, range(cores)),
        )
        _, status, usage = os.wait4(child.pid, 0)  # this child's usage (and its reaped workers')
        wall = time.perf_counter() - start
        if status:
            errors.seek(0)
            raise RuntimeError(f"`{' '.join(argv[1:4])}` failed: {errors.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def run_ifcml(args: list[str], cores: int) -> tuple[float, float]:
    """``ifcml ARGS`` through :func:`run_child`."""
    return run_child([sys.executable, "-m", "ifcml.cli", *args], cores)
