"""Embedding backfills on Ray Data: the rows a build needs embedded go to the cluster as Arrow
blocks, a pool of actors running jammi's own encoder embeds them, and the embedded rows stream
back to the caller, which writes them (DuckDB stays on this machine).

The model reaches the actors through the object store, its folder's files as bytes unpacked to
a temporary folder in each actor, so no file system is shared. The actors load it with
:func:`jammi_sql.inference.loader.load` at the precision this process settled on (``auto``'s
guard ran here, once), so every row of a table is embedded alike whichever path embedded it,
and they split texts with :func:`jammi_sql.inference.infer.split_documents`, the local path's
chunking and truncation count. A worker that dies fails the run: actors are not restarted, so
a text that kills its worker (out of memory, say) fails the call at once instead of killing
worker after worker; the run is all or nothing anyway. A cancel shuts the pipeline down.
"""

from __future__ import annotations

import tempfile
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import CancelledError, JammiError
from . import cluster

BLOCK = 256  # source rows per block: a cancel or a dead worker is seen within one block
COLUMNS = ["key", "column_name", "text", "text_hash"]  # what a worker gets of a row
POLL = 0.2  # seconds between looks at whether the caller was cancelled


@dataclass(frozen=True)
class Model:
    """What the actors load: the model's folder (and a fine-tuned folder on it) and precision."""

    folder: Path
    adapter_folder: Path | None
    precision: str  # as settled here: fp32, bf16, fp16, onnx or onnx-int8
    chunk_tokens: int | None
    chunk_overlap: int


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), to unpack on a worker."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def unpack(files: dict[str, bytes], into: Path) -> Path:
    for name, data in files.items():
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return into


class Embedder:
    """One Ray Data actor: the model unpacked and loaded once, then one block at a time."""

    def __init__(self, shipped: list, model: Model):
        import ray

        from ..inference.loader import load

        base_files, adapter_files = ray.get(shipped[0]), ray.get(shipped[1])
        self.scratch = tempfile.TemporaryDirectory(prefix="jammi-model-")
        root = Path(self.scratch.name)
        base = unpack(base_files, root / "base")
        adapter = unpack(adapter_files, root / "adapter") if adapter_files is not None else None
        self.model = model
        self.encoder = load(base, adapter, model.precision)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from ..inference.infer import SLICE, Documents, document_rows, split_documents

        model, encoder = self.model, self.encoder
        texts = batch.column("text").to_pylist()
        owner, rows, truncated = split_documents(
            encoder, texts, model.chunk_tokens, model.chunk_overlap
        )
        vectors = np.empty((len(rows), encoder.dimensions), dtype=np.float32)
        for start in range(0, len(rows), SLICE):
            vectors[start : start + SLICE] = encoder.encode(rows[start : start + SLICE])
        out = document_rows(
            batch, Documents(owner, rows, vectors, truncated), model.chunk_tokens is not None
        )
        # the block's tallies ride on its first row: input rows done, texts cut
        tally = np.zeros((out.num_rows, 2), dtype=np.int64)
        if out.num_rows:
            tally[0] = (batch.num_rows, truncated)
        out = out.append_column("_rows", pa.array(tally[:, 0]))
        return out.append_column("_truncated", pa.array(tally[:, 1]))


def backfill(
    batches: Iterable[pa.RecordBatch],
    model: Model,
    *,
    address: str | None = None,
    workers: int | None = None,
    on_rows: Callable[[int], None] | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Iterator[tuple[pa.Table, int]]:
    """Embed ``batches`` of (key, column_name, text, text_hash) on Ray Data; yields, as blocks
    finish and in no set order, (rows, texts cut at the model's limit) where rows are key,
    column_name, [chunk,] text, text_hash, embedding (see inference.infer.document_rows).

    ``workers``: actors (one CPU each; default: every CPU of the cluster). ``on_rows(n)``
    hears the input rows done so far; ``cancelled()`` is asked from a watcher thread and,
    once true, the pipeline is shut down and :class:`CancelledError` raised. A failure on
    the cluster raises :class:`cluster.ClusterError`. The caller commits nothing until the
    generator is exhausted: then every row sent has come back exactly once (checked).
    """
    ray = cluster.connect(address)
    from ray import data as ray_data

    cluster.quiet()

    blocks, sent = [], 0
    for batch in batches:  # Arrow blocks in the object store (spilled to disk when large)
        if cancelled():
            raise _cancelled()
        batch = pa.Table.from_batches([batch]).select(COLUMNS)
        for start in range(0, batch.num_rows, BLOCK):
            blocks.append(ray.put(batch.slice(start, BLOCK)))
        sent += batch.num_rows
    if not sent:
        return
    shipped = [
        ray.put(folder_files(model.folder)),
        ray.put(None if model.adapter_folder is None else folder_files(model.adapter_folder)),
    ]
    size = max(1, min(workers or cluster.cpus() or 1, len(blocks)))
    with warnings.catch_warnings():  # max_restarts has no named parameter yet (Ray 2.60)
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        ds = ray_data.from_arrow_refs(blocks).map_batches(
            Embedder,
            fn_constructor_args=(shipped, model),
            batch_size=None,  # a block as it is
            batch_format="pyarrow",
            compute=ray_data.ActorPoolStrategy(size=size),
            num_cpus=1,
            max_restarts=0,  # a dead worker fails the run (see the module's docstring)
        )
    done, stop = 0, threading.Event()
    watcher = threading.Thread(target=_watch, args=(ds, cancelled, stop), daemon=True)
    watcher.start()
    try:
        for block in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1):
            if cancelled():
                raise _cancelled()
            done += int(block.column("_rows").to_numpy().sum())
            if on_rows is not None:
                on_rows(done)
            truncated = int(block.column("_truncated").to_numpy().sum())
            yield block.drop_columns(["_rows", "_truncated"]), truncated
    except JammiError:
        raise
    except Exception as exc:
        if cancelled():
            raise _cancelled() from None
        raise cluster.ClusterError(
            f"the backfill failed on the Ray cluster ({_reason(exc)}); nothing was written: "
            "run it again (a worker that died may have run out of memory: see the Ray logs)"
        ) from None
    finally:
        stop.set()
        _shutdown(ds)
    if cancelled():
        raise _cancelled()
    if done != sent:
        raise cluster.ClusterError(
            f"the Ray cluster returned {done:,} of {sent:,} rows; nothing was written: run it again"
        )


def _watch(ds, cancelled: Callable[[], bool], stop: threading.Event) -> None:
    """Shut the pipeline down as soon as the caller is cancelled, without waiting for the
    block in flight to come back (the caller then raises CancelledError)."""
    while not stop.wait(POLL):
        if cancelled():
            _shutdown(ds)
            return


def _shutdown(ds) -> None:
    # Ray Data has no public way to stop a running dataset from another thread; its executor
    # is reachable once the first block is out. Before that, the consumer sees the cancel at
    # the first block and leaving the iteration shuts the executor down.
    executor = getattr(ds, "_current_executor", None)
    if executor is not None:
        try:
            executor.shutdown(force=True)
        except Exception:  # already shut down, or Ray going away
            pass


def _cancelled() -> CancelledError:
    return CancelledError(
        "the call was cancelled (Ctrl-C or interrupt()); the Ray work was stopped and what it "
        "had written was rolled back, so run it again to start over"
    )


def _reason(exc: BaseException) -> str:
    """The first line that says what went wrong, from Ray's wrapped errors."""
    cause = exc
    while cause.__cause__ is not None and not isinstance(cause, JammiError):
        cause = cause.__cause__
    text = str(cause).strip() or type(cause).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    died = [line for line in lines if "died" in line.lower() or "exit" in line.lower()]
    return f"{type(cause).__name__}: {(died or lines or [text])[0]}"[:300]
