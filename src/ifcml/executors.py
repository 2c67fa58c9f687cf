"""Where parallel work runs: in-process, local processes, or an existing Dask cluster.

Nothing home-made: a ``concurrent.futures`` executor either way (Dask's through
``Client.get_executor``), so callers submit and collect the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context


@contextmanager
def executor(workers: int, scheduler: str | None) -> Iterator[Executor | None]:
    """None (run in-process) for one local worker, local processes, or the Dask cluster at
    ``scheduler`` (``tcp://HOST:PORT``)."""
    if scheduler:
        from distributed import Client

        with Client(scheduler) as client:
            yield client.get_executor()
    elif workers > 1:  # spawn: TensorFlow and BLAS thread pools do not survive fork
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            yield pool
    else:
        yield None
