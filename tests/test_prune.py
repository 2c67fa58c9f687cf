"""pycytominer pruning driven by the recipe, and the ``ifcml prune`` command."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ifcml.features.prune import normalise, select_features
from ifcml.features.recipe import Pruning


def _table(seed: int = 0) -> pd.DataFrame:
    """Three instances x two labels; each column built to be kept or dropped for one reason."""
    rng = np.random.default_rng(seed)
    n = 600
    instance = np.repeat(["a", "b", "c"], n // 3)
    label = np.tile(["blast", "normal"], n // 2)
    signal = (label == "blast") * 2.0 + rng.normal(size=n)
    offset = {"a": -3.0, "b": 0.0, "c": 3.0}
    table = pd.DataFrame(
        {
            "Metadata_cell_id": np.arange(n),
            "Metadata_instance": instance,
            "Metadata_label": label,
            "Cells_AreaShape_Area": signal,
            "Cells_AreaShape_Perimeter": signal * 3 + 1e-3 * rng.normal(size=n),  # correlated > 0.95
            "Cells_Intensity_MeanIntensity_BF": rng.normal(size=n),
            "Cells_Intensity_MinIntensity_BF": np.r_[np.ones(n - 3), [2.0, 3.0, 4.0]],  # near-zero variance
            "Cells_Texture_Contrast_BF_3_00_256": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
            "Cells_Granularity_1_BF": np.array([offset[i] for i in instance]) + 0.1 * rng.normal(size=n),
            "Nuclei_Correlation_Manders_AGP_DNA": rng.normal(size=n),  # in pycytominer's default blocklist
            "Cells_Intensity_StdIntensity_BF": rng.normal(size=n),  # in the recipe's blocklist
        }
    )
    return table


def test_each_operation_drops_what_it_should():
    kept = select_features(_table(), Pruning(blocklist=["Cells_Intensity_StdIntensity_BF"]))
    pair = {"Cells_AreaShape_Area", "Cells_AreaShape_Perimeter"}  # one of the correlated pair stays
    assert len(pair & set(kept)) == 1
    assert set(kept) - pair == {"Cells_Intensity_MeanIntensity_BF"}


def test_operations_can_be_turned_off():
    kept = select_features(_table(), Pruning(operations=["drop_na_columns"]))
    assert "Cells_Texture_Contrast_BF_3_00_256" not in kept
    assert "Cells_Granularity_1_BF" in kept and "Cells_AreaShape_Perimeter" in kept


def test_noise_removal_needs_replicate_acquisitions():
    one_instance = _table()
    one_instance["Metadata_instance"] = "a"  # no label seen in two instances: nothing to compare
    kept = select_features(one_instance, Pruning(operations=["noise_removal"]))
    assert "Cells_Granularity_1_BF" in kept


def test_normalisation_per_instance():
    table = _table()
    features = ["Cells_AreaShape_Area", "Cells_Granularity_1_BF"]
    done = normalise(table, features, Pruning(normalisation={"method": "standardize", "by": "instance"}))
    means = done.groupby("Metadata_instance")[features].mean()
    np.testing.assert_allclose(means.to_numpy(), 0, atol=1e-9)
    assert list(done.index) == list(table.index)


def test_prune_command_writes_table_and_kept_list(tmp_path, ifcml):
    table = _table()
    table.to_parquet(tmp_path / "f.parquet")
    code, out, err = ifcml("prune", tmp_path / "f.parquet", "--out", tmp_path / "p.parquet")
    assert code == 0, err
    pruned = pd.read_parquet(tmp_path / "p.parquet")
    kept = (tmp_path / "p.kept.txt").read_text().split()
    assert list(pruned.columns) == ["Metadata_cell_id", "Metadata_instance", "Metadata_label", *kept]
    assert (tmp_path / "p.recipe.yaml").exists()
    code, _, err = ifcml("prune", tmp_path / "f.parquet", "--out", tmp_path / "p.parquet")
    assert code == 2 and "already exists" in err
