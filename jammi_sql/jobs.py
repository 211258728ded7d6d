"""JobRunner: submit, worker, progress, cancel, resume.

``submit`` validates everything on the caller's thread and writes a ``queued`` row only
when all is well. A worker thread with its own DuckDB cursor then trains, one job at a
time by default, writing progress to ``jammi.jobs`` and ``jammi.job_metrics``; those writes
commit on their own, so any client sees them while the job runs.
"""

from __future__ import annotations

import json
import math
import queue
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from . import progress
from .catalog import Catalog, JobRecord, ModelRecord
from .config import FineTuneConfig, normalize_method, normalize_task
from .errors import DataError, InvalidArgumentError, JammiError, JobStateError, NotFoundError
from .models import ModelRef, ModelRegistry
from .sources import get_source, quote_ident, relation, require_columns

FINAL = ("succeeded", "failed", "cancelled")
NUMERIC = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "FLOAT",
    "DOUBLE",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
)
MIN_TRAIN_ROWS = 2
POLL_S = 0.5  # how often wait_job refreshes the progress it shows
PROGRESS_STEPS = 1000

# Jobs running in this process, across every database opened here: a second connection to
# the same file must not mistake them for jobs a dead process left behind.
_LIVE: set[str] = set()


def _is_numeric(type_name: str) -> bool:
    return type_name in NUMERIC or type_name.startswith("DECIMAL")


@dataclass
class _Plan:
    """A validated job, ready to run."""

    job_id: str
    resume: bool = False


class JobRunner:
    def __init__(
        self, catalog: Catalog, models: ModelRegistry, home: Path, max_concurrent: int = 1
    ):
        self.catalog = catalog  # its own cursor
        self.models = models
        self.home = home
        self._queue: queue.Queue[_Plan | None] = queue.Queue()
        self._stop_flags: dict[str, threading.Event] = {}
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._shutdown = False
        self._cancelled: set[str] = set()  # stopped by cancel_job, not by closing the database
        self._mark_interrupted()
        self._workers = [
            threading.Thread(target=self._work, name=f"jammi-job-worker-{i}", daemon=True)
            for i in range(max(1, max_concurrent))
        ]
        for worker in self._workers:
            worker.start()

    # ---- submitting ---------------------------------------------------------------
    def submit(
        self,
        source: str,
        base_model: str,
        columns: list[str],
        method: str = "lora",
        task: str = "text_embedding",
        config: FineTuneConfig | dict | str | None = None,
    ) -> str:
        """Validate at once; on success write a queued job and return its id."""
        from .data import resolve_loss

        method = normalize_method(method)
        task = normalize_task(task)
        cfg = config if isinstance(config, FineTuneConfig) else FineTuneConfig.from_mapping(config)
        if method == "full" and cfg.target_modules:
            raise InvalidArgumentError(
                "target_modules only apply to method 'lora'; drop them for method 'full'"
            )
        src = get_source(self.catalog, source)
        kind = self._data_kind(src, list(columns or []))
        loss = resolve_loss(kind, cfg.embedding_loss)
        ref = self._base_model(base_model)
        if cfg.target_modules:
            self._check_targets(ref, cfg)
        self._check_rows(src, list(columns), kind, cfg)
        job_id = uuid.uuid4().hex[:12]
        model_id = cfg.model_name or f"{source}-{ref.model_id.rsplit('/', 1)[-1]}-{job_id[:6]}"
        if self.catalog.get_model(model_id) is not None:
            raise InvalidArgumentError(
                f"a model named '{model_id}' already exists; pass another model_name"
            )
        stored = cfg.replace(model_name=model_id).to_dict()
        self.catalog.add_job(
            JobRecord(
                job_id,
                "queued",
                source,
                ref.model_id,
                method,
                task,
                list(columns),
                loss,
                stored,
                model_id=None,
            )
        )
        self._enqueue(_Plan(job_id))
        return job_id

    def _data_kind(self, src, columns: list[str]) -> str:
        if len(columns) not in (2, 3) or len(set(columns)) != len(columns):
            raise InvalidArgumentError(
                "columns must name 2 or 3 distinct source columns: [text_a, text_b, score], "
                "[anchor, positive] or [anchor, positive, negative]"
            )
        require_columns(src, columns)
        require_columns(src, columns[:2], text=True)
        if len(columns) == 2:
            return "pairs"
        third = src.column_type(columns[2])
        if _is_numeric(third):
            return "scored_pairs"
        require_columns(src, columns[2:], text=True)
        return "triplets"

    def _base_model(self, base_model: str) -> ModelRef:
        ref = self.models.resolve(base_model)
        if ref.adapter_folder is not None:
            record = self.catalog.get_model(ref.model_id)
            raise InvalidArgumentError(
                f"'{ref.model_id}' is a LoRA fine-tune of '{record.base_model_id if record else '?'}'; "
                "fine-tune its base model, or a model trained with method := 'full'"
            )
        return ref

    def _check_targets(self, ref: ModelRef, cfg: FineTuneConfig) -> None:
        """Match target_modules on the model's structure (no weights loaded)."""
        import torch
        from transformers import AutoConfig, AutoModel

        from .lora import inject_lora

        hf_config = AutoConfig.from_pretrained(str(ref.folder), local_files_only=True)
        with torch.device("meta"):
            skeleton = AutoModel.from_config(hf_config)
        inject_lora(
            skeleton,
            cfg.target_modules,
            cfg.lora_rank,
            cfg.lora_alpha,
            layers_to_transform=cfg.layers_to_transform,
            rank_pattern=cfg.rank_pattern,
        )

    def _check_rows(self, src, columns: list[str], kind: str, cfg: FineTuneConfig) -> None:
        """NULL texts, NULL or NaN scores and too few rows, counted by DuckDB in one pass."""
        rel = relation(src)
        texts = columns if kind != "scored_pairs" else columns[:2]
        checks = [f"count(*) FILTER (WHERE {quote_ident(c)} IS NULL)" for c in texts]
        if kind == "scored_pairs":
            s = quote_ident(columns[2])
            checks.append(
                f"count(*) FILTER (WHERE {s} IS NULL OR isnan({s}::DOUBLE) OR isinf({s}::DOUBLE))"
            )
        total, *bad = self.catalog.query(f"SELECT count(*), {', '.join(checks)} FROM {rel}")[0]
        for column, n in zip(texts, bad[: len(texts)], strict=True):
            if n:
                raise DataError(
                    f"column '{column}' of source '{src.name}' has {n} NULL values; filter them out, "
                    f"e.g. add_source('{src.name}_clean', 'SELECT * FROM ... WHERE {column} IS NOT NULL', "
                    "format := 'query')"
                )
        if kind == "scored_pairs" and bad[-1]:
            raise DataError(
                f"score column '{columns[2]}' of source '{src.name}' has {bad[-1]} NULL, NaN or infinite "
                "values; every pair needs a finite score"
            )
        n_val = int(round(total * cfg.validation_fraction))
        if total - n_val < MIN_TRAIN_ROWS or total < 4:
            raise DataError(
                f"source '{src.name}' has {total} rows, too few to train on; give at least 4 rows "
                f"(with validation_fraction {cfg.validation_fraction}, {MIN_TRAIN_ROWS} left for training)"
            )

    # ---- controlling --------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord:
        job = self.catalog.get_job(job_id)
        if job is None:
            raise NotFoundError(
                f"unknown job '{job_id}'; SELECT job_id, status FROM jammi.jobs lists them"
            )
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> str:
        job = self.get(job_id)
        if job.status in FINAL or job.status == "interrupted":
            return job.status
        done = self._done_event(job_id)
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0)
        # Mirror the job's progress where a front end (the shell's progress bar) can see it.
        with progress.start(f"training {job.model_id or job_id}", PROGRESS_STEPS) as task:
            while not done.wait(
                POLL_S if deadline is None else min(POLL_S, max(deadline - time.monotonic(), 0))
            ):
                if deadline is not None and time.monotonic() >= deadline:
                    break
                task.update(int(self.get(job_id).progress * PROGRESS_STEPS))
        return self.get(job_id).status

    def cancel(self, job_id: str, wait_s: float = 30.0) -> str:
        job = self.get(job_id)
        if job.status in FINAL:
            raise JobStateError(
                f"job '{job_id}' is already {job.status}; only queued or running jobs can be cancelled"
            )
        if job.status == "interrupted":
            self._finish(job_id, "cancelled")
            shutil.rmtree(self._work_dir(job_id), ignore_errors=True)
            return "cancelled"
        self._cancelled.add(job_id)
        self._stop_event(job_id).set()
        if job.status == "queued":  # not started: nothing to wait for
            self._finish(job_id, "cancelled")
            self._done_event(job_id).set()
            return "cancelled"
        self._done_event(job_id).wait(wait_s)
        return self.get(job_id).status

    def resume(self, job_id: str) -> str:
        job = self.get(job_id)
        if job.status != "interrupted":
            raise JobStateError(
                f"job '{job_id}' is {job.status}; only an interrupted job can be resumed"
                + (
                    " (it is still going: wait_job waits for it)"
                    if job.status in ("queued", "running")
                    else ""
                )
            )
        self._done.pop(job_id, None)
        self._stop_flags.pop(job_id, None)
        self.catalog.update_job(job_id, status="queued", error=None, finished_at=None)
        self._enqueue(_Plan(job_id, resume=True))
        return job_id

    def shutdown(self) -> None:
        """Stop workers; a running job keeps its checkpoint and shows as interrupted."""
        self._shutdown = True
        with self._lock:
            flags = list(self._stop_flags.values())
        for flag in flags:
            flag.set()
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout=60)

    # ---- the worker ---------------------------------------------------------------
    def _enqueue(self, plan: _Plan) -> None:
        self._done_event(plan.job_id)
        self._stop_event(plan.job_id)
        self._queue.put(plan)

    def _done_event(self, job_id: str) -> threading.Event:
        with self._lock:
            return self._done.setdefault(job_id, threading.Event())

    def _stop_event(self, job_id: str) -> threading.Event:
        with self._lock:
            return self._stop_flags.setdefault(job_id, threading.Event())

    def _work_dir(self, job_id: str) -> Path:
        return self.home / "jobs" / job_id

    def _mark_interrupted(self) -> None:
        for job in self.catalog.jobs():
            if job.status in ("running", "queued") and job.job_id not in _LIVE:
                self.catalog.update_job(
                    job.job_id,
                    status="interrupted",
                    error="the process running this job stopped; resume_job continues it",
                )

    def _work(self) -> None:
        while True:
            plan = self._queue.get()
            if plan is None:
                return
            stop = self._stop_event(plan.job_id)
            try:
                if plan.job_id in self._cancelled:
                    pass  # cancel_job already marked it
                elif self._shutdown:
                    self._finish(plan.job_id, "interrupted")
                else:
                    self._run(plan, stop)
            finally:
                self._done_event(plan.job_id).set()

    def _finish(self, job_id: str, status: str, **values) -> None:
        self.catalog.update_job(
            job_id, status=status, finished_at=_now() if status in FINAL else None, **values
        )

    def _run(self, plan: _Plan, stop: threading.Event) -> None:
        from .data import make_training_set
        from .train import Cancelled, Progress, run_training

        job = self.get(plan.job_id)
        cfg = FineTuneConfig.from_mapping(job.config)
        work_dir = self._work_dir(job.job_id)
        output_dir = work_dir / "output"
        _LIVE.add(job.job_id)
        self.catalog.update_job(
            job.job_id, status="running", started_at=job.started_at or _now(), error=None
        )
        try:
            src = get_source(self.catalog, job.source)
            kind = self._data_kind(src, job.columns)
            cols = ", ".join(quote_ident(c) for c in job.columns)
            rows = self.catalog.query(f"SELECT {cols} FROM {relation(src)}")
            data = make_training_set(kind, rows)
            base = self._base_model(job.base_model)

            def on_progress(p: Progress) -> None:
                total = max(p.total_steps, 1)
                self.catalog.update_job(
                    job.job_id,
                    progress=min(p.step / total, 1.0),
                    epoch=p.epoch,
                    step=p.step,
                    total_steps=p.total_steps,
                    train_loss=_finite(p.train_loss),
                    val_loss=_finite(p.val_loss),
                    best_val_loss=_finite(p.best_val_loss),
                )
                self.catalog.log_metrics(
                    job.job_id,
                    p.step,
                    p.epoch,
                    [(s, n, v) for s, n, v in p.logs if _finite(v) is not None],
                )

            def should_stop() -> bool:
                return stop.is_set()

            shutil.rmtree(output_dir, ignore_errors=True)
            result = run_training(
                base.folder,
                data,
                cfg,
                job.method,
                work_dir=work_dir,
                output_dir=output_dir,
                on_progress=on_progress,
                should_stop=should_stop,
                resume=plan.resume,
                base_model_id=base.model_id,
            )
            model_id = cfg.model_name or job.job_id
            target = self.home / "models" / model_id
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            output_dir.replace(target)
            metrics = _jsonable(result.metrics)
            self.catalog.add_model(
                ModelRecord(
                    model_id,
                    "fine_tuned",
                    "job",
                    base_model_id=base.model_id,
                    adapter_type=result.adapter_type,
                    task=job.task,
                    dimensions=result.dimensions,
                    artifact_path=str(target),
                    job_id=job.job_id,
                    metrics=metrics,
                )
            )
            self._finish(job.job_id, "succeeded", progress=1.0, model_id=model_id, metrics=metrics)
            shutil.rmtree(work_dir, ignore_errors=True)
        except Cancelled:
            shutil.rmtree(output_dir, ignore_errors=True)
            if job.job_id not in self._cancelled:
                self._finish(
                    job.job_id,
                    "interrupted",
                    error="the database was closed while this job ran; resume_job continues it",
                )
            else:
                self._finish(job.job_id, "cancelled")
                shutil.rmtree(work_dir, ignore_errors=True)
        except JammiError as e:
            self._fail(job.job_id, work_dir, str(e))
        except Exception as e:  # a bug or an environment problem: say what it was
            self._fail(job.job_id, work_dir, f"jammi: training failed: {type(e).__name__}: {e}")
        finally:
            _LIVE.discard(job.job_id)

    def _fail(self, job_id: str, work_dir: Path, message: str) -> None:
        shutil.rmtree(work_dir, ignore_errors=True)
        self._finish(job_id, "failed", error=message)


def _now():
    from datetime import datetime

    return datetime.now()


def _finite(value):
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _jsonable(value):
    return json.loads(
        json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    )
