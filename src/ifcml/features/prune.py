"""Pruning the feature table with pycytominer, as the recipe's ``pruning`` section says.

``select_features`` is fitted on cells and returns the kept column names; an evaluation fits
it on the training instances only and applies the list to the held-out one (a feature list
chosen on all cells would leak the held-out instance into training). ``normalise`` works per
instance (each acquisition against itself) or with statistics from given reference cells.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import yaml
from pycytominer import aggregate, feature_select, normalize
from pycytominer.operations import noise_removal

from ifcml.cells import INSTANCE, LABEL, feature_columns, metadata_columns
from ifcml.errors import InputError
from ifcml.features.recipe import Pruning, Recipe
from ifcml.features.table import read_features
from ifcml.outputs import is_ifcml_table, replace_atomically, writing


def select_features(table: pd.DataFrame, pruning: Pruning, seed: int = 0) -> list[str]:
    """The features that survive the recipe's operations, in table order."""
    if table.empty:
        raise InputError("cannot select features from an empty table")
    cells = (
        table.sample(n=pruning.sample_cells, random_state=seed)
        if len(table) > pruning.sample_cells
        else table
    )
    kept = feature_columns(cells)
    for operation in pruning.operations:
        if operation == "noise_removal":
            kept = _stable_across_acquisitions(cells, kept, pruning.noise_removal_stdev_cutoff)
            continue
        selected = feature_select(
            cells[kept],
            features=kept,
            operation=operation,
            na_cutoff=pruning.na_cutoff,
            freq_cut=pruning.freq_cut,
            unique_cut=pruning.unique_cut,
            corr_threshold=pruning.corr_threshold,
            corr_method=pruning.corr_method,
        )
        kept = [c for c in kept if c in selected.columns]
        if operation == "blocklist" and pruning.blocklist:
            kept = [c for c in kept if c not in set(pruning.blocklist)]
    return kept


def _stable_across_acquisitions(cells: pd.DataFrame, features: list[str], cutoff: float) -> list[str]:
    """Drop features whose per-label profile varies across instances (replicate acquisitions).

    Per (instance, label) mean profiles are standardised, then pycytominer's noise removal
    drops features whose mean within-label standard deviation exceeds ``cutoff``. Without a
    label seen in two instances there are no replicates, and nothing is dropped.
    """
    if LABEL not in cells or INSTANCE not in cells:
        return features
    replicated = cells.groupby(LABEL)[INSTANCE].nunique()
    labels = replicated[replicated >= 2].index
    if len(labels) == 0:
        return features
    subset = cells[cells[LABEL].isin(labels)]
    with warnings.catch_warnings():  # pycytominer builds its frame column by column
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        profiles = aggregate(
            subset, strata=[INSTANCE, LABEL], features=features, operation="mean", output_type=None
        )
    profiles = normalize(
        profiles, features=features, meta_features=[INSTANCE, LABEL], method="standardize", output_type=None
    )
    noisy = set(
        noise_removal(
            profiles, noise_removal_perturb_groups=LABEL, features=features, noise_removal_stdev_cutoff=cutoff
        )
    )
    return [f for f in features if f not in noisy]


def normalise(table: pd.DataFrame, features: list[str], pruning: Pruning) -> pd.DataFrame:
    """The table with ``features`` normalised as the recipe says (``by: all`` uses every row)."""
    method = pruning.normalisation.method
    if method == "none":
        return table
    meta = metadata_columns(table)

    def run(part: pd.DataFrame) -> pd.DataFrame:
        return normalize(
            part[meta + features], features=features, meta_features=meta, method=method, output_type=None
        )

    if pruning.normalisation.by == "all":
        return run(table)
    return pd.concat([run(part) for _, part in table.groupby(INSTANCE, sort=False)]).loc[table.index]


def write_pruned(table: Path, out: Path, recipe: Recipe, overwrite: bool = False) -> tuple[list[str], int]:
    """``ifcml prune``: ``table`` pruned (and normalised) with ``recipe``'s pruning fitted on ALL
    its cells, into ``out``, with the kept features (``.kept.txt``) and the recipe
    (``.recipe.yaml``) beside it; returns the kept features and how many there were.

    For exploring a data set: evaluations refit pruning on each split's training instances.
    """
    cells = read_features(table)
    metadata = metadata_columns(cells)
    with writing(out, overwrite, is_ifcml_table, "an ifcml feature table"):
        kept = select_features(cells, recipe.pruning)
        pruned = normalise(cells[metadata + kept], kept, recipe.pruning)
        replace_atomically(out, lambda tmp: pruned.to_parquet(tmp, index=False))
    out.with_suffix(".kept.txt").write_text("\n".join(kept) + "\n")
    out.with_suffix(".recipe.yaml").write_text(yaml.safe_dump(recipe.model_dump(), sort_keys=False))
    return kept, len(cells.columns) - len(metadata)
