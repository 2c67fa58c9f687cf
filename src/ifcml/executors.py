"""Where parallel work runs: in-process, local processes, or an existing Dask cluster.

Nothing home-made: a ``concurrent.futures`` executor either way (Dask's through
``Client.get_executor``), so callers submit and collect the same way everywhere. Local worker
processes die with the process that started them, even when it is killed with SIGKILL (the
kernel's parent-death signal on Linux, a watchdog thread elsewhere): a killed ``ifcml`` never
leaves workers measuring cells for nobody.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing import get_context

from ifcml.errors import InputError

PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


@dataclass(frozen=True)
class Running:
    """How a job over chunks of cells runs: on ``workers`` local processes (1: in this process)
    or the Dask cluster at ``scheduler``; whether it continues an interrupted run (``resume``)
    and may replace a finished output of ifcml's (``overwrite``); who hears of each chunk's cells
    (``on_cells``)."""

    workers: int = 1
    scheduler: str | None = None
    resume: bool = False
    overwrite: bool = False
    on_cells: Callable[[int], None] | None = None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and ``taskset``
    narrow), the default number of local workers."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity outside Linux
        return os.cpu_count() or 1


@contextmanager
def executor(workers: int, scheduler: str | None, jobs: int | None = None) -> Iterator[Executor | None]:
    """None (run in-process) for one local worker, local processes, or the Dask cluster at
    ``scheduler`` (``tcp://HOST:PORT``). No more local processes start than there are ``jobs``:
    a job of one chunk runs in this process, without a worker's start-up."""
    if jobs is not None:
        workers = min(workers, jobs)
    if scheduler:
        with connect(scheduler) as client:
            yield client.get_executor()
    elif workers > 1:  # spawn: TensorFlow and BLAS thread pools do not survive fork
        pool = ProcessPoolExecutor(
            workers, mp_context=get_context("spawn"), initializer=die_with_parent, initargs=(os.getpid(),)
        )
        with pool:
            yield pool
    else:
        yield None


def connect(scheduler: str, timeout_s: int = 5):
    """A Dask client of the scheduler at ``scheduler``, or an error naming it."""
    from distributed import Client

    if not re.fullmatch(r"(tcp|tls|ws|wss)://[\w.\-\[\]:]+:\d+", scheduler):
        raise InputError(f"--scheduler: {scheduler!r} is not a Dask scheduler address like tcp://HOST:PORT")
    try:
        return Client(scheduler, timeout=f"{timeout_s}s")
    except (OSError, TimeoutError, ValueError) as exc:
        raise InputError(
            f"--scheduler: no Dask scheduler answers at {scheduler} within {timeout_s} s ({exc})"
        ) from exc


def check_scheduler(scheduler: str | None) -> None:
    """Before any work: is a scheduler given, and does it answer?"""
    if scheduler:
        connect(scheduler).close()


def die_with_parent(parent: int) -> None:
    """Run in each worker as it starts: end this process when ``parent`` ends."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0:
            if os.getppid() != parent:  # the parent died before the signal was armed
                os._exit(1)
            return
    threading.Thread(target=_watch, args=(parent,), daemon=True, name="die-with-parent").start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)
