"""Writing Amnis/Cytek ``.cif`` files that :mod:`ifcml.io.cif` (and Bio-Formats) read back exactly.

Used to make test and benchmark files of any size from known pixels; the layout follows IDEAS
(see :mod:`ifcml.io.cif` and ``shared/data/cif/README.md``).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ifcml.io.cif import GREYSCALE, MASK, CifObject
from ifcml.io.cif_codec import encode_greyscale, encode_mask

_ENTRY = struct.Struct("<HHII")  # one IFD entry: tag, type, count, value or offset


def write_cif(
    path: Path | str,
    objects: Iterable[CifObject | tuple[int, np.ndarray, np.ndarray]],
    channels: Sequence[int] | None = None,
    brightfield: Sequence[int] = (),
    magnification: float = 40,
) -> int:
    """Write objects as a CIF file that this reader reads back exactly.

    The layout follows IDEAS: a header IFD with the acquisition XML and the object count,
    then per object an image IFD and a mask IFD, each followed by its strip.

    Parameters
    ----------
    objects
        ``CifObject`` or (object_id, image (C, H, W) uint16, mask (C, H, W) uint8); streamed.
    channels
        Instrument channel numbers (1-based) of the C channels; default 1..C.
    brightfield
        Instrument channels lit by the bright-field LED (recorded in the XML).

    Returns the number of objects written.
    """
    items = iter(objects)
    first = next(items, None)
    n_channels = _unpack(first)[1].shape[0] if first is not None else len(channels or [1])
    channels = list(channels) if channels is not None else list(range(1, n_channels + 1))
    if len(channels) != n_channels:
        raise ValueError(f"{len(channels)} channel numbers given for {n_channels}-channel objects")
    with open(path, "wb") as out:
        count_at, link_at = _write_header(out, _acquisition_xml(channels, brightfield, magnification))
        n = 0
        for item in itertools.chain([first] if first is not None else [], items):
            object_id, image, mask = _unpack(item)
            if image.ndim != 3 or image.shape != mask.shape or image.shape[0] != n_channels:
                raise ValueError(
                    f"object {n}: image {image.shape} and mask {mask.shape} must both be ({n_channels}, H, W)"
                )
            width, height = n_channels * image.shape[2], image.shape[1]
            strip = encode_greyscale(_join_channels(image.astype(np.uint16)))
            entries = _object_entries(2, (width, height), 16, GREYSCALE, len(strip), object_id)
            link_at = _write_object_ifd(out, link_at, entries, strip)
            strip = encode_mask(_join_channels(mask.astype(np.uint8)))
            link_at = _write_object_ifd(
                out, link_at, _object_entries(3, (width, height), 8, MASK, len(strip)), strip
            )
            n += 1
        out.seek(count_at)
        out.write(struct.pack("<I", n))
    return n


def _unpack(item: CifObject | tuple) -> tuple[int, np.ndarray, np.ndarray]:
    if isinstance(item, CifObject):
        return item.object_id, np.asarray(item.image), np.asarray(item.mask)
    object_id, image, mask = item
    return int(object_id), np.asarray(image), np.asarray(mask)


def _acquisition_xml(channels: Sequence[int], brightfield: Sequence[int], magnification: float) -> bytes:
    slots = max(12, max(channels, default=0))
    name = f"_0_{slots - 1}"
    in_use = " ".join("1" if k + 1 in channels else "0" for k in range(slots))
    bf = " ".join("1" if k + 1 in brightfield else "0" for k in range(slots))
    return (
        f"<AcquisitionSettings><Imaging>"
        f"<ChannelInUseIndicators{name}>{in_use} </ChannelInUseIndicators{name}>"
        f"<BfLedIndicators{name}>{bf} </BfLedIndicators{name}></Imaging>"
        f"<Magnification>{magnification:g}</Magnification></AcquisitionSettings>\0"
    ).encode()


def _write_header(out, xml: bytes) -> tuple[int, int]:
    """Write IFD 0 at offset 8 with a dummy 1x1 image, as IDEAS does.

    Returns the file positions of the object count (patched at the end) and of the
    next-IFD pointer.
    """
    entries = [
        (256, 4, 1, 1), (257, 4, 1, 1), (258, 3, 1, 16), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, 1), (279, 4, 1, 1),
        (33002, 3, 1, 1), (33018, 4, 1, 0), (33027, 2, len(xml), 0),
    ]  # fmt: skip
    entries_at = 8 + 2
    xml_at = entries_at + 12 * len(entries) + 4  # the XML follows the IFD
    entries[-1] = (33027, 2, len(xml), xml_at)
    out.write(b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries)))
    for entry in entries:
        out.write(_ENTRY.pack(*entry))
    link_at = out.tell()
    out.write(struct.pack("<I", 0))
    out.write(xml)
    count_index = next(i for i, entry in enumerate(entries) if entry[0] == 33018)
    return entries_at + 12 * count_index + 8, link_at  # + 8: the entry's value field


def _object_entries(
    kind: int, size: tuple[int, int], bits: int, code: int, strip_bytes: int, object_id: int | None = None
) -> list[tuple[int, int, int, int]]:
    """The IFD entries of an object's image (kind 2) or mask (kind 3) strip of ``size`` (width, height)."""
    width, height = size
    entries = [
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, bits), (259, 3, 1, code), (262, 3, 1, 1),
        (273, 4, 1, 0), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, strip_bytes), (33002, 3, 1, kind),
    ]  # fmt: skip
    if object_id is not None:
        entries.append((33003, 4, 1, object_id))
    return entries


def _write_object_ifd(out, link_at: int, entries: list[tuple[int, int, int, int]], strip: bytes) -> int:
    """Append one IFD followed by its strip, link it from ``link_at``; return its own link position."""
    out.seek(0, 2)
    at = out.tell() + out.tell() % 2  # IFDs start on a word boundary
    if at + len(strip) + 256 >= 2**32:
        raise ValueError("write_cif writes files of at most 4 GiB")
    strip_at = at + 2 + 12 * len(entries) + 4
    out.write(b"\0" * (at - out.tell()) + struct.pack("<H", len(entries)))
    for tag, kind_, count, value in entries:
        out.write(_ENTRY.pack(tag, kind_, count, strip_at if tag == 273 else value))
    own_link = out.tell()
    out.write(struct.pack("<I", 0) + strip)
    out.seek(link_at)
    out.write(struct.pack("<I", at))
    return own_link


def _join_channels(stack: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, C*W): channels side by side, as in a CIF strip."""
    c, h, w = stack.shape
    return stack.transpose(1, 0, 2).reshape(h, c * w)
