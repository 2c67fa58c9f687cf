"""CellProfiler's column names: ``<Object>_<Category>_<Feature>_<Image>[_<scale>...]``.

Both engines name every measurement through these functions, so a column means the same in
a cp-measure table and in a table parsed from CellProfiler's own spreadsheets.
"""

from __future__ import annotations

import re

# Where the instrument placed the cell inside its crop (or the montage placed its tile):
# acquisition geometry, not biology, and different between engines by construction.
POSITION = re.compile(r"_(Location_|AreaShape_Center_|AreaShape_BoundingBox(Minimum|Maximum)_)")


def shape_name(obj: str, key: str) -> str:
    """``Area`` -> ``Cells_AreaShape_Area``; Zernike and Feret keys alike."""
    return f"{obj}_AreaShape_{key}"


def channel_name(obj: str, category: str, feature: str, channel: str, suffix: str = "") -> str:
    """``(Cells, Texture, Contrast, DF, 3_00_256)`` -> ``Cells_Texture_Contrast_DF_3_00_256``."""
    return f"{obj}_{category}_{feature}_{channel}" + (f"_{suffix}" if suffix else "")


def intensity_name(obj: str, key: str, channel: str) -> str:
    """``Intensity_MeanIntensity`` -> ``Cells_Intensity_MeanIntensity_BF`` (Location_* kept as is)."""
    category, feature = key.split("_", 1)
    return channel_name(obj, category, feature, channel)


def texture_name(obj: str, key: str, channel: str) -> str:
    """``Contrast_3_00_256`` -> ``Cells_Texture_Contrast_BF_3_00_256``."""
    feature, suffix = key.split("_", 1)
    return channel_name(obj, "Texture", feature, channel, suffix)


def granularity_name(obj: str, key: str, channel: str) -> str:
    """``Granularity_3`` -> ``Cells_Granularity_3_BF``."""
    return channel_name(obj, "Granularity", key.split("_", 1)[1], channel)


def radial_name(obj: str, key: str, channel: str) -> str:
    """``RadialDistribution_FracAtD_1of4`` -> ``Cells_RadialDistribution_FracAtD_BF_1of4``."""
    feature, suffix = key.split("_", 2)[1:]
    return channel_name(obj, "RadialDistribution", feature, channel, suffix)


# cp-measure's correlation keys -> (CellProfiler feature, channels in swapped order?)
_CORRELATION = {
    "Correlation_Pearson": ("Correlation", False),
    "Correlation_Slope": ("Slope", False),
    "Correlation_Manders_1": ("Manders", False),
    "Correlation_Manders_2": ("Manders", True),
    "Correlation_RWC_1": ("RWC", False),
    "Correlation_RWC_2": ("RWC", True),
    "Correlation_Costes_1": ("Costes", False),
    "Correlation_Costes_2": ("Costes", True),
}


def correlation_name(obj: str, key: str, first: str, second: str) -> str:
    """``Correlation_Manders_2`` of (BF, DF) -> ``Cells_Correlation_Manders_DF_BF``."""
    feature, swapped = _CORRELATION[key]
    a, b = (second, first) if swapped else (first, second)
    return f"{obj}_Correlation_{feature}_{a}_{b}"


def columns_for_channels(columns: list[str], all_channels: list[str], keep: list[str]) -> list[str]:
    """The feature columns a channel subset may use: shape features, and those whose every
    channel token is kept (a BF-DF correlation needs both)."""
    dropped = set(all_channels) - set(keep)
    return [c for c in columns if not dropped.intersection(c.split("_"))]
