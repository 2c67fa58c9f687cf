"""Instrument channel numbers and the names users give them (``3:BF,4:DNA,6:DF``)."""

from __future__ import annotations

import re

from ifcml.errors import InputError

_ITEM = re.compile(r"^\s*(\d+)\s*:\s*([A-Za-z][A-Za-z0-9_\-]*)\s*$")


def parse_channel_map(spec: str | None) -> dict[int, str] | None:
    """Parse ``"3:BF,4:DNA,6:DF"`` into ``{3: "BF", 4: "DNA", 6: "DF"}`` (order kept).

    ``None`` or an empty string means "every channel the source has, named ``Ch<k>``".
    """
    if spec is None or not spec.strip():
        return None
    mapping: dict[int, str] = {}
    for item in spec.split(","):
        match = _ITEM.match(item)
        if not match:
            raise InputError(
                f"--channels: cannot read {item.strip()!r}; expected NUMBER:NAME items such as "
                "'3:BF,4:DNA,6:DF' (names start with a letter; letters, digits, _ and -)"
            )
        number, name = int(match.group(1)), match.group(2)
        if number in mapping:
            raise InputError(f"--channels: channel {number} is named twice")
        if name in mapping.values():
            raise InputError(f"--channels: the name {name!r} is given to two channels")
        mapping[number] = name
    return mapping


def resolve_channels(available: list[int], requested: dict[int, str] | None, where: str) -> dict[int, str]:
    """Choose which instrument channels to ingest and their names.

    Parameters
    ----------
    available
        Instrument channel numbers the source holds.
    requested
        The user's map, or ``None`` for all channels named ``Ch<k>``.
    where
        The source, named in errors.
    """
    if requested is None:
        return {k: f"Ch{k}" for k in sorted(available)}
    missing = [k for k in requested if k not in available]
    if missing:
        have = ", ".join(f"Ch{k}" for k in sorted(available)) or "none"
        raise InputError(
            f"{where}: channel(s) {', '.join(f'Ch{k}' for k in missing)} requested by --channels "
            f"but not present (the source has: {have})"
        )
    return dict(requested)
