"""Measuring only what is read: the recipe narrowed, per object and channel, to given columns.

An exported classical model reads the few dozen columns that survived pruning, out of the
hundreds its recipe measures; ``ifcml predict`` would otherwise spend most of its time on
values nobody reads. Narrowing only switches off whole families (or their trailing steps:
granularity's spectrum, Zernike degrees, texture scales) whose columns are not wanted; each
value still measured is computed exactly as with the full recipe (tested on real cells), since
no family's values depend on another's. Columns are matched by their full CellProfiler names
(``ifcml.features.naming``) with the channel spelt out, so channel names may hold underscores.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ifcml.features.recipe import Measurements

_CORRELATION_FEATURES = {
    "pearson": ("Correlation", "Slope"),
    "manders_fold": ("Manders",),
    "rwc": ("RWC",),
    "costes": ("Costes",),
}


class Wanted:
    """The columns a caller reads; ``None`` (the default everywhere) means every column."""

    def __init__(self, columns: Iterable[str]):
        self.columns = frozenset(columns)

    def _matches(self, pattern: str) -> list[re.Match]:
        compiled = re.compile(pattern)
        return [m for c in self.columns if (m := compiled.fullmatch(c))]

    def shape(self, m: Measurements) -> Measurements:
        """``m`` with size/shape narrowed to the wanted ``Cells_AreaShape_*`` columns."""
        shape = self._matches(r"Cells_AreaShape_(.+)")
        zernike = [int(z[1]) for s in shape if (z := re.fullmatch(r"Zernike_(\d+)_\d+", s[1]))]
        feret = any(s[1] in ("MinFeretDiameter", "MaxFeretDiameter") for s in shape)
        sizeshape = m.sizeshape.model_copy(
            update={
                "enabled": m.sizeshape.enabled and bool(shape),
                "zernike_degree": _degree(m.sizeshape.zernike_degree, zernike),
                "feret": m.sizeshape.feret and feret,
            }
        )
        return m.model_copy(update={"sizeshape": sizeshape})

    def channel(self, m: Measurements, obj: str, channel: str) -> Measurements:
        """``m`` with the per-channel families narrowed to the wanted columns of ``obj`` in ``channel``."""
        ch = re.escape(channel)
        intensity = self._matches(rf"{obj}_Intensity_[A-Za-z]+_{ch}")
        scales = {int(t[1]) for t in self._matches(rf"{obj}_Texture_[A-Za-z0-9]+_{ch}_(\d+)_\d+_\d+")}
        steps = [int(g[1]) for g in self._matches(rf"{obj}_Granularity_(\d+)_{ch}")]
        bins = self._matches(rf"{obj}_RadialDistribution_(FracAtD|MeanFrac|RadialCV)_{ch}_\d+of\d+")
        moments = self._matches(rf"{obj}_RadialDistribution_Zernike[A-Za-z]+_{ch}_(\d+)_\d+")
        zernike = [int(z[1]) for z in moments]
        texture_scales = [s for s in m.texture.scales if s in scales]
        radial_zernike = _degree(m.radial_distribution.zernike_degree, zernike)
        update = {
            "intensity": m.intensity.model_copy(update={"enabled": m.intensity.enabled and bool(intensity)}),
            "texture": m.texture.model_copy(
                update={"enabled": m.texture.enabled and bool(texture_scales), "scales": texture_scales}
            ),
            "granularity": m.granularity.model_copy(
                update={
                    "enabled": m.granularity.enabled and bool(steps),
                    "spectrum_length": min(m.granularity.spectrum_length, max(steps, default=1)),
                }
            ),
            "radial_distribution": m.radial_distribution.model_copy(
                update={
                    "enabled": m.radial_distribution.enabled and bool(bins or radial_zernike),
                    "bins": m.radial_distribution.bins if bins else 0,
                    "zernike_degree": radial_zernike,
                }
            ),
        }
        return m.model_copy(update=update)

    def pair(self, m: Measurements, first: str, second: str) -> Measurements:
        """``m`` with correlation narrowed to the wanted columns of channels ``first`` and ``second``."""
        a, b = re.escape(first), re.escape(second)
        features = {c[1] for c in self._matches(rf"Cells_Correlation_([A-Za-z]+)_(?:{a}_{b}|{b}_{a})")}
        methods = [k for k in m.correlation.methods if features.intersection(_CORRELATION_FEATURES[k])]
        correlation = m.correlation.model_copy(
            update={"enabled": m.correlation.enabled and bool(methods), "methods": methods}
        )
        return m.model_copy(update={"correlation": correlation})

    def quality(self) -> bool:
        """Whether any of ifcml's own quality columns is wanted (they are measured together)."""
        return bool(self._matches(r"Cells_Quality_.+"))


def _degree(degree: int, orders: list[int]) -> int:
    """The Zernike degree that still gives the wanted orders ``n`` (0 turns moments off, so a
    wanted ``Zernike_0_0`` needs degree 1, which gives orders 0 and 1)."""
    return min(degree, max(*orders, 1)) if orders else 0
