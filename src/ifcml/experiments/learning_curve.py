"""Learning curves from a grid's designs: balanced accuracy against training cells per class.

A spec's ``learning_curve`` runs every (model, channel set) again with each training set cut to
N cells per class (:meth:`ifcml.experiments.design.Design.folds`). Here those designs become one
curve per model and channel set, and the sentences a reader wants from them: which model leads
at each size, and where two curves cross (or that none do within the sizes tried). The x value
is what the folds really trained on (their mean training cells over the number of classes), so
a cap above a class's count does not pretend to more cells than there were.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

SIZE = "train cells/class"  # the comparison table's column: "all" or the cap


def curves(table: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    """One row per design with its point on the curve: model, channel set, size (the cap, or
    "all"), cells (mean training cells per class over its folds), balanced accuracy and its CI.

    ``table`` is the comparison table with ``n classes``; ``folds`` has each fold run's
    ``train_cells``. Designs whose folds did not record their training cells are left out.
    """
    mean_train = folds.groupby("run_id")["train_cells"].mean()
    points = table.assign(cells=table["run_id"].map(mean_train) / table["n classes"])
    points = points.dropna(subset=["cells", "balanced accuracy"])
    order = {size: _size_rank(size) for size in points[SIZE].unique()}
    points = points.assign(rank=points[SIZE].map(order)).sort_values(["channel set", "model", "rank"])
    columns = ["model", "channel set", SIZE, "cells", "balanced accuracy", "BA CI low", "BA CI high"]
    return points[columns].reset_index(drop=True)


def has_curve(table: pd.DataFrame) -> bool:
    """Whether any design is a learning curve's point (a size other than ``all``)."""
    return bool((table[SIZE] != "all").any())


def crossings(points: pd.DataFrame) -> list[str]:
    """Per channel set: the leading model at each size, then each pair of models whose order
    changes between consecutive sizes (said with whether their intervals overlap there), or
    that no curves cross within the sizes tried."""
    sentences = []
    for channel_set, part in points.groupby("channel set", sort=True):
        wide = part.pivot(index=SIZE, columns="model", values="balanced accuracy")
        wide = wide.loc[sorted(wide.index, key=_size_rank)]
        leaders = ", ".join(
            f"{size}: {row.idxmax()} ({row.max():.3f})" for size, row in wide.iterrows() if row.notna().any()
        )
        sentences.append(f"{channel_set}: best balanced accuracy per training cells/class: {leaders}.")
        crossed = []
        models = sorted(wide.columns)
        for a_index, a in enumerate(models):
            for b in models[a_index + 1 :]:
                difference = (wide[a] - wide[b]).dropna()
                for (small, before), (large, after) in zip(
                    difference.items(), list(difference.items())[1:], strict=False
                ):
                    if np.sign(before) != np.sign(after) and before != 0 and after != 0:
                        winner, loser = (a, b) if after > 0 else (b, a)
                        overlap = _overlap(part, large, a, b)
                        crossed.append(
                            f"{winner} overtakes {loser} between {small} and {large} cells/class "
                            f"({'intervals overlap' if overlap else 'intervals apart'} at {large})"
                        )
        sizes = f"{wide.index[0]} to {wide.index[-1]} cells/class"
        if crossed:
            sentences.append(f"{channel_set}: " + "; ".join(crossed) + ".")
        else:
            sentences.append(f"{channel_set}: no curves cross within the sizes tried ({sizes}).")
    return sentences


def figure(points: pd.DataFrame):
    """Balanced accuracy (95 % CI bars) against training cells per class, log scale, one panel
    per channel set and one line per model."""
    sets = sorted(points["channel set"].unique())
    fig, axes = plt.subplots(1, len(sets), figsize=(5.2 * len(sets), 4.2), squeeze=False, sharey=True)
    for ax, channel_set in zip(axes[0], sets, strict=True):
        part = points[points["channel set"] == channel_set]
        for model, line in part.groupby("model", sort=True):
            spread = [
                line["balanced accuracy"] - line["BA CI low"],
                line["BA CI high"] - line["balanced accuracy"],
            ]
            ax.errorbar(
                line["cells"],
                line["balanced accuracy"],
                yerr=spread,
                marker="o",
                ms=4,
                capsize=3,
                label=model,
            )
        ax.set_xscale("log")
        ticks = part.groupby(SIZE)["cells"].median().sort_values()  # a tick per size, plain numbers
        ax.xaxis.set_major_locator(FixedLocator(ticks.to_numpy()))
        ax.xaxis.set_major_formatter(FixedFormatter([f"{v:.0f}" for v in ticks]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("training cells per class (mean over folds)")
        ax.set_title(channel_set)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("balanced accuracy, held-out (95 % CI)")
    return fig


def _overlap(part: pd.DataFrame, size: str, a: str, b: str) -> bool:
    rows = part[part[SIZE] == size].set_index("model")
    return bool(
        rows.loc[a, "BA CI low"] <= rows.loc[b, "BA CI high"]
        and rows.loc[b, "BA CI low"] <= rows.loc[a, "BA CI high"]
    )


def _size_rank(size: str) -> float:
    return np.inf if size == "all" else float(size)
