"""``ifcml embed``: the network's pooled features of every cell of a store, and views of them.

Writes, into one folder:

- ``embeddings.npy`` (N, D) float32, written as it streams, and ``cells.csv`` (cell id,
  instance, label, predicted class, one probability column per class), rows in the same order;
- ``pca.png``, ``tsne.png`` (and ``umap.png`` when umap-learn is installed), coloured by label
  (by predicted class where cells have no label); t-SNE and UMAP on a seeded sample of at most
  ``max_points`` cells;
- ``projector/``: what the TensorBoard projector reads (``tensors.tsv``, ``metadata.tsv``,
  ``sprite.png`` of the first channel's crops, ``projector_config.pbtxt``), for the same sample:
  ``tensorboard --logdir DIR/projector``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from ifcml.io.store import CellStore  # noqa: E402
from ifcml.models.inference import Network, stream_store_batches  # noqa: E402
from ifcml.models.inputs import store_crops  # noqa: E402

SPRITE_SIDE = 8192  # the projector's largest sprite image
TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


def embed(
    network: Network,
    store: CellStore,
    out: Path,
    *,
    max_points: int = 5000,
    seed: int = 0,
    on_cells: Callable[[int], None] | None = None,
) -> dict:
    """Write the folder described in the module docstring; returns what was written."""
    out.mkdir(parents=True, exist_ok=True)
    width = network.model.get_layer("embedding").output.shape[-1]
    vectors = np.lib.format.open_memmap(out / "embeddings.npy", "w+", np.float32, (store.n_cells, width))
    tables, start = [], 0
    for cells, probabilities, pooled in stream_store_batches(network, store, embeddings=True):
        vectors[start : start + len(cells)] = pooled
        start += len(cells)
        table = cells[["cell_id", "instance", "label"]].reset_index(drop=True)
        table["predicted"] = np.asarray(network.classes)[probabilities.argmax(axis=1)]
        for k, name in enumerate(network.classes):
            table[f"probability_{name}"] = probabilities[:, k]
        tables.append(table)
        if on_cells:
            on_cells(len(cells))
    vectors.flush()
    cells = pd.concat(tables, ignore_index=True)
    cells.to_csv(out / "cells.csv", index=False)
    colour = cells["label"].fillna(cells["predicted"]).astype(str).to_numpy()
    sample = np.sort(
        np.random.default_rng(seed).choice(len(cells), min(max_points, len(cells)), replace=False)
    )
    points = np.asarray(vectors[sample])
    written = ["embeddings.npy", "cells.csv"]
    views = {"pca": PCA(2, random_state=seed).fit_transform(points)}
    perplexity = min(30.0, (len(sample) - 1) / 3)
    if perplexity >= 1:
        views["tsne"] = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    if importlib.util.find_spec("umap") is not None:
        import umap

        views["umap"] = umap.UMAP(random_state=seed).fit_transform(points)
    for name, xy in views.items():
        _scatter(xy, colour[sample], f"{network.model.name}: {TITLES[name]} of the pooled features")
        plt.savefig(out / f"{name}.png", dpi=120)
        plt.close()
        written.append(f"{name}.png")
    _projector(out / "projector", points, cells.iloc[sample], store, sample, network)
    return {"cells": len(cells), "dimensions": width, "written": written + ["projector/"]}


def embedding_figure(
    model, crops: np.ndarray, rows: np.ndarray, labels: np.ndarray, title: str, seed: int = 0,
    max_points: int = 2000,
):  # fmt: skip
    """t-SNE of the pooled features of a seeded sample of ``rows`` of the cached ``crops``,
    coloured by ``labels`` (one per row): the figure of the paper's embedding, as a Figure."""
    import keras

    from ifcml.models.inputs import ordered_dataset
    from ifcml.models.networks import EMBEDDING

    picked = np.sort(np.random.default_rng(seed).choice(len(rows), min(max_points, len(rows)), replace=False))
    pooled = keras.Model(model.input, model.get_layer(EMBEDDING).output)
    points = pooled.predict(ordered_dataset(crops, rows[picked], 512), verbose=0)
    perplexity = min(30.0, (len(picked) - 1) / 3)
    xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    _scatter(xy, np.asarray(labels)[picked].astype(str), title)
    return plt.gcf()


def _scatter(xy: np.ndarray, colour: np.ndarray, title: str) -> None:
    figure, axes = plt.subplots(figsize=(6.5, 5.5))
    for name in sorted(set(colour)):
        picked = colour == name
        axes.scatter(xy[picked, 0], xy[picked, 1], s=4, alpha=0.6, label=f"{name} ({picked.sum()})")
    axes.legend(markerscale=3, fontsize=8)
    axes.set_title(title, fontsize=10)
    axes.set_xticks([])
    axes.set_yticks([])
    figure.tight_layout()


def _projector(folder: Path, points, cells: pd.DataFrame, store: CellStore, sample, network: Network):
    from tensorboard.plugins import projector

    folder.mkdir(exist_ok=True)
    np.savetxt(folder / "tensors.tsv", points, delimiter="\t", fmt="%.5g")
    columns = ["label", "predicted", "instance", "cell_id"]
    cells[columns].fillna("unlabelled").to_csv(folder / "metadata.tsv", sep="\t", index=False)
    thumbs = np.concatenate(
        [
            crops[np.isin(batch["cell_id"].to_numpy(), sample), :, :, 0]
            for batch, crops in store_crops(store, network.channels[:1], network.crop.settings())
        ]
    )
    per_row = int(np.ceil(np.sqrt(len(thumbs))))
    thumb = min(network.crop.size, SPRITE_SIDE // per_row)
    if thumb < network.crop.size:  # only for very many points
        thumbs = np.stack([np.asarray(Image.fromarray(t).resize((thumb, thumb))) for t in thumbs])
    grid = np.zeros((per_row * per_row, thumb, thumb), np.uint8)
    grid[: len(thumbs)] = thumbs
    sprite = grid.reshape(per_row, per_row, thumb, thumb).transpose(0, 2, 1, 3).reshape(per_row * thumb, -1)
    Image.fromarray(sprite).save(folder / "sprite.png")
    config = projector.ProjectorConfig()
    embedding = config.embeddings.add()
    embedding.tensor_name = f"{network.model.name}_embedding"
    embedding.tensor_path = "tensors.tsv"
    embedding.metadata_path = "metadata.tsv"
    embedding.sprite.image_path = "sprite.png"
    embedding.sprite.single_image_dim.extend([thumb, thumb])
    projector.visualize_embeddings(str(folder), config)
