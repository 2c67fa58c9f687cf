"""Native reader of Amnis/Cytek ``.cif`` files (ImageStream, FlowSight, IDEAS).

A CIF file is a classic little-endian TIFF whose IFD chain is: one header IFD (acquisition
XML, object count), then per object an image IFD (compression 30817) and a mask IFD
(compression 30818). Channels sit side by side in each strip. The format, as implemented
here, is described in ``shared/data/cif/README.md``; the codecs are in
:mod:`ifcml.io.cif_codec`, the writer in :mod:`ifcml.io.cif_writer`.

Reading is lazy: :class:`CifFile` indexes the IFD chain once (offsets only) and decodes
objects on demand, so memory does not grow with the file and object k is reached without
decoding the objects before it. Pixels follow Bio-Formats: uint16, modulo 2**16.

Every problem with a file is a :class:`CifError` naming the file, the object and what was
wrong; nothing in a hostile file makes the reader crash, hang or allocate without bound.
"""

from __future__ import annotations

import functools
import mmap
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from ifcml.errors import InputError
from ifcml.io.cif_codec import (
    StripError,
    concatenate_strips,
    decode_greyscale_spans,
    decode_mask_spans,
)

GREYSCALE, MASK = 30817, 30818
#: Largest object accepted, in pixels over all channels (a 12-channel 1200x1200 object fits).
MAX_OBJECT_PIXELS = 12 * 1200 * 1200
#: Largest number of IFDs walked (two per object): guards against absurd or looping chains.
MAX_IFDS = 2 * 10_000_000 + 1
#: Most values read from one numeric tag: a CIF object has one strip per IFD, a TIFF at most one
#: per row, so a larger count is damage, and reading it would allocate a Python int per value.
MAX_TAG_VALUES = 65_536
#: Longest text tag read (the acquisition XML of real files is tens of kilobytes).
MAX_TEXT_BYTES = 16 * 2**20

_TYPE_FORMAT = {
    1: "B",
    2: "s",
    3: "H",
    4: "I",
    5: "II",
    6: "b",
    7: "B",
    8: "h",
    9: "i",
    10: "ii",
    11: "f",
    12: "d",
}
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}


class CifError(InputError):
    """A CIF file is damaged or not what ifcml can read; the message says where and why."""


@dataclass
class CifObject:
    """One object (cell) of a CIF file."""

    index: int  # position in the file, 0-based
    object_id: int  # tag 33003
    image: np.ndarray  # (C, H, W) uint16
    mask: np.ndarray  # (C, H, W) uint8


@dataclass
class CifMetadata:
    """What a CIF file says about itself, read without decoding pixels."""

    path: Path
    n_objects: int
    n_channels: int
    channels: list[int]  # instrument channel numbers in use (1-based), in strip order
    channel_names: list[str] | None
    brightfield: list[int]  # instrument channel numbers lit by the bright-field LED
    magnification: float | None
    instrument: str | None
    acquisition_xml: str


class _Ifd:
    """The entries of one IFD; values are read leniently by their declared type."""

    def __init__(self, cif: CifFile, offset: int, what: str):
        self.cif, self.offset, self.what = cif, offset, what
        buf, size = cif.buffer, cif.size
        if offset + 2 > size:
            raise cif.error(what, f"IFD offset {offset} is past the end of the file ({size} bytes)")
        (n,) = struct.unpack_from("<H", buf, offset)
        self.end = offset + 2 + 12 * n + 4
        if self.end > size:
            raise cif.error(what, f"IFD at {offset} with {n} entries runs past the end of the file")
        fields = _entries_struct(n).unpack_from(buf, offset + 2)
        # tag -> (type, count, value or offset, file position of the value field)
        self.entries = {
            fields[4 * i]: (fields[4 * i + 1], fields[4 * i + 2], fields[4 * i + 3], offset + 2 + 12 * i + 8)
            for i in range(n)
        }
        (self.next,) = struct.unpack_from("<I", buf, self.end - 4)

    def values(self, tag: int, default=None, first: int | None = None) -> tuple | None:
        """The values of ``tag`` as a tuple (ASCII as one str), or ``default`` when absent.

        ``first`` reads only that many values (a damaged count then costs nothing).
        """
        if tag not in self.entries:
            return default
        kind, count, value, field_at = self.entries[tag]
        if kind not in _TYPE_SIZE:
            raise self.cif.error(self.what, f"tag {tag} has unknown TIFF type {kind}")
        wanted = count if first is None or kind == 2 else min(count, first)
        most = MAX_TEXT_BYTES if kind == 2 else MAX_TAG_VALUES
        if wanted > most:
            raise self.cif.error(self.what, f"tag {tag} declares {count} values; at most {most} expected")
        n_bytes = _TYPE_SIZE[kind] * count
        at = field_at if n_bytes <= 4 else self.cif.unwrap(value, self.end)  # values follow the IFD
        if at + n_bytes > self.cif.size:
            raise self.cif.error(self.what, f"tag {tag} ({count} values) points past the end of the file")
        raw = bytes(self.cif.buffer[at : at + _TYPE_SIZE[kind] * wanted])
        if kind == 2:
            return (raw.split(b"\0", 1)[0].decode("latin-1"),)
        return struct.unpack(f"<{wanted * _TYPE_FORMAT[kind]}", raw) if wanted else ()

    def integer(self, tag: int, default: int | None = None) -> int:
        """The first value of an integer tag (types that store it wrongly are read as declared)."""
        entry = self.entries.get(tag)
        if entry is not None and entry[1] == 1 and entry[0] in (3, 4):  # fast path: one inline SHORT/LONG
            return entry[2] & 0xFFFF if entry[0] == 3 else entry[2]
        values = self.values(tag, first=1)
        if not values:
            if default is None:
                raise self.cif.error(self.what, f"required tag {tag} is missing")
            return default
        value = values[0]
        if not isinstance(value, int):
            raise self.cif.error(self.what, f"tag {tag} should be an integer, found {value!r}")
        return value


class CifFile:
    """An open CIF file: metadata, object index, lazy decoding.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.buffer = self._array = None
        try:
            self._file = open(self.path, "rb")
        except OSError as exc:
            raise CifError(f"{self.path}: cannot open ({exc.strerror})") from exc
        try:
            self.size = self.path.stat().st_size
            if self.size < 8:
                raise self.error(None, f"only {self.size} bytes; not a CIF file")
            self.buffer = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            if bytes(self.buffer[:4]) != b"II*\x00":
                raise self.error(None, "not a little-endian classic TIFF (CIF files start with II*)")
            self.header = _Ifd(self, struct.unpack_from("<I", self.buffer, 4)[0], "header")
            self._ifd_offsets = self._walk_chain()
            self._ifd_array = np.array(self._ifd_offsets, dtype=np.int64)
            self._array = np.frombuffer(self.buffer, dtype=np.uint8)  # zero-copy view for compiled code
            self.metadata = self._read_metadata()
            self._release(0, self.size)  # the walk touched pages all over the file
        except BaseException:
            self.close()
            raise

    # -- errors and offsets -------------------------------------------------------------

    def error(self, what: str | None, problem: str) -> CifError:
        where = f"{self.path}" + (f", {what}" if what else "")
        return CifError(f"{where}: {problem}")

    def unwrap(self, stored: int, at_least: int) -> int:
        """A stored 32-bit offset as a file position.

        Files over 4 GiB store offsets modulo 2**32; data is laid out forwards, so the true
        offset is the first value congruent to ``stored`` at or after ``at_least``.
        """
        if self.size <= 2**32 or stored >= at_least:
            return stored
        return stored + ((at_least - stored + 2**32 - 1) >> 32 << 32)

    # -- structure ------------------------------------------------------------------------

    def _walk_chain(self) -> list[int]:
        """Offsets of every IFD after the header, following the chain once."""
        offsets, seen = [], {self.header.offset}
        position, at_least, released = self.header.next, self.header.end, 0
        while position:
            position = self.unwrap(position, at_least)
            problem = None
            if position in seen:
                problem = f"IFD chain loops back to offset {position}"
            elif len(offsets) >= MAX_IFDS:
                problem = f"more than {MAX_IFDS} IFDs; not a CIF file ifcml can read"
            elif position + 6 > self.size:
                problem = f"IFD offset {position} is past the end of the file ({self.size} bytes)"
            else:
                (n,) = struct.unpack_from("<H", self.buffer, position)
                at_least = position + 2 + 12 * n + 4
                if at_least > self.size:
                    problem = f"IFD at {position} runs past the end of the file"
            if problem:
                raise self.error(f"object {len(offsets) // 2}", problem)
            seen.add(position)
            offsets.append(position)
            (position,) = struct.unpack_from("<I", self.buffer, at_least - 4)
            if len(offsets) % 4096 == 0:  # keep the walk's resident pages bounded
                released = self._release(released, offsets[-1])
        if len(offsets) % 2:
            raise self.error(
                f"object {len(offsets) // 2}", "image IFD has no mask IFD after it (file truncated?)"
            )
        return offsets

    def _read_metadata(self) -> CifMetadata:
        header = self.header
        xml = (header.values(33027) or ("",))[0]
        names = None
        n_channels = header.integer(33000, 1)
        for tag in (33007, 33008):
            text = (header.values(tag) or ("",))[0]
            if "|" in text:
                names = text.split("|")
                n_channels = len(names)
        in_use = _xml_flags(xml, "ChannelInUseIndicators")
        if in_use is not None and sum(in_use):
            channels = [i + 1 for i, used in enumerate(in_use) if used]
            n_channels = len(channels)
        else:
            channels = list(range(1, n_channels + 1))
        if n_channels < 1:
            raise self.error("header", f"channel count {n_channels}; expected at least 1")
        brightfield = _xml_flags(xml, "BfLedIndicators") or []
        n_objects = len(self._ifd_offsets) // 2
        declared = header.integer(33018, n_objects)
        if declared != n_objects:
            raise self.error(
                "header", f"says {declared} objects (tag 33018) but the IFD chain holds {n_objects}"
            )
        magnification = _xml_text(xml, "Magnification")
        return CifMetadata(
            path=self.path,
            n_objects=n_objects,
            n_channels=n_channels,
            channels=channels,
            channel_names=names,
            brightfield=[i + 1 for i, lit in enumerate(brightfield) if lit],
            magnification=float(magnification) if _is_number(magnification) else None,
            instrument=(header.values(33006) or (None,))[0],
            acquisition_xml=xml,
        )

    def __len__(self) -> int:
        return self.metadata.n_objects

    # -- objects ---------------------------------------------------------------------------

    def _plan(self, index: int) -> tuple[int, tuple[int, int], bytes, bytes]:
        """Object ``index``: its id, full-strip shape and the bytes of its two strips."""
        what = f"object {index}"
        image = _Ifd(self, self._ifd_offsets[2 * index], what + " image IFD")
        mask = _Ifd(self, self._ifd_offsets[2 * index + 1], what + " mask IFD")
        shape = self._shape(image, what)
        if (mask.integer(257), mask.integer(256)) != shape:
            raise self.error(
                what, f"mask is {mask.integer(257)}x{mask.integer(256)}, image is {shape[0]}x{shape[1]}"
            )
        for ifd, code in ((image, GREYSCALE), (mask, MASK)):
            found = ifd.integer(259)
            if found != code:
                raise self.error(ifd.what, f"unknown compression code {found}; expected {code}")
        return image.integer(33003, index), shape, self._strip_bytes(image), self._strip_bytes(mask)

    def _shape(self, ifd: _Ifd, what: str) -> tuple[int, int]:
        height, width = ifd.integer(257), ifd.integer(256)
        n_channels = self.metadata.n_channels
        if width % n_channels:
            raise self.error(what, f"strip width {width} is not a multiple of the {n_channels} channels")
        if height * width > MAX_OBJECT_PIXELS:
            raise self.error(
                what, f"absurd size {height}x{width} (at most {MAX_OBJECT_PIXELS} pixels per object)"
            )
        return height, width

    def _strip_bytes(self, ifd: _Ifd) -> bytes:
        offsets = ifd.values(273)
        counts = ifd.values(279)
        if not offsets or not counts or len(offsets) != len(counts):
            raise self.error(
                ifd.what, "strip offsets (273) and byte counts (279) are missing or differ in number"
            )
        pieces, at_least = [], ifd.end
        for stored, count in zip(offsets, counts, strict=True):
            if not isinstance(stored, int) or not isinstance(count, int) or count < 0:
                raise self.error(ifd.what, f"strip offset {stored!r} / byte count {count!r} are not integers")
            start = self.unwrap(stored, at_least)
            if start + count > self.size:
                raise self.error(ifd.what, f"strip of {count} bytes at {start} runs past the end of the file")
            pieces.append(self.buffer[start : start + count])
            at_least = start + count
        return b"".join(pieces)

    def read(self, indices: Sequence[int]) -> list[CifObject]:
        """Decode the objects at ``indices`` (any order, random access), in one batch."""
        n = len(self)
        for index in indices:
            if not 0 <= index < n:
                raise IndexError(f"{self.path}: object {index} out of range (file has {n})")
        object_ids, shapes, data, image_spans, mask_spans = self._locate(list(indices))
        decoded, problem = [], None
        for strip, decode, spans in (
            ("image", decode_greyscale_spans, image_spans),
            ("mask", decode_mask_spans, mask_spans),
        ):
            try:
                decoded.append(decode(data, *spans, shapes))
            except StripError as exc:  # raised below, once no frame holds a view of the mapped file
                problem = (f"object {indices[exc.index]} {strip}", exc.problem)
                break
        if problem:
            del data
            raise self.error(*problem)
        c = self.metadata.n_channels
        return [
            CifObject(index, object_id, _split_channels(image, c), _split_channels(mask, c))
            for index, object_id, image, mask in zip(indices, object_ids, *decoded, strict=True)
        ]

    def _locate(self, indices: list[int]):
        """Object ids, full-strip shapes, and where each object's two strips are.

        The common layout (one strip per IFD, plain inline tags) is read by a compiled scan
        straight from the mapped file; anything else, including every damaged IFD, goes through
        the lenient Python reader, which also writes the precise error messages.
        """
        positions = np.array(indices, dtype=np.int64)
        info, simple = _scan_objects(
            self._array, self._ifd_array[2 * positions], self._ifd_array[2 * positions + 1],
            self.metadata.n_channels, MAX_OBJECT_PIXELS, self.size > 2**32,
        )  # fmt: skip
        if simple.all():
            object_ids = np.where(info[:, 0] >= 0, info[:, 0], positions).tolist()
            shapes = list(zip(info[:, 1].tolist(), info[:, 2].tolist(), strict=True))
            return object_ids, shapes, self._array, (info[:, 3], info[:, 4]), (info[:, 5], info[:, 6])
        plans = [self._plan(i) for i in indices]
        data, starts, ends = concatenate_strips([p[2] for p in plans] + [p[3] for p in plans])
        k = len(plans)
        return (
            [p[0] for p in plans],
            [p[1] for p in plans],
            data,
            (starts[:k], ends[:k]),
            (starts[k:], ends[k:]),
        )

    def __getitem__(self, index: int) -> CifObject:
        return self.read([index])[0]

    def __iter__(self) -> Iterator[CifObject]:
        return self.iter_objects()

    def iter_objects(self, batch: int = 64) -> Iterator[CifObject]:
        """All objects in file order, decoded ``batch`` at a time.

        When a batch holds a damaged object, the objects before it are still yielded, then
        the :class:`CifError` for it is raised. Pages of the file already decoded are handed
        back, so the resident memory of a long read does not grow with the file.
        """
        released = 0
        for start in range(0, len(self), batch):
            stop = min(start + batch, len(self))
            indices = list(range(start, stop))
            try:
                yield from self.read(indices)
            except CifError:
                for index in indices:  # yield the good prefix, then raise at the damaged object
                    yield self.read([index])[0]
                raise
            # IFDs and strips are laid out in file order: all before the next IFD is done with
            done = self._ifd_offsets[2 * stop] if stop < len(self) else self.size
            released = self._release(released, done)

    def _release(self, start: int, stop: int) -> int:
        """Hand the mapped pages of [start, stop) back to the OS (they stay in the page cache).

        Scans and long reads would otherwise leave the whole file resident in this process.
        Returns the page-aligned end of what was released.
        """
        first = start // mmap.PAGESIZE * mmap.PAGESIZE
        end = stop // mmap.PAGESIZE * mmap.PAGESIZE
        if end > first and self.buffer is not None:
            self.buffer.madvise(mmap.MADV_DONTNEED, first, end - first)
        return max(end, start)

    def _image_ifds(self) -> Iterator[tuple[int, _Ifd]]:
        """Every object's image IFD, in file order, keeping the resident pages bounded."""
        released = 0
        for index in range(len(self)):
            offset = self._ifd_offsets[2 * index]
            yield index, _Ifd(self, offset, f"object {index} image IFD")
            if index % 4096 == 4095:
                released = self._release(released, offset)
        self._release(0, self.size)

    def shapes(self) -> list[tuple[int, int]]:
        """(height, width) of every object, per channel, from the IFDs alone."""
        c = self.metadata.n_channels
        shapes = []
        for index, ifd in self._image_ifds():
            height, width = self._shape(ifd, f"object {index}")
            shapes.append((height, width // c))
        return shapes

    def backgrounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-object, per-channel background mean and std (tags 33052, 33053); NaN where absent."""
        c = self.metadata.n_channels
        means = np.full((len(self), c), np.nan)
        stds = np.full((len(self), c), np.nan)
        for index, ifd in self._image_ifds():
            for tag, out in ((33052, means), (33053, stds)):
                values = ifd.values(tag, ())
                if len(values) >= c:
                    out[index] = values[:c]
        return means, stds

    def close(self) -> None:
        self._array = None  # release the view before unmapping
        if self.buffer is not None:
            try:
                self.buffer.close()
            except BufferError:  # a view is still referenced somewhere; unmapped when collected
                pass
            self.buffer = None
        self._file.close()

    def __enter__(self) -> CifFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_cif(path: Path | str) -> Iterator[CifObject]:
    """Yield every object of a CIF file in file order, decoding lazily."""
    with CifFile(path) as cif:
        yield from cif.iter_objects()


def cif_metadata(path: Path | str) -> CifMetadata:
    """A CIF file's metadata, without decoding any pixels."""
    with CifFile(path) as cif:
        return cif.metadata


@numba.njit(cache=True, nogil=True)
def _scan_objects(buf, image_ifds, mask_ifds, n_channels, max_pixels, wrapped):  # pragma: no cover - compiled
    """Read the image/mask IFD pairs of the common layout straight from the file bytes.

    Returns info rows (object id or -1, height, width, image strip start, end, mask strip start,
    end) and whether each pair is simple and valid; any other pair is left to the Python reader.
    """
    n = image_ifds.size
    info = np.zeros((n, 7), np.int64)
    simple = np.ones(n, np.bool_)
    size = buf.size
    for i in range(n):
        for half in range(2):
            offset = image_ifds[i] if half == 0 else mask_ifds[i]
            if offset + 2 > size:
                simple[i] = False
                break
            count = np.int64(buf[offset]) | (np.int64(buf[offset + 1]) << 8)
            end = offset + 2 + 12 * count + 4
            if end > size:
                simple[i] = False
                break
            width = height = compression = strip = length = -1
            object_id = -1
            for e in range(count):
                at = offset + 2 + 12 * e
                tag = np.int64(buf[at]) | (np.int64(buf[at + 1]) << 8)
                if tag not in (256, 257, 259, 273, 279, 33003):
                    continue
                kind = np.int64(buf[at + 2]) | (np.int64(buf[at + 3]) << 8)
                values = np.int64(buf[at + 4]) | (np.int64(buf[at + 5]) << 8) | (np.int64(buf[at + 6]) << 16)
                values |= np.int64(buf[at + 7]) << 24
                if values != 1 or (kind != 3 and kind != 4):
                    simple[i] = False
                    break
                value = np.int64(buf[at + 8]) | (np.int64(buf[at + 9]) << 8)
                if kind == 4:
                    value |= (np.int64(buf[at + 10]) << 16) | (np.int64(buf[at + 11]) << 24)
                if tag == 256:
                    width = value
                elif tag == 257:
                    height = value
                elif tag == 259:
                    compression = value
                elif tag == 273:
                    strip = value
                elif tag == 279:
                    length = value
                else:
                    object_id = value
            if wrapped and strip >= 0 and strip < end:  # offsets of files over 4 GiB wrap at 2**32
                strip += ((end - strip + 2**32 - 1) >> 32) << 32
            expected = GREYSCALE if half == 0 else MASK
            if (
                not simple[i] or compression != expected or width <= 0 or height <= 0
                or strip < 0 or length < 0 or strip + length > size
                or width % n_channels != 0 or width * height > max_pixels
            ):  # fmt: skip
                simple[i] = False
                break
            if half == 0:
                info[i, 0], info[i, 1], info[i, 2] = object_id, height, width
                info[i, 3], info[i, 4] = strip, strip + length
            else:
                if height != info[i, 1] or width != info[i, 2]:
                    simple[i] = False
                info[i, 5], info[i, 6] = strip, strip + length
    return info, simple


@functools.lru_cache(maxsize=64)
def _entries_struct(n: int) -> struct.Struct:
    """A parser of ``n`` consecutive 12-byte IFD entries."""
    return struct.Struct("<" + "HHII" * n)


def _split_channels(strip: np.ndarray, n_channels: int) -> np.ndarray:
    """(H, C*W) -> (C, H, W), a view (no copy)."""
    h, width = strip.shape
    return strip.reshape(h, n_channels, width // n_channels).transpose(1, 0, 2)


def _xml_text(xml: str, element: str) -> str | None:
    """Text of the first element whose name starts with ``element`` (root names are scrambled)."""
    match = re.search(rf"<({re.escape(element)}[\w.\-]*)>([^<]*)</\1>", xml)
    return match.group(2) if match else None


def _xml_flags(xml: str, element: str) -> list[bool] | None:
    text = _xml_text(xml, element)
    return None if text is None else [token == "1" for token in text.split()]


def _is_number(text: str | None) -> bool:
    try:
        float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True
