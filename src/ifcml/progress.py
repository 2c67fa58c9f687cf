"""Hooks that long steps call as they go, so that people and MLflow can watch them.

A hyperopt search reports each trial, a network each epoch. The steps do not know who listens:
``ifcml train`` draws progress bars, the grid logs the values to the fold's MLflow run (so its
charts move while the grid runs), and tests record them. Kept at the ground floor so that
models and experiments alike may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field


def _ignore(*_args) -> None:
    return None


@dataclass(frozen=True)
class Progress:
    """``trial(number, loss)`` after each hyperparameter trial (loss: 1 - inner balanced
    accuracy); ``epoch(number, logs)`` after each training epoch (0-based, Keras' logs)."""

    trial: Callable[[int, float], None] = field(default=_ignore)
    epoch: Callable[[int, dict[str, float]], None] = field(default=_ignore)

    def __add__(self, other: Progress) -> Progress:
        """Both listeners, in order."""

        def trial(number: int, loss: float) -> None:
            self.trial(number, loss)
            other.trial(number, loss)

        def epoch(number: int, logs: dict[str, float]) -> None:
            self.epoch(number, logs)
            other.epoch(number, logs)

        return Progress(trial, epoch)


SILENT = Progress()


# A factory of counting callbacks for steps that move through cells: ``with bars(total, "ingest")
# as update: update(n)``. The CLI passes progress bars; the library's default counts nothing.
Bars = Callable[[int | None, str], AbstractContextManager[Callable[[int], None]]]


def counting(on_cells: Callable[[int], None] | None) -> Bars:
    """Bars that all tell ``on_cells`` (or nobody)."""

    @contextmanager
    def bars(total: int | None, what: str) -> Iterator[Callable[[int], None]]:
        yield on_cells or _ignore

    return bars


no_bars = counting(None)
