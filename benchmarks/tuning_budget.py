"""How many hyperopt trials a design needs: the best inner balanced accuracy so far, per trial.

For each classical model of an experiment spec (or ``--models``), each channel set and the first
``--folds`` outer folds of the spec's split, the fold's training cells are tuned exactly as the
grid tunes them (:meth:`ifcml.experiments.classical_design.ClassicalDesign.train`: pruning,
balancing, hyperopt TPE scored on the inner split) with a generous budget (``--trials``). The
curve of the best inner score so far against the trial number says where more trials stop
paying: the suggested budget is the smallest number of trials whose best lies within
``--tolerance`` of the generous budget's best, in the median fold. The inner score is what
hyperopt sees; the held-out score is not used to choose the budget (that would tune on the
test folds).

Usage: python benchmarks/tuning_budget.py experiments/jurkat_cell_cycle.yaml --trials 40 --folds 2
Writes benchmarks/results/tuning_budget_<spec>_startup<K>.csv (every trial), a .png of the
curves, and prints one JSON line per (model, channel set) with the suggested budget. Hyperopt's
suggestions do not depend on the budget, so one run's curve is every smaller budget's too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ifcml.experiments.grid import design_of, prepare_data  # noqa: E402
from ifcml.experiments.spec import load_experiment  # noqa: E402
from ifcml.models import tuning  # noqa: E402
from ifcml.models.classical import ModelSpec  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("spec", type=Path)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--folds", type=int, default=2, help="The first K outer folds of the spec's split.")
    parser.add_argument("--models", default=None, help="Comma-separated model names (default: the spec's).")
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument(
        "--startup",
        type=int,
        default=tuning.STARTUP_TRIALS,
        help="Random trials before TPE (hyperopt's own: 20).",
    )
    args = parser.parse_args()
    tuning.STARTUP_TRIALS = args.startup  # what the grid's tuning reads; the results name it
    spec = load_experiment(args.spec)
    wanted = args.models.split(",") if args.models else None
    specs = spec.model_specs()
    models = [
        k for k, m in enumerate(specs) if isinstance(m, ModelSpec) and (wanted is None or m.name in wanted)
    ]
    prepare_data(spec)  # the gating table, when the spec gates its cells
    rows = []
    for k in models:
        model = specs[k]
        for channel_set in spec.channel_sets:
            design = design_of(spec, k, channel_set)  # as the grid reads it: labels, merges, gates
            for fold in design.folds(spec.split, spec.seed)[: args.folds]:
                started = time.perf_counter()
                trained = design.train(fold.train, spec.seed, args.trials)
                seconds = time.perf_counter() - started
                scores = [1.0 - t.loss for t in sorted(trained.trials, key=lambda t: t.number)]
                for number, (score, best) in enumerate(
                    zip(scores, np.maximum.accumulate(scores), strict=True)
                ):
                    where = {"model": model.name, "channel_set": channel_set, "fold": fold.name}
                    rows.append(
                        where | {"trial": number + 1, "inner_balanced_accuracy": score, "best_so_far": best,
                                 "fold_seconds": seconds}
                    )  # fmt: skip
    table = pd.DataFrame(rows)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"tuning_budget_{spec.name}_startup{args.startup}"
    table.to_csv(stem.with_suffix(".csv"), index=False)
    for (model, channel_set), part in table.groupby(["model", "channel_set"], sort=False):
        print(json.dumps(suggestion(part, args.tolerance) | {"model": model, "channel_set": channel_set}))
    draw(table, stem.with_suffix(".png"))


def suggestion(part: pd.DataFrame, tolerance: float) -> dict:
    """The smallest budget whose best-so-far is within ``tolerance`` of the last trial's best
    in the median fold, with the curve's values at a few budgets."""
    curves = part.pivot(index="trial", columns="fold", values="best_so_far")
    shortfall = (curves.iloc[-1] - curves).median(axis=1)  # per trial: how far below the final best
    enough = int(shortfall[shortfall <= tolerance].index.min())
    shown = {
        f"best_at_{n}": round(float(curves.loc[n].median()), 4)
        for n in (1, 3, 5, 10, 20, 30, 40)
        if n in curves.index
    }
    per_trial = part.groupby("fold")["fold_seconds"].first().sum() / len(part)  # per trial and fold
    return {"suggested_budget": enough, "trials": int(curves.index.max()), **shown,
            "seconds_per_trial": round(float(per_trial), 2)}  # fmt: skip


def draw(table: pd.DataFrame, path: Path) -> None:
    designs = list(table.groupby(["model", "channel_set"], sort=False))
    figure, axes = plt.subplots(1, len(designs), figsize=(4.5 * len(designs), 3.8), squeeze=False)
    for ax, ((model, channel_set), part) in zip(axes[0], designs, strict=True):
        for fold, curve in part.groupby("fold"):
            ax.plot(curve["trial"], curve["inner_balanced_accuracy"], ".", alpha=0.4)
            ax.plot(curve["trial"], curve["best_so_far"], "-", label=f"best so far, {fold}")
        ax.set_title(f"{model} | {channel_set}")
        ax.set_xlabel("hyperopt trial")
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("inner balanced accuracy")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
