"""Hostile CIF files: thousands of mutations of the real example.cif.

Each mutated file must either read cleanly or fail with a CifError that names the file (and
the object, when the damage is in an object) -- never another exception, a hang or an
unbounded allocation. The fast suite runs FAST_CASES mutations; the slow suite SLOW_CASES
more (10,000).
"""

from __future__ import annotations

import struct
import tracemalloc
from dataclasses import dataclass
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SHARED_DATA
from ifcml.io.cif import CifError, CifFile

EXAMPLE = SHARED_DATA / "cif" / "example.cif"
FAST_CASES = 500
SLOW_CASES = 10_000
MEMORY_SAMPLE = 10  # allocations are traced on every 10th case (tracing is slow)


@dataclass
class Layout:
    """Where the structures of example.cif are, so mutations can aim at them."""

    data: bytes
    ifds: list[int]  # offsets of all IFDs, header first
    entries: list[tuple[int, int, int]]  # (IFD index, tag, position of the 12-byte entry)
    strips: list[tuple[int, int, int]]  # (IFD index, start, length)


def _layout() -> Layout:
    data = EXAMPLE.read_bytes()
    ifds, entries, strips = [], [], []
    offset = struct.unpack_from("<I", data, 4)[0]
    while offset:
        ifds.append(offset)
        (n,) = struct.unpack_from("<H", data, offset)
        tags = {}
        for i in range(n):
            position = offset + 2 + 12 * i
            tag, _, _, value = struct.unpack_from("<HHII", data, position)
            entries.append((len(ifds) - 1, tag, position))
            tags[tag] = value
        if len(ifds) > 1:
            strips.append((len(ifds) - 1, tags[273], tags[279]))
        offset = struct.unpack_from("<I", data, offset + 2 + 12 * n)[0]
    return Layout(data, ifds, entries, strips)


@pytest.fixture(scope="module")
def layout():
    if not EXAMPLE.is_file():
        pytest.skip(f"real CIF file not found at {EXAMPLE}")
    return _layout()


def _put(data: bytearray, position: int, fmt: str, value: int) -> None:
    struct.pack_into(fmt, data, position, value % (1 << (8 * struct.calcsize(fmt))))


@st.composite
def mutations(draw, layout: Layout):
    """Edits that damage example.cif: ("put", position, struct format, value), ("xor", position,
    mask) or ("truncate", length). Kept small so hypothesis does not hold megabytes per example."""
    data, size, edits = layout.data, len(layout.data), []
    kind = draw(
        st.sampled_from(
            ["truncate", "flip", "compression", "loop", "past_end", "strip_length", "run_bytes", "size",
             "entry_count", "tag_type", "object_count", "many"]
        )
    )  # fmt: skip
    pick = lambda seq: seq[draw(st.integers(0, len(seq) - 1))]  # noqa: E731
    object_entries = [e for e in layout.entries if e[0] > 0]
    steps = draw(st.integers(2, 6)) if kind == "many" else 1
    for _ in range(steps):
        action = (
            draw(st.sampled_from(["flip", "past_end", "size", "strip_length", "run_bytes"]))
            if kind == "many"
            else kind
        )
        if action == "truncate":
            edits.append(("truncate", draw(st.integers(0, size - 1))))
        if action == "flip":
            region = pick(layout.strips) if draw(st.booleans()) else None
            if region:
                _, start, length = region
                position = draw(st.integers(start, start + max(length - 1, 0)))
            else:
                position = pick(object_entries)[2] + draw(st.integers(0, 11))
            edits.append(("xor", position, 1 << draw(st.integers(0, 7))))
        elif action == "compression":
            entry = pick([e for e in object_entries if e[1] == 259])
            edits.append(
                ("put", entry[2] + 8, "<H", draw(st.sampled_from([0, 1, 5, 7, 30816, 30819, 65535])))
            )
        elif action == "loop":
            i = draw(st.integers(1, len(layout.ifds) - 1))
            (n,) = struct.unpack_from("<H", data, layout.ifds[i])
            target = layout.ifds[draw(st.integers(0, i))]
            edits.append(("put", layout.ifds[i] + 2 + 12 * n, "<I", target))
        elif action == "past_end":
            entry = pick([e for e in object_entries if e[1] in (273, 279)] + [(0, 0, layout.ifds[1] - 4)])
            field = entry[2] + 8 if entry[1] else entry[2]
            edits.append(("put", field, "<I", size + draw(st.integers(-16, 2**31))))
        elif action == "strip_length":
            entry = pick([e for e in object_entries if e[1] == 279])
            (value,) = struct.unpack_from("<I", data, entry[2] + 8)
            edits.append(("put", entry[2] + 8, "<I", value + draw(st.integers(-64, 64))))
        elif action == "run_bytes":
            _, start, length = pick([s for s in layout.strips if s[0] % 2 == 0])  # mask strips
            position = start + 2 * draw(st.integers(0, length // 2 - 1)) + 1
            edits.append(("put", position, "<B", draw(st.integers(0, 255))))
        elif action == "size":
            entry = pick([e for e in object_entries if e[1] in (256, 257)])
            edits.append(
                ("put", entry[2] + 8, "<I", draw(st.sampled_from([0, 1, 7, 65535, 2**20, 2**31, 2**32 - 1])))
            )
        elif action == "entry_count":
            edits.append(("put", pick(layout.ifds), "<H", draw(st.sampled_from([0, 1, 255, 65535]))))
        elif action == "tag_type":
            entry = pick(layout.entries)
            edits.append(("put", entry[2] + 2, "<H", draw(st.sampled_from([0, 13, 14, 99, 65535]))))
        elif action == "object_count":
            entry = next(e for e in layout.entries if e[0] == 0 and e[1] == 33018)
            edits.append(("put", entry[2] + 8, "<I", draw(st.integers(0, 2**32 - 1))))
    return edits


def _apply(data: bytes, edits: list[tuple]) -> bytes:
    out = bytearray(data)
    for edit in edits:
        if edit[0] == "truncate":
            del out[edit[1] :]
        elif edit[0] == "xor":
            out[edit[1]] ^= edit[2]
        else:
            _put(out, *edit[1:])
    return bytes(out)


def _read_everything(path) -> None:
    with CifFile(path) as cif:
        cif.shapes()
        cif.backgrounds()
        for _ in cif:
            pass


def _check(path, data: bytes, trace: bool) -> int:
    """Read a damaged file; return the peak of memory allocated while reading it (bytes, when traced)."""
    path.write_bytes(data)
    if trace:
        tracemalloc.start()
    try:
        _read_everything(path)
    except CifError as exc:
        message = str(exc)
        assert message.startswith(str(path)), message
        assert len(message.splitlines()) == 1
    finally:
        peak = tracemalloc.get_traced_memory()[1] if trace else 0
        tracemalloc.stop()
    return peak


def _fuzz(layout, tmp_path, cases: int) -> None:
    target = tmp_path / "mutated.cif"
    peaks = []
    worst: list = [0, None]  # the largest traced allocation and the edits that made it

    @settings(
        max_examples=cases,
        deadline=timedelta(seconds=5),  # a hang or a runaway decode fails the example
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,
        ],
        database=None,
    )
    @given(edits=mutations(layout))
    def run(edits):
        peaks.append(_check(target, _apply(layout.data, edits), trace=len(peaks) % MEMORY_SAMPLE == 0))
        if peaks[-1] > worst[0]:
            worst[:] = [peaks[-1], edits]

    run()
    assert len(peaks) >= cases * 0.9  # hypothesis ran (nearly) the number of cases stated
    # numpy's buffers are traced: no damaged header or size makes the reader allocate much
    assert max(peaks) < 64 * 2**20, (
        f"reading one mutated file allocated {max(peaks) / 2**20:.0f} MiB; its edits: {worst[1]!r}"
    )


def test_hostile_mutations_fail_cleanly(layout, tmp_path):
    _fuzz(layout, tmp_path, FAST_CASES)


@pytest.mark.slow
def test_many_more_hostile_mutations_fail_cleanly(layout, tmp_path):
    _fuzz(layout, tmp_path, SLOW_CASES)


def _field(layout: Layout, ifd: int, tag: int) -> int:
    """Position of the value field of ``tag`` in IFD number ``ifd`` (0 = header, 1 = object 0 image)."""
    return next(position for i, t, position in layout.entries if i == ifd and t == tag) + 8


def _link(layout: Layout, ifd: int) -> int:
    """Position of IFD ``ifd``'s next-IFD pointer."""
    (n,) = struct.unpack_from("<H", layout.data, layout.ifds[ifd])
    return layout.ifds[ifd] + 2 + 12 * n


SPECIFIC_DAMAGE = {
    # cut inside object 2's mask strip: the chain then points past the end at object 3's IFD
    "truncated": (lambda L: L.data[: L.strips[5][1] + 10], "object 3: IFD offset .* past the end"),
    "unknown compression": (
        lambda L: _with(L.data, _field(L, 3, 259), "<H", 7),
        "object 1 image IFD.*code 7",
    ),
    "IFD loop": (lambda L: _with(L.data, _link(L, 4), "<I", L.ifds[2]), "loops"),
    "mask runs underrun": (
        lambda L: _with(L.data, _field(L, 2, 279), "<I", L.strips[1][2] - 2),
        "object 0 mask.*runs cover",
    ),
    "greyscale strip too short": (
        lambda L: _with(L.data, _field(L, 1, 279), "<I", 100),
        "object 0 image.*cannot hold",
    ),
    "absurd height": (lambda L: _with(L.data, _field(L, 5, 257), "<I", 2**31), "object 2.*absurd size"),
    "absurd value count": (
        lambda L: _with(L.data, _field(L, 1, 273) - 4, "<I", 2**17),
        "object 0 image IFD: tag 273 declares 131072 values",
    ),
    "strip past the end": (
        lambda L: _with(L.data, _field(L, 7, 273), "<I", 2**31),
        "object 3 image.*past the end",
    ),
}


@pytest.mark.parametrize("name", SPECIFIC_DAMAGE)
def test_specific_damage_is_named(layout, tmp_path, name):
    damage, expected = SPECIFIC_DAMAGE[name]
    path = tmp_path / "damaged.cif"
    path.write_bytes(damage(layout))
    with pytest.raises(CifError, match=expected):
        _read_everything(path)


def test_a_damaged_value_count_allocates_nothing_for_it(layout, tmp_path):
    """The mutation behind a CI failure: one flipped bit made object 0's compression tag declare
    1,048,577 values, and the reader built a tuple of all of them (76 MiB) to read the first."""
    path = tmp_path / "damaged.cif"
    _read_everything(EXAMPLE)  # compiled code is loaded before memory is traced
    damaged = _with(layout.data, _field(layout, 1, 259) - 2, "<B", 16)  # count 1 -> 1 + 16 * 2**16
    path.write_bytes(damaged)
    with pytest.raises(CifError, match="object 0 image IFD: unknown compression"):
        _read_everything(path)
    assert _check(path, damaged, trace=True) < 2**20


def _with(data: bytes, position: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    _put(out, position, fmt, value)
    return bytes(out)


def test_good_objects_before_a_damaged_one_are_still_read(layout, tmp_path):
    path = tmp_path / "damaged.cif"
    path.write_bytes(_with(layout.data, _field(layout, 2 * 40 + 1, 259), "<H", 1))
    seen = []
    with pytest.raises(CifError, match="object 40 image"), CifFile(path) as cif:
        for obj in cif:
            seen.append(obj.index)
    assert seen == list(range(40))
