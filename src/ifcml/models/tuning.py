"""Hyperparameter search with hyperopt's TPE, scored on training instances only.

The objective is the balanced accuracy of an inner split of the rows it is given (grouped by
instance when there are several, so tuning, too, rewards what generalises across
acquisitions); callers pass only training rows, so a held-out instance never steers the search.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial

import numpy as np
from hyperopt import STATUS_OK, Trials, fmin, space_eval, tpe
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold, StratifiedKFold

from ifcml.models.classical import ModelSpec, fit
from ifcml.progress import SILENT, Progress

INNER_FOLDS = 3
# Random trials before TPE models the scores. hyperopt's default (20) made every budget under 20
# a random search; on the demo's and Jurkat's curves (benchmarks/tuning_budget.py) the gains came
# after trial 20, when TPE began. The first trials are the same random draws either way.
STARTUP_TRIALS = 5


@dataclass(frozen=True)
class Trial:
    number: int
    params: dict
    loss: float  # 1 - mean inner balanced accuracy


def inner_folds(
    labels: np.ndarray, groups: np.ndarray, seed: int, k: int = INNER_FOLDS, every_class: bool = False
):
    """Grouped folds over instances when there are at least two (with ``every_class``, only if
    every inner training part still holds every class), else stratified folds; ``labels`` are
    class codes."""
    n_groups = len(np.unique(groups))
    if n_groups >= 2:
        folds = list(GroupKFold(min(k, n_groups)).split(labels, labels, groups))
        if not every_class or all(len(np.unique(labels[fit])) == len(np.unique(labels)) for fit, _ in folds):
            return folds
    n = max(2, min(k, np.bincount(labels).min()))
    return list(StratifiedKFold(n, shuffle=True, random_state=seed).split(labels, labels))


def inner_loss(spec: ModelSpec, params: dict, seed: int, features, labels, folds) -> float:
    scores = []
    with warnings.catch_warnings():  # an inner fold may lack a class the model predicts
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        for train, test in folds:
            model = fit(spec, params, seed, features[train], labels[train])
            scores.append(balanced_accuracy_score(labels[test], model.predict(features[test])))
    return 1.0 - float(np.mean(scores))


def tune(
    spec: ModelSpec,
    features: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    seed: int,
    max_evals: int,
    progress: Progress = SILENT,
):
    """(best params, every trial) for ``spec`` on these rows; seeded, so repeatable.
    ``progress.trial`` hears of each trial as it finishes."""
    folds = inner_folds(labels, groups, seed)
    if not spec.search:
        loss = inner_loss(spec, {}, seed, features, labels, folds)
        progress.trial(0, loss)
        return {}, [Trial(0, {}, loss)]
    space = spec.space()
    finished = iter(range(max_evals))

    def objective(params):
        loss = inner_loss(spec, params, seed, features, labels, folds)
        progress.trial(next(finished), loss)
        return {"loss": loss, "status": STATUS_OK}

    trials = Trials()
    best = fmin(
        objective,
        space,
        algo=partial(tpe.suggest, n_startup_jobs=STARTUP_TRIALS),
        max_evals=max_evals,
        trials=trials,
        rstate=np.random.default_rng(seed),
        show_progressbar=False,
    )
    record = [
        Trial(
            k,
            space_eval(space, {name: values[0] for name, values in t["misc"]["vals"].items() if values}),
            float(t["result"]["loss"]),
        )
        for k, t in enumerate(trials.trials)
    ]
    return space_eval(space, best), record
