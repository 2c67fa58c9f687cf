"""Gating strategies from GatingML 2.0 files and FlowJo 10 workspaces, read by FlowKit.

FlowKit is the reference implementation of GatingML 2.0 in Python, so ifcml never parses the
XML itself: it only asks FlowKit's strategy which populations it defines and which table
columns (the strategy's dimensions) it reads, and refuses, before any gating, a strategy that
cannot apply to the table or that holds a gate no cell could ever be in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ifcml.errors import InputError

GATE_PREFIX = "Metadata_Gate_"
UNCOMPENSATED = "uncompensated"


class StrategyError(InputError):
    """A gating strategy that cannot be read, or cannot apply to the table given."""


@dataclass(frozen=True)
class Population:
    """One gate's population: the cells in that gate and all its ancestors."""

    name: str  # the gate's id in the file (a quadrant's own id)
    path: tuple[str, ...]  # its ancestors, from FlowKit's "root"
    column: str  # the boolean column ifcml writes
    gate: str  # the gate that draws it: itself, or a quadrant's quadrant gate

    @property
    def parent(self) -> str:
        return self.path[-1]

    @property
    def path_text(self) -> str:
        """The path as FlowKit's results take it."""
        return "/".join(self.path)


@dataclass(frozen=True)
class Strategy:
    """A FlowKit gating strategy with what ifcml needs to apply it to a table."""

    source: Path
    gating: object  # flowkit.GatingStrategy
    populations: tuple[Population, ...]
    dimensions: tuple[str, ...]  # the table columns its gates and compensations read

    def population(self, name: str) -> Population:
        found = [p for p in self.populations if p.name == name or p.column == GATE_PREFIX + name]
        if len(found) != 1:
            known = ", ".join(p.name for p in self.populations)
            what = "names several gates" if found else "is not a gate"
            raise StrategyError(f"{self.source}: {name!r} {what} of this strategy (gates: {known})")
        return found[0]

    def check_columns(self, columns: list[str], table: Path | str) -> None:
        """Refuse a strategy whose dimensions the table lacks, naming the gate and column."""
        present = set(columns)
        for gate_name, column in self._uses():
            if column not in present:
                raise StrategyError(
                    f"{self.source}: gate {gate_name!r} reads column {column!r}, which {table} "
                    "lacks (a GatingML dimension names a table column, as $PnN in FCS)"
                )

    def _uses(self) -> list[tuple[str, str]]:
        """(gate, column) for every column each gate reads."""
        return [
            (name, column) for name, path in _gates(self.gating) for column in _gate_columns(self, name, path)
        ]


def load_strategy(path: Path, sample: str | None = None) -> Strategy:
    """Read a GatingML 2.0 file or a FlowJo 10 workspace (``.wsp``: the gates of ``sample``,
    or of its only sample)."""
    path = Path(path)
    if not path.is_file():
        raise StrategyError(f"{path}: no such gating strategy file")
    gating = _read_workspace(path, sample) if path.suffix.lower() == ".wsp" else _read_gatingml(path)
    populations = _populations(gating)
    if not populations:
        raise StrategyError(f"{path}: the strategy defines no gates")
    partial = Strategy(path, gating, populations, ())
    for name, gate_path in _gates(gating):
        _check_can_hold_cells(partial, name, gate_path)
    dimensions = tuple(dict.fromkeys(column for _, column in partial._uses()))
    return Strategy(path, gating, populations, dimensions)


def _read_gatingml(path: Path):
    import flowkit as fk
    from flowkit._utils.xml_common import gml_schema  # the schema FlowKit validates against

    try:
        return fk.parse_gating_xml(str(path))
    except Exception as exc:  # lxml, FlowKit and the schema raise several kinds
        detail = str(exc)
        if "neither GatingML" in detail:
            detail = _schema_error(path, gml_schema) or detail
        raise StrategyError(f"{path}: not a GatingML 2.0 strategy FlowKit can apply ({detail})") from None


def _schema_error(path: Path, schema) -> str | None:
    from lxml import etree

    try:
        if schema.validate(etree.parse(str(path))):
            return None
    except etree.XMLSyntaxError as exc:
        return f"malformed XML: {exc}"
    error = schema.error_log.last_error
    return f"line {error.line}: {error.message}" if error else None


def _read_workspace(path: Path, sample: str | None):
    import flowkit as fk

    try:
        samples = fk.parse_wsp(str(path))["samples"]
    except Exception as exc:
        raise StrategyError(f"{path}: not a FlowJo 10 workspace FlowKit can read ({exc})") from None
    if sample is None and len(samples) == 1:
        sample = next(iter(samples))
    if sample not in samples:
        listed = ", ".join(sorted(samples)) or "none"
        raise StrategyError(
            f"{path}: choose the sample whose gates to apply with --sample (samples: {listed})"
        )
    return samples[sample]["gating_strategy"]


def _gates(gating) -> list[tuple[str, tuple[str, ...]]]:
    """Every gate FlowKit holds (quadrants excluded: they are parts of their quadrant gate)."""
    from flowkit.exceptions import QuadrantReferenceError

    gates = []
    for name, path in gating.get_gate_ids():
        try:
            gating.get_gate(name, path)
        except QuadrantReferenceError:
            continue
        gates.append((name, tuple(path)))
    return gates


def _populations(gating) -> tuple[Population, ...]:
    """The populations in hierarchy order: each gate's, and each quadrant's in place of its
    quadrant gate (a quadrant gate is a set of populations, not one)."""
    from flowkit import gates as fk_gates

    found = []
    for name, path in _gates(gating):
        gate = gating.get_gate(name, path)
        if isinstance(gate, fk_gates.QuadrantGate):
            found += [(quadrant, path, name) for quadrant in gate.quadrants]
        else:
            found.append((name, path, name))
    names = [name for name, _, _ in found]
    return tuple(
        Population(
            name, path, GATE_PREFIX + (name if names.count(name) == 1 else "/".join((*path[1:], name))), gate
        )
        for name, path, gate in found
    )


def _gate_columns(strategy: Strategy, name: str, path: tuple[str, ...]) -> list[str]:
    """The table columns one gate reads: its dimensions, and every channel of the
    compensations they use."""
    from flowkit import Dimension, QuadrantDivider, RatioDimension

    gate = strategy.gating.get_gate(name, path)
    columns = []
    for dimension in getattr(gate, "dimensions", []) or []:
        if isinstance(dimension, RatioDimension):
            columns += list(strategy.gating.get_transform(dimension.ratio_ref).dimensions)
        elif isinstance(dimension, QuadrantDivider):
            columns.append(dimension.dimension_ref)
        elif isinstance(dimension, Dimension):
            columns.append(dimension.id)
        columns += _compensation_columns(strategy, name, dimension.compensation_ref)
    return columns


def _compensation_columns(strategy: Strategy, gate: str, reference: str | None) -> list[str]:
    if reference in (None, UNCOMPENSATED):
        return []
    try:
        matrix = strategy.gating.get_comp_matrix(reference)
    except KeyError:
        raise StrategyError(
            f"{strategy.source}: gate {gate!r} uses compensation {reference!r}, which the file does not "
            "define (an ifcml table carries no spillover matrix of its own)"
        ) from None
    return list(matrix.detectors) + list(matrix.fluorochromes)


def _check_can_hold_cells(strategy: Strategy, name: str, path: tuple[str, ...]) -> None:
    """Refuse a gate whose geometry no cell could ever be inside (an error in the file, not
    an empty population)."""
    from flowkit import gates as fk_gates

    gate = strategy.gating.get_gate(name, path)
    problem = None
    if isinstance(gate, fk_gates.RectangleGate):
        for dimension in gate.dimensions:
            if dimension.min is not None and dimension.max is not None and dimension.min >= dimension.max:
                problem = f"its {dimension.id!r} range is empty (min {dimension.min} >= max {dimension.max})"
    elif isinstance(gate, fk_gates.PolygonGate):
        area = _polygon_area(np.asarray(gate.vertices, dtype=float))
        if len(gate.vertices) < 3 or area == 0:
            problem = f"its {len(gate.vertices)} vertices enclose no area"
    elif isinstance(gate, fk_gates.EllipsoidGate):
        covariance = np.asarray(gate.covariance_matrix, dtype=float)
        if gate.distance_square <= 0 or np.any(np.linalg.eigvalsh((covariance + covariance.T) / 2) <= 0):
            problem = "its covariance matrix is not positive definite or its distance square is not positive"
    if problem:
        raise StrategyError(f"{strategy.source}: gate {name!r} can hold no cells: {problem}")


def _polygon_area(vertices: np.ndarray) -> float:
    if len(vertices) < 3:
        return 0.0
    x, y = vertices[:, 0], vertices[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)
