"""Per-cell CellProfiler measurements: naming, isolation, failed cells, resume, recipes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from cp_measure.core.measurecolocalization import (
    get_correlation_manders_fold,
    get_correlation_pearson,
    get_correlation_rwc,
)
from cp_measure.core.measuregranularity import get_granularity
from cp_measure.core.measureobjectintensity import get_intensity
from cp_measure.core.measureobjectintensitydistribution import get_radial_distribution, get_radial_zernikes
from cp_measure.core.measureobjectsizeshape import get_sizeshape, get_zernike
from cp_measure.core.measuretexture import get_texture
from scipy.ndimage import distance_transform_edt

from ifcml.cells import FAILED
from ifcml.errors import IfcmlError
from ifcml.executors import Running
from ifcml.features import zernike
from ifcml.features.correlation import correlations
from ifcml.features.distance import distance_to_background
from ifcml.features.granularity import granularity
from ifcml.features.intensity import intensity
from ifcml.features.measure import measure_cells
from ifcml.features.objects import cell_objects
from ifcml.features.radial import radial_distribution
from ifcml.features.recipe import Recipe, load_recipe
from ifcml.features.sizeshape import size_shape
from ifcml.features.table import measure_images, read_features, write_features
from ifcml.features.texture import texture
from ifcml.features.tiling import Layout, tile, tile_labels
from ifcml.features.wanted import Wanted

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _cells(store, index):
    images = store.images[:][index]
    sizes = store.cells[["height", "width"]].to_numpy()[index]
    return images, sizes


def test_default_recipe_file_is_the_builtin_default():
    assert load_recipe(ROOT / "features" / "default.yaml") == Recipe()


def test_misspelt_recipe_key_is_named_with_its_path(tmp_path):
    bad = tmp_path / "r.yaml"
    bad.write_text("measurements:\n  texture:\n    scale: [3]\n")
    with pytest.raises(IfcmlError, match=r"r\.yaml: measurements\.texture\.scale: Extra inputs"):
        load_recipe(bad)


def test_a_cell_measured_alone_equals_the_same_cell_in_a_batch(jurkat_store):
    """No measurement may see the other cells of a batch: values agree to round-off (moments
    are summed in montage coordinates, so their last bits may differ)."""
    recipe = Recipe()
    index = np.r_[0:24, 1000 : 24 + 1000]  # G1 and S-phase cells: different montages
    images, sizes = _cells(jurkat_store, index)
    cells, expanded = cell_objects(images, None, sizes, ["BF", "DF"], recipe)
    batch = measure_cells(images, ["BF", "DF"], cells, expanded, recipe)
    assert len(batch) > 400
    for i in (0, 5, 23, 24, 47):
        alone = measure_cells(images[i : i + 1], ["BF", "DF"], cells[i : i + 1], expanded[i : i + 1], recipe)
        assert alone.keys() == batch.keys()
        for name, values in alone.items():
            np.testing.assert_allclose(
                values[0], batch[name][i], rtol=1e-9, atol=1e-12, err_msg=f"cell {i}: {name}"
            )


# ifcml's compiled families and cp-measure's functions, each called on (labels, pixels, layout)
COMPILED_FAMILIES = {
    "radial_distribution": (
        lambda labels, pixels, _: radial_distribution(labels, pixels, bins=4),
        lambda labels, pixels: get_radial_distribution(labels, pixels, bin_count=4),
    ),
    "texture": (
        lambda labels, pixels, _: texture(labels, pixels, scale=3, gray_levels=256),
        lambda labels, pixels: get_texture(labels, pixels, 3, 256),
    ),
    "intensity": (
        lambda labels, pixels, _: intensity(labels, pixels),
        lambda labels, pixels: get_intensity(labels, pixels),
    ),
    "correlation": (
        lambda labels, pixels, layout: _correlation_keys(correlations(labels, pixels, _shifted(pixels), 15)),
        lambda labels, pixels: _correlation_keys(
            {
                "pearson": get_correlation_pearson(pixels, _shifted(pixels), labels),
                "manders_fold": get_correlation_manders_fold(pixels, _shifted(pixels), labels, thr=15),
                "rwc": get_correlation_rwc(pixels, _shifted(pixels), labels, thr=15),
            }
        ),
    ),
    "sizeshape": (
        lambda labels, _, layout: size_shape(labels, layout.tile_shape, distance_to_background(labels > 0)),
        lambda labels, _: get_sizeshape(labels, None),
    ),
}


def _shifted(pixels: np.ndarray) -> np.ndarray:
    """A second channel for correlation: the image one pixel to the right (within each tile)."""
    return np.roll(pixels, 1, axis=1)


def _correlation_keys(by_method: dict) -> dict:
    return {key: np.asarray(values) for found in by_method.values() for key, values in found.items()}


BIT_FOR_BIT = {"intensity", "sizeshape"}  # the same sums in the same order as cp-measure's


@pytest.mark.parametrize("obj", ["Cells", "CellsExpanded"])
@pytest.mark.parametrize("family", sorted(COMPILED_FAMILIES))
def test_compiled_family_equals_cp_measure(jurkat_store, family, obj):
    """ifcml's compiled families against cp-measure's, on real cells of three phases in both
    channels: the same keys in the same order, values equal to round-off (``BIT_FOR_BIT``:
    exactly); NaN in one is NaN in the other (texture: objects without pairs in a direction)."""
    ours_of, reference_of = COMPILED_FAMILIES[family]
    index = np.r_[0:48, 1000:1048, 2500:2548]
    images, sizes = _cells(jurkat_store, index)
    cells, expanded = cell_objects(images, None, sizes, ["BF", "DF"], Recipe())
    layout = Layout(len(index), *images.shape[2:], padding=2)
    labels = tile_labels(cells if obj == "Cells" else expanded, layout)
    for k in (0, 1):
        pixels = tile(images[:, k].astype(float) / 65535, layout)
        ours = ours_of(labels, pixels, layout)
        with np.errstate(invalid="ignore", divide="ignore"):
            reference = reference_of(labels, pixels)
        assert list(ours) == list(reference)
        for key in reference:
            if family in BIT_FOR_BIT:
                np.testing.assert_array_equal(ours[key], reference[key], err_msg=key)
            else:
                np.testing.assert_allclose(ours[key], reference[key], rtol=1e-9, atol=1e-12, err_msg=key)


def test_zernike_moments_equal_cp_measure_for_a_cell_alone(jurkat_store):
    """ifcml's compiled Zernike sums (tile coordinates, a whole batch) against cp-measure's
    shape and radial Zernike features of each cell alone on its tile (where tile and image
    coordinates agree)."""
    index = np.r_[0:6, 1000:1006]
    images, sizes = _cells(jurkat_store, index)
    cells, _ = cell_objects(images, None, sizes, ["BF", "DF"], Recipe())
    layout = Layout(len(index), *images.shape[2:], padding=2)
    labels = tile_labels(cells, layout)
    pixels = tile(images[:, 1].astype(float) / 65535, layout)
    disks = zernike.unit_disks(labels, layout.tile_shape)
    ours = zernike.shape_features(disks, 9) | zernike.radial_features(disks, pixels, 9)
    for i in range(len(index)):
        alone = Layout(1, *images.shape[2:], padding=2)
        one_label = tile_labels(cells[i : i + 1], alone)
        one_pixels = tile(images[i : i + 1, 1].astype(float) / 65535, alone)
        reference = get_zernike(one_label, None, 9) | get_radial_zernikes(one_label, one_pixels, 9)
        assert reference.keys() <= ours.keys()
        for key, values in reference.items():
            np.testing.assert_allclose(
                ours[key][i], values[0], rtol=1e-9, atol=1e-12, err_msg=f"cell {i}: {key}"
            )


@pytest.mark.parametrize("pick", ["sample", "zernike_only", "granularity_head", "one_of_each"])
def test_measuring_only_wanted_columns_gives_the_full_recipes_values(jurkat_store, pick):
    """What ``predict`` does with a model's few pruned features: the families nobody reads are
    skipped (or cut short) and every wanted column keeps the full recipe's values, bit for bit."""
    index = np.r_[0:12, 1000:1012]
    images, sizes = _cells(jurkat_store, index)
    full = measure_images(images, None, sizes, ["BF", "DF"], Recipe())
    names = [c for c in full.columns if c != FAILED]
    chosen = {
        "sample": list(np.random.default_rng(0).choice(names, 40, replace=False)),
        "zernike_only": ["Cells_RadialDistribution_ZernikeMagnitude_BF_4_2", "Cells_AreaShape_Zernike_3_1"],
        "granularity_head": ["CellsExpanded_Granularity_3_DF", "Cells_Correlation_Manders_DF_BF"],
        "one_of_each": [
            "Cells_Intensity_MeanIntensity_BF",
            "CellsExpanded_Texture_Contrast_DF_3_00_256",
            "CellsExpanded_RadialDistribution_FracAtD_DF_2of4",
            "Cells_AreaShape_MaxFeretDiameter",
            "Cells_Quality_GradientRMS_DF",
        ],
    }[pick]
    assert set(chosen) <= set(names)
    narrow = measure_images(images, None, sizes, ["BF", "DF"], Recipe(), wanted=Wanted(chosen))
    # 40 columns at random touch most families; the others leave most of them out
    most = len(full.columns) if pick == "sample" else len(full.columns) / 2
    assert len(narrow.columns) < most  # families were skipped, not measured and filtered
    pd.testing.assert_frame_equal(narrow[[FAILED, *chosen]], full[[FAILED, *chosen]], check_exact=True)


def test_distance_to_background_is_scipys_bit_for_bit(jurkat_store):
    """Size and shape's radii and radial distribution's bins start from this distance: it must be
    scipy's exact Euclidean transform, on real objects and on masks far from cell-like."""
    images, sizes = _cells(jurkat_store, np.r_[0:40, 2500:2540])
    cells, expanded = cell_objects(images, None, sizes, ["BF", "DF"], Recipe())
    layout = Layout(len(images), *images.shape[2:], padding=2)
    rng = np.random.default_rng(7)
    masks = [tile_labels(objects, layout) > 0 for objects in (cells, expanded)]
    masks += [rng.random((57, 83)) < density for density in (0.3, 0.9, 0.995)]
    masks += [np.repeat((np.arange(9) != 4)[:, None], 6, axis=1)]  # background in one row only
    for mask in masks:
        np.testing.assert_array_equal(distance_to_background(mask), distance_transform_edt(mask))


@pytest.mark.parametrize("channel", [0, 1])
def test_granularity_equals_cp_measure_unsubsampled(jurkat_store, channel):
    """ifcml's tile-by-tile kernels against cp-measure's on the whole montage: 37 cells, so
    the last block of tiles is part empty and the montage has empty tiles too."""
    images, sizes = _cells(jurkat_store, np.r_[0:20, 2500:2517])
    cells, _ = cell_objects(images, None, sizes, ["BF", "DF"], Recipe())
    layout = Layout(len(images), *images.shape[2:], padding=2)
    labels = tile_labels(cells, layout)
    pixels = tile(images[:, channel].astype(float) / 65535, layout)
    ours = granularity(labels, pixels, layout.tile_shape, element_size=10, spectrum_length=16)
    reference = get_granularity(labels, pixels, 1.0, 1.0, 10, 16)
    assert ours.keys() == reference.keys()
    for key in reference:
        np.testing.assert_array_equal(ours[key], reference[key], err_msg=key)


def test_failed_cells_are_kept_flagged_and_do_not_change_the_others(simulated_store):
    recipe = Recipe(segmentation={"source": "bright-field"})
    images, sizes = _cells(simulated_store, np.arange(6))
    cells, expanded = cell_objects(images, None, sizes, ["BF", "DF", "DAPI"], recipe)
    blank = images.copy()
    blank[2] = 0  # nothing to segment
    blank_cells, blank_expanded = cell_objects(blank, None, sizes, ["BF", "DF", "DAPI"], recipe)
    assert not blank_cells[2].any() and blank_cells[[0, 1, 3, 4, 5]].any(axis=(1, 2)).all()
    with_blank = measure_cells(blank, ["BF", "DF", "DAPI"], blank_cells, blank_expanded, recipe)
    clean = measure_cells(images, ["BF", "DF", "DAPI"], cells, expanded, recipe)
    for name, values in with_blank.items():
        assert np.isnan(values[2]), name
        np.testing.assert_array_equal(values[[0, 1, 3, 4, 5]], clean[name][[0, 1, 3, 4, 5]], err_msg=name)


def test_feature_table_names_and_metadata(simulated_store, tmp_path):
    out = write_features(simulated_store.path, tmp_path / "f.parquet", recipe=Recipe(chunk_cells=64))
    table = read_features(out)
    assert len(table) == simulated_store.n_cells
    metadata = [c for c in table.columns if c.startswith("Metadata_")]
    assert list(table.columns[: len(metadata)]) == metadata  # Metadata_* first
    assert {"Metadata_cell_id", "Metadata_instance", "Metadata_label", FAILED} <= set(metadata)
    for name in (
        "Cells_AreaShape_Area",
        "Cells_AreaShape_Zernike_2_2",
        "Cells_AreaShape_MaxFeretDiameter",
        "Cells_Intensity_MeanIntensity_BF",
        "CellsExpanded_Intensity_MeanIntensity_DF",
        "Cells_Texture_Contrast_BF_3_00_256",
        "CellsExpanded_Granularity_1_DF",
        "Cells_RadialDistribution_FracAtD_DAPI_1of4",
        "Cells_RadialDistribution_ZernikeMagnitude_DAPI_2_2",
        "Cells_Correlation_Correlation_BF_DF",
        "Cells_Correlation_Manders_DAPI_DF",
    ):
        assert name in table.columns, name
    assert not any("Location" in c or "Center_X" in c for c in table.columns)
    assert out.with_suffix(".recipe.yaml").exists()
    # instrument masks were used: the measured area is the simulated cell's true area
    assert (table["Cells_AreaShape_Area"] == (simulated_store.masks[:][:, 0] > 0).sum(axis=(1, 2))).all()


def test_interrupted_run_resumes_without_recomputing_and_equals_a_full_run(simulated_store, tmp_path):
    recipe = Recipe(chunk_cells=40, measurements={"granularity": {"enabled": False}})
    full = read_features(write_features(simulated_store.path, tmp_path / "full.parquet", recipe=recipe))
    out = tmp_path / "f.parquet"

    def kill_after_two_chunks(n, seen=[]):  # noqa: B006 - counts calls across this run
        seen.append(n)
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_features(simulated_store.path, out, recipe=recipe, run=Running(on_cells=kill_after_two_chunks))
    assert not out.exists()
    with pytest.raises(IfcmlError, match="2 finished chunk.*--resume"):
        write_features(simulated_store.path, out, recipe=recipe)
    with pytest.raises(IfcmlError, match="computed something else.*recipe_digest"):
        write_features(simulated_store.path, out, recipe=Recipe(chunk_cells=40), run=Running(resume=True))
    progress = []
    write_features(
        simulated_store.path, out, recipe=recipe, run=Running(resume=True, on_cells=progress.append)
    )
    assert progress[0] == 80  # the two finished chunks are counted, not recomputed
    assert len(progress) == 1 + (simulated_store.n_cells - 80) // 40
    pd.testing.assert_frame_equal(read_features(out), full)
    assert not (tmp_path / ".f.parquet.parts").exists()


def test_existing_table_and_unknown_channel_are_refused(simulated_store, tmp_path):
    out = tmp_path / "f.parquet"
    out.write_text("precious")
    with pytest.raises(IfcmlError, match="f.parquet: already exists"):
        write_features(simulated_store.path, out)
    assert out.read_text() == "precious"
    with pytest.raises(IfcmlError, match="no channel.*GFP"):
        write_features(simulated_store.path, tmp_path / "g.parquet", channels=["BF", "GFP"])


@pytest.mark.slow
def test_real_jurkat_table_via_cli(jurkat_store, tmp_path, ifcml):
    out = tmp_path / "jurkat.parquet"
    code, stdout, err = ifcml("features", jurkat_store.path, "--out", out, "--workers", "2")
    assert code == 0, err
    table = read_features(out)
    assert len(table) == 3419
    features = [c for c in table.columns if not c.startswith("Metadata_")]
    assert len(features) > 400
    assert table["Metadata_label"].value_counts().to_dict()["Prophase"] == 606
    assert table[FAILED].sum() <= 2  # 99.97 % of the real cells segment
    g1, s, g2 = (
        table.loc[table["Metadata_label"] == p, "Cells_AreaShape_Area"].median()
        for p in ("G1", "S_phase", "G2")
    )
    assert g1 < s < g2  # cells grow through the cycle


def test_local_processes_and_a_dask_cluster_give_the_same_table(simulated_store, tmp_path):
    from distributed import LocalCluster

    recipe = Recipe(chunk_cells=40, measurements={"granularity": {"enabled": False}})
    alone = read_features(write_features(simulated_store.path, tmp_path / "a.parquet", recipe=recipe))
    pool = write_features(simulated_store.path, tmp_path / "b.parquet", recipe=recipe, run=Running(workers=2))
    pd.testing.assert_frame_equal(read_features(pool), alone)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        dask = write_features(
            simulated_store.path,
            tmp_path / "c.parquet",
            recipe=recipe,
            run=Running(scheduler=cluster.scheduler_address),
        )
    pd.testing.assert_frame_equal(read_features(dask), alone)


def test_a_run_refused_before_any_chunk_leaves_nothing_in_the_way(simulated_store, tmp_path):
    out = tmp_path / "f.parquet"
    with pytest.raises(IfcmlError, match="segmentation channel 'PhaseContrast'.*--channels"):
        write_features(simulated_store.path, out, recipe=Recipe(segmentation={"channel": "PhaseContrast"}))
    assert not (tmp_path / ".f.parquet.parts").exists()
    (tmp_path / ".f.parquet.parts").mkdir()  # left by a run killed before its first chunk
    recipe = Recipe(chunk_cells=80, measurements={"granularity": {"enabled": False}})
    assert read_features(write_features(simulated_store.path, out, recipe=recipe)).shape[0] == 160
