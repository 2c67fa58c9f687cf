"""`ifcml gate --plots`: each gate drawn on its parent's cells, and example cells inside and
just outside it, as cytometrists check gates (in IDEAS, by looking at the cells).

A gate is drawn in its own coordinates: its dimensions compensated and transformed as the
strategy says (FlowKit's matrices and transforms do both). 2-D gates on a density plot, 1-D
gates on a histogram; a Boolean gate has no axes of its own and gets its examples only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jinja2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import patches  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from ifcml.gating.apply import parent_of  # noqa: E402
from ifcml.gating.strategy import UNCOMPENSATED, Population, Strategy  # noqa: E402
from ifcml.io.store import CellStore  # noqa: E402

EXAMPLES = 8  # cells shown inside and just outside each gate
TEMPLATE = Path(__file__).with_name("gallery.html.j2")


@dataclass(frozen=True)
class GatePicture:
    population: Population
    parent: str
    count: int
    parent_count: int
    plot: str | None  # file name of the density plot or histogram
    cells: str | None  # file name of the example cells


def draw_gates(
    table: pd.DataFrame, members: pd.DataFrame, strategy: Strategy, out: Path, store: CellStore | None
) -> Path:
    """PNGs of every gate and ``index.html`` in ``out``; returns the page."""
    import flowkit as fk

    out.mkdir(parents=True, exist_ok=True)
    sample = fk.Sample(table[list(strategy.dimensions)].astype(np.float64), sample_id="plots")
    pictures = []
    for number, population in enumerate(strategy.populations):
        parent = parent_of(population, strategy)
        in_parent = np.ones(len(table), bool) if parent is None else members[parent.column].to_numpy()
        inside = members[population.column].to_numpy()
        coordinates = _coordinates(sample, strategy, population)
        stem = f"{number:02d}_{population.column.removeprefix('Metadata_Gate_').replace('/', '_')}"
        plot = None
        if coordinates is not None:
            plot = f"{stem}.png"
            _draw(coordinates[in_parent], inside[in_parent], strategy, population, out / plot)
        cells = None
        if store is not None:
            cells = f"{stem}_cells.png"
            examples = _examples(coordinates, in_parent, inside)
            _draw_cells(store, table["Metadata_cell_id"].to_numpy(), examples, population, out / cells)
        pictures.append(
            GatePicture(population, population.parent, int(inside.sum()), int(in_parent.sum()), plot, cells)
        )
    page = out / "index.html"
    template = jinja2.Template(TEMPLATE.read_text(), autoescape=True)
    page.write_text(
        template.render(strategy=strategy.source.name, pictures=pictures, store=store is not None)
    )
    return page


def _coordinates(sample, strategy: Strategy, population: Population) -> np.ndarray | None:
    """(cells, dimensions) in the gate's own compensated, transformed scale; None for a
    Boolean gate."""
    from flowkit import gates as fk_gates

    gate = _gate(strategy, population)
    if isinstance(gate, fk_gates.BooleanGate):
        return None
    columns = []
    raw = sample.get_events(source="raw")
    for dimension in gate.dimensions:
        name = getattr(dimension, "dimension_ref", None) or dimension.id
        events = raw
        if dimension.compensation_ref not in (None, UNCOMPENSATED):
            events = strategy.gating.get_comp_matrix(dimension.compensation_ref).apply(sample)
        values = events[:, sample.pnn_labels.index(name)].reshape(-1, 1)
        if dimension.transformation_ref:
            values = strategy.gating.get_transform(dimension.transformation_ref).apply(values)
        columns.append(np.asarray(values, dtype=np.float64).ravel())
    return np.column_stack(columns)


def _gate(strategy: Strategy, population: Population):
    return strategy.gating.get_gate(population.gate, population.path)


def _draw(
    points: np.ndarray, inside: np.ndarray, strategy: Strategy, population: Population, path: Path
) -> None:
    from flowkit import gates as fk_gates

    gate = _gate(strategy, population)
    labels = [_axis_label(d) for d in gate.dimensions]
    figure, axes = plt.subplots(figsize=(5, 4.2))
    finite = np.isfinite(points).all(axis=1)
    if points.shape[1] == 1:
        bins = np.histogram_bin_edges(points[finite, 0], bins=80) if finite.any() else 80
        axes.hist(points[finite, 0], bins=bins, color="0.6", label="parent")
        axes.hist(points[finite & inside, 0], bins=bins, color="tab:blue", alpha=0.8, label="in the gate")
        for limit in _range(gate):
            axes.axvline(limit, color="red", linewidth=1.6)
        axes.set_xlabel(labels[0])
        axes.set_ylabel("cells")
    else:
        x, y = points[finite, 0], points[finite, 1]
        if len(x):
            axes.hist2d(x, y, bins=80, cmap="viridis", norm=matplotlib.colors.LogNorm(), cmin=1)
        axes.set_xlabel(labels[0])
        axes.set_ylabel(labels[1])
        _outline(axes, gate, population, fk_gates)
    share = 100.0 * inside.sum() / max(len(inside), 1)
    axes.set_title(
        f"{population.name} in {population.parent}: {int(inside.sum())} of {len(inside)} ({share:.1f} %)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _axis_label(dimension) -> str:
    name = getattr(dimension, "dimension_ref", None) or dimension.id
    steps = [
        s
        for s in (dimension.compensation_ref, dimension.transformation_ref)
        if s not in (None, UNCOMPENSATED)
    ]
    return f"{name} ({', '.join(steps)})" if steps else name


def _range(gate) -> list[float]:
    """A 1-D gate's limits (a rectangle's min and max; a quadrant gate's divider values)."""
    dimension = gate.dimensions[0]
    if hasattr(dimension, "values"):
        return list(dimension.values)
    return [v for v in (dimension.min, dimension.max) if v is not None]


def _outline(axes, gate, population: Population, fk_gates) -> None:
    """The gate's boundary in red on its 2-D plot."""
    style = {"fill": False, "edgecolor": "red", "linewidth": 1.6}
    if isinstance(gate, fk_gates.PolygonGate):
        axes.add_patch(patches.Polygon(np.asarray(gate.vertices, dtype=float), **style))
    elif isinstance(gate, fk_gates.RectangleGate):
        (x0, y0), (x1, y1) = _limits(axes, gate.dimensions)
        axes.add_patch(patches.Rectangle((x0, y0), x1 - x0, y1 - y0, **style))
    elif isinstance(gate, fk_gates.EllipsoidGate):
        covariance = np.asarray(gate.covariance_matrix, dtype=float)
        values, vectors = np.linalg.eigh(covariance)  # ascending: the major axis is the last
        minor, major = 2 * np.sqrt(values * gate.distance_square)
        angle = np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1]))
        axes.add_patch(patches.Ellipse(gate.coordinates, major, minor, angle=angle, **style))
    elif isinstance(gate, fk_gates.QuadrantGate):
        for divider, line in zip(gate.dimensions, (axes.axvline, axes.axhline), strict=False):
            for value in divider.values:
                line(value, color="red", linewidth=1.6)


def _limits(axes, dimensions) -> tuple[tuple[float, float], tuple[float, float]]:
    bounds = (axes.get_xlim(), axes.get_ylim())
    low = tuple(d.min if d.min is not None else b[0] for d, b in zip(dimensions, bounds, strict=False))
    high = tuple(d.max if d.max is not None else b[1] for d, b in zip(dimensions, bounds, strict=False))
    return low, high


def _examples(
    coordinates: np.ndarray | None, in_parent: np.ndarray, inside: np.ndarray
) -> dict[str, np.ndarray]:
    """Row numbers: a seeded draw of cells inside, and the parent's cells outside nearest to
    an inside cell in the gate's own scale (the borderline cases worth a look)."""
    rng = np.random.default_rng(0)
    inside_rows = np.flatnonzero(inside)
    outside_rows = np.flatnonzero(in_parent & ~inside)
    shown_inside = np.sort(rng.choice(inside_rows, min(EXAMPLES, len(inside_rows)), replace=False))
    if coordinates is None or not len(inside_rows) or not len(outside_rows):
        near = rng.choice(outside_rows, min(EXAMPLES, len(outside_rows)), replace=False)
        return {"inside": shown_inside, "just outside": np.sort(near)}
    scaled = coordinates / np.where(np.nanstd(coordinates, axis=0) > 0, np.nanstd(coordinates, axis=0), 1)
    scaled = np.nan_to_num(scaled, nan=1e12, posinf=1e12, neginf=-1e12)  # unmeasured: far away
    distance, _ = cKDTree(scaled[inside_rows]).query(scaled[outside_rows])
    return {"inside": shown_inside, "just outside": outside_rows[np.argsort(distance)[:EXAMPLES]]}


def _draw_cells(
    store: CellStore, cell_ids: np.ndarray, examples: dict[str, np.ndarray], population, path: Path
):
    """A grid: a row per example group, each cell's channels side by side."""
    sizes = store.cells[["height", "width"]].to_numpy()
    figure, axes = plt.subplots(
        len(examples), EXAMPLES, figsize=(2.2 * EXAMPLES, 2.0 * len(examples)), squeeze=False
    )
    for row, (title, rows) in enumerate(examples.items()):
        for column, ax in enumerate(axes[row]):
            ax.axis("off")
            if column < len(rows):
                cell = int(cell_ids[rows[column]])
                height, width = sizes[cell]
                image = store.read(cell, cell + 1)[0, :, :height, :width].astype(np.float64)
                ax.imshow(np.hstack([_stretch(channel) for channel in image]), cmap="gray", vmin=0, vmax=1)
                ax.set_title(f"cell {cell}", fontsize=7)
        axes[row, 0].text(
            -0.1, 0.5, title, transform=axes[row, 0].transAxes, ha="right", va="center", fontsize=9
        )
    figure.suptitle(f"{population.name}: {' | '.join(store.channels)}", fontsize=10)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def _stretch(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [1, 99])
    return np.clip((image - low) / (high - low), 0, 1) if high > low else np.zeros_like(image)
