"""The feature table: one row per cell, ``Metadata_*`` first, computed chunk by chunk.

Every finished chunk is written at once as its own part (an Arrow IPC file: written and read
back at a small fraction of a Parquet file's per-column cost) in a hidden working folder
beside the output, together with a manifest of what is being computed (store hash, recipe,
channels, engine). A killed run is resumed with ``resume=True``: finished parts are kept and
only missing chunks are computed. The parts become the table only when all are there; an
existing table is never replaced unless asked.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import yaml

from ifcml import __version__
from ifcml.cells import CELL, FAILED, METADATA, feature_columns
from ifcml.errors import InputError, StoreError
from ifcml.executors import Running, executor
from ifcml.features.objects import cell_objects, check_objects
from ifcml.features.quality import quality_columns
from ifcml.features.recipe import Recipe
from ifcml.features.wanted import Wanted
from ifcml.io.store import CellStore
from ifcml.outputs import is_ifcml_table, replace_atomically, writing

ENGINES = ("cp-measure", "cellprofiler")
PART_SUFFIX = ".arrow"
ROW_GROUP_BYTES = 64 * 2**20  # of the table, in memory while it is written


@dataclass(frozen=True)
class FeatureJob:
    """Everything a worker needs to measure one chunk (small and picklable)."""

    store: Path
    store_digest: str  # the store's images SHA-256: a store replaced during the run is noticed
    channels: tuple[str, ...]
    recipe: Recipe
    engine: str

    def manifest(self, store: CellStore) -> dict:
        return {
            "ifcml_version": __version__,
            "store_images_sha256": self.store_digest,
            "n_cells": store.n_cells,
            "channels": list(self.channels),
            "engine": self.engine,
            "recipe_digest": self.recipe.digest(),
            "chunk_cells": self.recipe.chunk_cells,
            "instrument_masks": store.masks is not None,  # what segmentation "auto" used
            "recipe": self.recipe.model_dump(mode="json"),  # an exported model measures the same way
        }


@lru_cache(maxsize=4)
def _open_store(path: Path, digest: str) -> CellStore:
    """One open store per worker process: cells.parquet is read once, not once per chunk."""
    store = CellStore(path)
    if store.meta["images_sha256"] != digest:
        raise StoreError(f"{path}: the store changed while its features were being computed")
    return store


def measure_chunk(job: FeatureJob, start: int, stop: int) -> pd.DataFrame:
    """Metadata and features of cells ``start:stop`` of the store (runs in a worker)."""
    store = _open_store(job.store, job.store_digest)
    picked = store.channel_indices(job.channels)
    images = store.read(start, stop, picked)
    masks = store.read_masks(start, stop, picked)
    rows = store.cells.iloc[start:stop]
    sizes = rows[["height", "width"]].to_numpy()
    features = measure_images(images, masks, sizes, list(job.channels), job.recipe, job.engine)
    table = pd.DataFrame({f"Metadata_{c}": rows[c].to_numpy() for c in METADATA})
    return pd.concat([table, features.set_index(table.index)], axis=1)


def measure_images(
    images: np.ndarray,
    masks: np.ndarray | None,
    sizes: np.ndarray,
    channels: list[str],
    recipe: Recipe,
    engine: str = "cp-measure",
    wanted: Wanted | None = None,
) -> pd.DataFrame:
    """``FAILED`` and every feature of cells (N, C, H, W) whose true sizes are ``sizes`` (N, 2).

    Each cell is measured from its own pixels only: the same cell gives the same row in any
    batch, store or exported model. With ``wanted`` (cp-measure engine), families none of whose
    columns are wanted are skipped; the others' values are unchanged.
    """
    cells, expanded = cell_objects(images, masks, sizes, channels, recipe)
    if engine == "cellprofiler":  # one pipeline measures everything
        from ifcml.features.cellprofiler import measure_cells

        columns = measure_cells(images, channels, cells, expanded, recipe)
    else:
        from ifcml.features.measure import measure_cells

        columns = measure_cells(images, channels, cells, expanded, recipe, wanted)
    quality = recipe.measurements.quality.enabled and (wanted is None or wanted.quality())
    if quality:  # ifcml's own family, the same for either engine
        columns |= quality_columns(images, sizes, channels, cells)
    failed = pd.DataFrame({FAILED: ~cells.reshape(len(cells), -1).any(axis=1)})
    return pd.concat([failed, pd.DataFrame(columns, index=failed.index)], axis=1)


def write_features(
    store_path: Path | str,
    out: Path | str,
    *,
    recipe: Recipe | None = None,
    engine: str = "cp-measure",
    channels: Iterable[str] | None = None,
    run: Running = Running(),
) -> Path:
    """Measure every cell of a store into ``out`` (Parquet), chunks run as ``run`` says;
    returns ``out``."""
    store = CellStore(store_path)
    out = Path(out)
    if engine not in ENGINES:
        raise StoreError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    recipe = recipe or Recipe()
    chosen = tuple(channels) if channels else tuple(store.channels)
    store.channel_indices(chosen)  # unknown channel names fail here, before any work
    check_objects(recipe, chosen, has_masks=store.masks is not None)
    job = FeatureJob(store.path.resolve(), store.meta["images_sha256"], chosen, recipe, engine)
    with writing(out, run.overwrite, is_ifcml_table, "an ifcml feature table"):
        _measure_into(store, job, out, run)
    return out


def _measure_into(store: CellStore, job: FeatureJob, out: Path, run: Running) -> None:
    """Measure the missing chunks into the working folder, then assemble ``out`` (claimed)."""
    parts = _open_parts(out, job.manifest(store), run.resume)
    step = job.recipe.chunk_cells
    chunks = [(a, min(a + step, store.n_cells)) for a in range(0, store.n_cells, step)]
    todo = [(a, b) for a, b in chunks if not _part_path(parts, a, b).exists()]
    if run.on_cells:
        run.on_cells(store.n_cells - sum(b - a for a, b in todo))
    with executor(run.workers, run.scheduler, jobs=len(todo)) as pool:
        _run_chunks(job, todo, parts, pool, run.on_cells, remote=run.scheduler is not None)
    _assemble(parts, [_part_path(parts, a, b) for a, b in chunks], out)
    settings = {"engine": job.engine, "channels": list(job.channels), **job.recipe.model_dump()}
    out.with_suffix(".recipe.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    shutil.rmtree(parts)


def _run_chunks(job, todo, parts: Path, pool: Executor | None, on_cells, remote: bool) -> None:
    """Measure chunks and write each as a part. Local workers write their own parts (the
    conversion to Parquet is a tenth of a chunk's time, and here it would hold up a core);
    a Dask cluster's workers may not see this machine's folders, so their tables come back."""
    if pool is None:
        done = ((a, b, _measure_part(job, a, b, parts)) for a, b in todo)
    else:
        work = measure_chunk if remote else partial(_measure_part, parts=parts)
        futures = {pool.submit(work, job, a, b): (a, b) for a, b in todo}
        done = ((*futures.pop(f), f.result()) for f in as_completed(list(futures)))
    for start, stop, result in done:
        if remote:
            _write_part(parts, start, stop, result)
        if on_cells:
            on_cells(stop - start)


def _measure_part(job: FeatureJob, start: int, stop: int, parts: Path) -> None:
    """:func:`measure_chunk`, written as its part where it runs."""
    _write_part(parts, start, stop, measure_chunk(job, start, stop))


def _write_part(parts: Path, start: int, stop: int, table: pd.DataFrame) -> None:
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    replace_atomically(
        _part_path(parts, start, stop), lambda tmp: feather.write_feather(arrow, tmp, compression="lz4")
    )


def _open_parts(out: Path, manifest: dict, resume: bool) -> Path:
    """The working folder of finished chunks, checked against what this run computes."""
    parts = out.parent / f".{out.name}.parts"
    manifest_path = parts / "manifest.json"
    if parts.exists() and not any(parts.glob("part-*")):  # parts of any format: never discarded unasked
        shutil.rmtree(parts)  # a run that failed before finishing a chunk: nothing to keep
    if parts.exists():
        finished = len(list(parts.glob("part-*")))
        if not resume:
            raise StoreError(
                f"{parts}: an interrupted run left {finished} finished chunk(s) here; "
                "pass --resume to continue it, or remove the folder to start again"
            )
        previous = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        changed = sorted(k for k in manifest if previous.get(k) != manifest[k])
        if changed:
            raise StoreError(
                f"{parts}: the interrupted run computed something else ({', '.join(changed)} differ); "
                "remove the folder to start again"
            )
        return parts

    def with_manifest(fresh: Path) -> None:  # the folder appears with its manifest or not at all
        fresh.mkdir(parents=True)
        (fresh / "manifest.json").write_text(json.dumps(manifest, indent=2))

    return replace_atomically(parts, with_manifest)


def _part_path(parts: Path, start: int, stop: int) -> Path:
    return parts / f"part-{start:010d}-{stop:010d}{PART_SUFFIX}"


def _assemble(parts: Path, files: list[Path], out: Path) -> None:
    """Concatenate the parts into ``out``, columns the union in order, in row groups of about
    ``ROW_GROUP_BYTES``: large groups compress and read back far better than one per chunk,
    and memory stays bounded whatever the number of cells."""
    names: dict[str, pa.DataType] = {}
    for path in files:
        with pa.memory_map(str(path)) as source:
            for field in pa.ipc.open_file(source).schema:
                if field.name not in names or pa.types.is_null(names[field.name]):
                    names[field.name] = field.type
    schema = pa.schema(
        [(n, t if not pa.types.is_null(t) else pa.float64()) for n, t in names.items()],
        metadata={"ifcml": (parts / "manifest.json").read_text()},  # store hash, recipe, channels
    )

    def conform(part: pa.Table) -> pa.Table:
        if part.schema.equals(schema):  # as nearly every part is
            return part
        present = set(part.column_names)
        for name in (n for n in schema.names if n not in present):  # a chunk without objects measures nothing
            part = part.append_column(name, pa.nulls(len(part), schema.field(name).type))
        return part.select(schema.names).cast(schema)

    def concatenate(tmp: Path) -> None:
        with pq.ParquetWriter(tmp, schema) as writer:
            group: list[pa.Table] = []
            held = 0
            for i, path in enumerate(files):
                group.append(conform(feather.read_table(path)))
                held += group[-1].get_total_buffer_size()
                if held >= ROW_GROUP_BYTES or i == len(files) - 1:
                    rows = sum(len(t) for t in group)
                    writer.write_table(pa.concat_tables(group), row_group_size=max(rows, 1))
                    group, held = [], 0

    replace_atomically(out, concatenate)


def table_manifest(path: Path | str) -> dict:
    """What a feature table was computed from (store hash, channels, engine, recipe digest)."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except Exception as exc:  # pyarrow raises several kinds for a damaged or foreign file
        raise InputError(f"{path}: not a readable Parquet table ({exc})") from exc
    return json.loads(metadata.get(b"ifcml", b"{}"))


def read_features(path: Path | str) -> pd.DataFrame:
    """A feature table, with the feature columns as float64."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such feature table (make one with `ifcml features`)")
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several kinds for a damaged or foreign file
        raise InputError(f"{path}: not a readable Parquet table ({exc})") from exc
    if CELL not in table:
        raise InputError(f"{path}: not an ifcml feature table (no {CELL} column)")
    features = feature_columns(table)
    table[features] = table[features].astype(np.float64)
    return table
